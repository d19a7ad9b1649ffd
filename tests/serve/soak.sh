#!/usr/bin/env bash
# Soak: tern-serve answers at least TERN_SOAK_REQUESTS (default 1,000,000) requests from wrk on
# loopback, none with an error status or a socket error, and its resident memory and open file
# descriptors at the end are within 5% of what they were after a warm-up: nothing grows per
# request. The model is an MLP the size of the digits one (64 -> 128 -> 10) with the response
# cache off, so every request runs the model. wrk runs in rounds of TERN_SOAK_ROUND_SECONDS (default 8) until the total is reached
# (at most 60 rounds); RSS and descriptors are read from /proc between rounds, once wrk's
# connections are closed.
source "$(dirname "$0")/../e2e/lib.sh"
command -v wrk >/dev/null || missing_component "wrk is not installed (Debian package wrk; launch/common.sh installs it)"
TOTAL=${TERN_SOAK_REQUESTS:-1000000}
WARMUP_SECONDS=${TERN_SOAK_WARMUP_SECONDS:-6}
ROUND_SECONDS=${TERN_SOAK_ROUND_SECONDS:-8}
CONNECTIONS=16 THREADS=2

mkdir -p "$WORK/repo/mlp/1"
"$TERN_BIN/tern_serve_make_model" "$WORK/repo/mlp/1/model.h5" 64 10 1 128 >/dev/null
printf 'cache = false\n' >"$WORK/repo/mlp/config.ini"
serve_repo "$WORK/repo" --cache.size_mb=0 --server.idle_timeout_secs=600
url=$URL
python3 -c 'import json; print(json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [i / 64 for i in range(64)]}]}))' >"$WORK/body.json"
curl -sf "$url/v2/models/mlp/infer" -d @"$WORK/body.json" >/dev/null || fail "the first request failed"

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$SERVER/status"; }
fds() { ls "/proc/$SERVER/fd" | wc -l; }
# settle: until the descriptors of wrk's closed connections are gone (at most 5 s)
settle() {
  local last now
  last=$(fds)
  for _ in $(seq 50); do
    sleep 0.1
    now=$(fds)
    [ "$now" = "$last" ] && [ "$now" -le "$BASE_FDS" ] && break
    last=$now
  done
}
answered=0 errors=0 last=0
round() {  # round NAME SECONDS: one wrk run; adds to answered and errors
  local line
  WRK_BODY=$WORK/body.json wrk -t "$THREADS" -c "$CONNECTIONS" -d "${2}s" \
    -s bench/serve_wrk.lua "$url/v2/models/mlp/infer" >"$WORK/$1.wrk" 2>&1 || { cat "$WORK/$1.wrk"; fail "wrk failed ($1)"; }
  line=$(grep '^WRK ' "$WORK/$1.wrk") || { cat "$WORK/$1.wrk"; fail "no wrk summary ($1)"; return; }
  local requests non2xx connect read write timeout p50_us p90_us p99_us mean_us max_us duration_us
  eval "$(sed 's/^WRK //' <<<"$line")"
  last=$requests
  answered=$((answered + requests - non2xx))
  errors=$((errors + non2xx + connect + read + write + timeout))
  settle
  echo "$1: $requests requests in $((duration_us / 1000)) ms ($((requests * 1000000 / (duration_us + 1))) req/s), p50 ${p50_us} us, p99 ${p99_us} us, non-2xx $non2xx, socket errors $((connect + read + write + timeout)); RSS $(rss_kb) kB, $(fds) fds"
}

BASE_FDS=$(fds)
round warmup "$WARMUP_SECONDS"
warmup=$last
RSS0=$(rss_kb) FDS0=$(fds)
BASE_FDS=$FDS0
answered=0
rounds=0
for i in $(seq 60); do
  [ "$answered" -ge "$TOTAL" ] && break
  round "round$i" "$ROUND_SECONDS"
  rounds=$i
done
RSS1=$(rss_kb) FDS1=$(fds)

[ "$answered" -ge "$TOTAL" ] && pass "$answered requests answered after the warm-up (>= $TOTAL)" || fail "only $answered requests answered (< $TOTAL)"
[ "$errors" = 0 ] && pass "0 errors (error statuses and socket errors) in every round" || fail "$errors errors"
served=$(curl -sf "$url/metrics" | awk '/^nv_inference_request_success\{model="mlp"/ {s += $2} END {print s + 0}')
# wrk leaves uncounted the requests in flight when a round's time is up (at most one per
# connection), which the server still answers.
expected=$((answered + warmup + 1)) slack=$(((rounds + 1) * CONNECTIONS))
[ "$served" -ge "$expected" ] && [ "$served" -le $((expected + slack)) ] &&
  pass "the server counted $served successes: the $expected the clients counted, and $((served - expected)) in flight at the ends of rounds" ||
  fail "the server counted $served successes, the clients $expected (+ at most $slack in flight)"
python3 -c "import sys; sys.exit(0 if abs($RSS1 - $RSS0) <= 0.05 * $RSS0 else 1)" &&
  pass "RSS $RSS1 kB at the end, $RSS0 kB after the warm-up (within 5%)" ||
  fail "RSS grew from $RSS0 kB after the warm-up to $RSS1 kB (more than 5%)"
python3 -c "import sys; sys.exit(0 if abs($FDS1 - $FDS0) <= 0.05 * $FDS0 else 1)" &&
  pass "$FDS1 open file descriptors at the end, $FDS0 after the warm-up (within 5%)" ||
  fail "open file descriptors went from $FDS0 after the warm-up to $FDS1"
kill -TERM $SERVER
wait $SERVER && pass "tern-serve exited 0 on SIGTERM" || fail "tern-serve exit status $?"
finish
