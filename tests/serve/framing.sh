#!/usr/bin/env bash
# tern-serve's HTTP framing and connection handling, against the tern-serve in TERN_BIN:
#   framing.sh fuzz          tests/serve/http_fuzz.py for TERN_FUZZ_SECONDS (default 60;
#                            TERN_FUZZ_SEED replays a seed it printed): malformed and pipelined
#                            requests, odd framing, early closes; run on the AddressSanitizer
#                            build, so a memory error ends the server (and the test) at once, and
#                            leaks show at its exit
#   framing.sh connections   tests/serve/connections.py: 1,000 idle or half-sent connections do
#                            not keep a real request from an answer within 100 ms, and are closed
#                            after server.idle_timeout_secs (3 s here)
# Either way tern-serve must then drain and exit 0 on SIGTERM, its log free of sanitizer reports.
source "$(dirname "$0")/../e2e/lib.sh"
mode=${1:?usage: framing.sh fuzz|connections}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$WORK/repo/m/1"
"$TERN_BIN/tern_serve_make_model" "$WORK/repo/m/1/model.h5" 4 3 1 >/dev/null
serve_repo "$WORK/repo" --server.idle_timeout_secs=3
port=${URL##*:}

case "$mode" in
  fuzz)
    (cd "$WORK" && python3 "$here/http_fuzz.py" 127.0.0.1 "$port" "${TERN_FUZZ_SECONDS:-60}" ${TERN_FUZZ_SEED:-}) ||
      { [ -f "$WORK/http_fuzz_failure.bin" ] && od -c "$WORK/http_fuzz_failure.bin" | head -20; fail "http_fuzz"; } ;;
  connections)
    python3 "$here/connections.py" 127.0.0.1 "$port" 3 1000 || fail "connections" ;;
  *) echo "mode must be fuzz or connections" >&2; exit 2 ;;
esac

kill -0 $SERVER 2>/dev/null && pass "tern-serve is still running" || fail "tern-serve died: $(tail -20 "$WORK/serve.log")"
kill -TERM $SERVER
wait $SERVER && pass "tern-serve drained and exited 0 on SIGTERM" || fail "tern-serve exit status $?: $(tail -20 "$WORK/serve.log")"
reports="AddressSanitizer|LeakSanitizer|runtime error:|ThreadSanitizer"
if grep -qE "$reports" "$WORK/serve.log"; then
  fail "sanitizer report: $(grep -m1 -A15 -E "$reports" "$WORK/serve.log")"
else
  pass "no sanitizer report in tern-serve's log"
fi
finish
