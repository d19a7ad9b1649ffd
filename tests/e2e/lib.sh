# Shared helpers for the end-to-end tests. Source it; run from the repository root.
set -euo pipefail
TERN_BIN=${TERN_BIN:-build/bin}
source "$(dirname "${BASH_SOURCE[0]}")/../require.sh"
# Open MPI refuses to run as root unless told; CI and containers run as root.
if [ "$(id -u)" = 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
WORK=$(mktemp -d /tmp/tern-e2e.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
failures=0

fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
pass() { echo "ok: $*"; }

# expect_exit CODE PATTERN CMD...: CMD exits with CODE and its output contains PATTERN.
expect_exit() {
  local want=$1 pattern=$2
  shift 2
  local out rc=0
  out=$("$@" 2>&1) || rc=$?
  if [ "$rc" != "$want" ]; then
    fail "$* exited $rc, expected $want; output: $out"
  elif ! grep -qF -- "$pattern" <<<"$out"; then
    fail "$* output lacks '$pattern'; output: $out"
  else
    pass "$* -> $rc, '$pattern'"
  fi
}

# The JSON record of metrics.jsonl with "event": "done", one field of it.
done_field() {
  python3 -c 'import json,sys
recs=[json.loads(l) for l in open(sys.argv[1])]
print([r for r in recs if r.get("event")=="done"][-1][sys.argv[2]])' "$1/metrics.jsonl" "$2"
}

launch() {  # launch NP CMD...: NP ranks under mpirun, or one process when built without MPI
  local np=$1
  shift
  if [ "${TERN_HAVE_MPI:-ON}" = "ON" ] || [ "${TERN_HAVE_MPI:-}" = "TRUE" ] || [ "${TERN_HAVE_MPI:-}" = "1" ]; then
    mpirun -np "$np" --oversubscribe "$@"
  else
    "$@"
  fi
}

# expect_elastic_resume STEP TRAIN_ARGS...: the checkpoint of STEP in $WORK/ckpt-two (written by
# 2 ranks), resumed on 1 rank and trained to the end, must end within 1e-5 (relative) of the
# 2-rank run's last checkpoint.
expect_elastic_resume() {
  local step=$1
  shift
  "$TERN_BIN/tern-train" "$@" --run.dir="$WORK/one" --checkpoint.uri="$WORK/ckpt-one" \
    --checkpoint.resume="$WORK/ckpt-two/ckpt/step-$(printf %08d "$step")" >"$WORK/one.log" 2>&1 ||
    fail "resume on 1 rank failed: $(tail -5 "$WORK/one.log")"
  grep -q "step $step, written by 2 rank(s)" "$WORK/one.log" && pass "resumed on 1 rank at step $step" ||
    fail "no resume from step $step: $(grep -i resum "$WORK/one.log" | head -3)"
  local dist
  dist=$("$TERN_BIN/tern-ckpt" compare "$WORK/ckpt-one" "$WORK/ckpt-two" | sed 's/.*relative distance \([^,]*\),.*/\1/')
  python3 -c "import sys; sys.exit(0 if float('$dist') < 1e-5 else 1)" &&
    pass "2 -> 1 ranks: relative distance $dist < 1e-5" || fail "2 -> 1 ranks: relative distance $dist"
}

# serve_repo REPO ARGS...: tern-serve on 127.0.0.1 at a free port, the repository loaded once (no
# polling), log in $WORK/serve.log; sets SERVER (its pid) and URL once it answers ready, and stops
# it when the test exits. One that is not ready within 30 s fails the test.
serve_repo() {
  local repo=$1 port
  shift
  "$TERN_BIN/tern-serve" --model-repository="$repo" --server.address=127.0.0.1 --http-port=0 \
    --server.repository_poll_secs=0 "$@" >"$WORK/serve.log" 2>&1 &
  SERVER=$!
  trap 'kill $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true; rm -rf "$WORK"' EXIT
  for _ in $(seq 300); do
    port=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$WORK/serve.log")
    URL=http://127.0.0.1:$port
    [ -n "$port" ] && curl -sf "$URL/v2/health/ready" >/dev/null && return 0
    sleep 0.1
  done
  cat "$WORK/serve.log" >&2
  fail "tern-serve did not become ready"
  finish
}

finish() {
  if [ "$failures" -gt 0 ]; then
    echo "$failures check(s) failed" >&2
    exit 1
  fi
  echo "all checks passed"
}
