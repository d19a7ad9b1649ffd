#!/usr/bin/env bash
# Serving benchmark (not a test: it prints figures and ratios against the goals, and exits 0
# unless something failed to run or answered wrongly).
#
#   bash bench/serve_bench.sh            (from the repository root)
#
# tern-serve against a peer serving the same digits export: FastAPI + uvicorn (--workers 2, one
# process per core, uvloop + httptools) with a numpy forward pass of the same weights
# (bench/serve_peer.py), both speaking KServe v2 JSON. Their outputs are compared on a few rows
# before any timing. The load generator is wrk (Debian package wrk) with bench/serve_wrk.lua:
# keep-alive connections POST the same one-row JSON body ([1, 64]) for BENCH_DURATION seconds
# at concurrency 1, 16 and 64; latency percentiles are wrk's, and every run must have no non-2xx
# answer and no socket error. Then:
#   - server overhead at concurrency 1 with a trivial model (4 features, 3 classes), judged on
#     the client's side: wrk's p50 / p99 of the whole request on loopback; beside it tern-serve's
#     own nv_inference_request_duration_us / nv_inference_request_success over the run (from the
#     request read to the answer handed over, so without socket I/O);
#   - dynamic batching on the digits model at concurrency 64: max_batch_size=1 against
#     max_batch_size=64 with max_queue_delay_microseconds=BENCH_BATCH_DELAY_US.
# The response cache is off everywhere (cache = false, cache.size_mb=0): every request computes.
# Nothing is pinned: wrk and the servers share the machine's cores.
#
# Needs: build/bin (tern-serve, tern-train, tern-data, tern_serve_make_model), wrk, python3; the
# peer's venv .venv-bench-serve (fastapi, uvicorn[standard], numpy, h5py, orjson) is made when
# missing. Settings (environment): BENCH_DURATION (10), BENCH_WRK_THREADS (1), BENCH_BATCH_DELAY_US
# (200), DIGITS_MODEL (an existing digits model.h5 instead of training one), TERN_BIN (build/bin).
# Work files (wrk outputs, logs, results.txt) go to bench/out/serve/.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${TERN_BIN:-build/bin}
VENV=${BENCH_VENV:-.venv-bench-serve}
DUR=${BENCH_DURATION:-10}
THREADS=${BENCH_WRK_THREADS:-1}
DELAY=${BENCH_BATCH_DELAY_US:-200}
WORK=bench/out/serve
TOOL="python3 bench/serve_tool.py"

for b in tern-serve tern-train tern-data tern_serve_make_model; do
  [ -x "$BIN/$b" ] || { echo "missing $BIN/$b: build the project first" >&2; exit 2; }
done
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 2; }
if ! "$VENV/bin/python" -c 'import fastapi, uvicorn, numpy, h5py, orjson' 2>/dev/null; then
  echo "== creating $VENV (fastapi, uvicorn[standard], numpy, h5py, orjson)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q fastapi 'uvicorn[standard]' numpy h5py orjson
fi
rm -rf "$WORK"
mkdir -p "$WORK"
RESULTS=$WORK/results.txt
: >"$RESULTS"

echo "== tern serving benchmark, $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), nproc $(nproc)," \
  "$(free -g | awk '/^Mem:/ {print $2}') GiB; $(uname -sr)"
echo "NOTE: wrk and both servers share these $(nproc) cores (nothing pinned); every figure" \
  "includes the load generator's CPU competing with the server's."
echo "peer: python $("$VENV/bin/python" -c 'import sys; print(sys.version.split()[0])')," \
  "$("$VENV/bin/python" -c 'import fastapi, uvicorn, numpy, h5py, orjson
print(f"fastapi {fastapi.__version__}, uvicorn {uvicorn.__version__} (uvloop, httptools), numpy {numpy.__version__}, h5py {h5py.__version__}, orjson {orjson.__version__}")')"
echo "load: $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2), -t $THREADS (1 at concurrency 1)," \
  "${DUR} s per run, keep-alive, one-row JSON body"

# The digits model: trained here unless DIGITS_MODEL names one.
MODEL=${DIGITS_MODEL:-}
if [ -z "$MODEL" ]; then
  [ -f data/digits.h5 ] || "$BIN/tern-data" convert --input data/digits.csv --output data/digits.h5 >"$WORK/convert.log"
  "$BIN/tern-train" --config configs/digits_mlp.ini --run.dir="$WORK/train" --run.progress=off >"$WORK/train.log" 2>&1
  MODEL=$WORK/train/model.h5
fi
echo "digits model: $MODEL (64 features, MLP 64-128-128-10)"

# One repository, four models; the cache is off for all of them.
R=$WORK/repo
mkdir -p "$R/digits/1" "$R/digits_b1/1" "$R/digits_batch/1" "$R/trivial/1"
for m in digits digits_b1 digits_batch; do cp "$MODEL" "$R/$m/1/model.h5"; done
"$BIN/tern_serve_make_model" "$R/trivial/1/model.h5" 4 3 1 >/dev/null
printf 'max_batch_size = 64\nmax_queue_delay_microseconds = 0\ncache = false\n' >"$R/digits/config.ini"
printf 'max_batch_size = 1\nmax_queue_delay_microseconds = 0\ncache = false\n' >"$R/digits_b1/config.ini"
printf 'max_batch_size = 64\nmax_queue_delay_microseconds = %s\ncache = false\n' "$DELAY" >"$R/digits_batch/config.ini"
printf 'max_batch_size = 64\nmax_queue_delay_microseconds = 0\ncache = false\n' >"$R/trivial/config.ini"

TERN_PID= PEER_PID=
cleanup() {
  [ -n "$TERN_PID" ] && kill "$TERN_PID" 2>/dev/null || true
  [ -n "$PEER_PID" ] && kill "$PEER_PID" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT

"$BIN/tern-serve" --model-repository="$R" --server.address=127.0.0.1 --http-port=0 \
  --server.repository_poll_secs=0 --cache.size_mb=0 >"$WORK/tern-serve.log" 2>&1 &
TERN_PID=$!
PEER_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
PEER_MODEL=$MODEL PEER_MODEL_NAME=digits OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 \
  "$VENV/bin/uvicorn" --app-dir bench serve_peer:app --host 127.0.0.1 --port "$PEER_PORT" \
  --workers 2 --no-access-log --log-level warning >"$WORK/peer.log" 2>&1 &
PEER_PID=$!

for _ in $(seq 100); do grep -q "listening on" "$WORK/tern-serve.log" && break; sleep 0.1; done
TERN_PORT=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$WORK/tern-serve.log")
[ -n "$TERN_PORT" ] || { cat "$WORK/tern-serve.log"; echo "tern-serve did not start" >&2; exit 1; }
TERN=http://127.0.0.1:$TERN_PORT
PEER=http://127.0.0.1:$PEER_PORT
for url in "$TERN" "$PEER"; do
  for _ in $(seq 300); do curl -sf "$url/v2/health/ready" >/dev/null && break; sleep 0.1; done
  curl -sf "$url/v2/health/ready" >/dev/null || { cat "$WORK/tern-serve.log" "$WORK/peer.log"; echo "$url not ready" >&2; exit 1; }
done
echo "tern-serve: $(sed -n 's/.*\(tern-serve .*\) listening on.*/\1/p' "$WORK/tern-serve.log"), defaults" \
  "workers=2 per model, io_threads=2, blas_threads=1; response cache off"
echo "servers: tern-serve $TERN (pid $TERN_PID), fastapi $PEER (pid $PEER_PID, 2 workers)"

# Same outputs before any timing.
$TOOL check "$TERN" "$PEER" digits data/digits.csv 5

$TOOL body data/digits.csv 0 "$WORK/body_digits.json"
$TOOL body-const 4 "$WORK/body_trivial.json"

# run_wrk NAME URL BODY CONCURRENCY PID [MODEL]: one wrk run; appends a result line.
# PID's CPU (with its children) and wrk's own CPU are taken over the run; with MODEL (tern-serve),
# the change of its counters of MODEL too.
run_wrk() {
  local name=$1 url=$2 body=$3 c=$4 pid=$5 model=${6:-} t=$THREADS extra=""
  [ "$c" -lt "$t" ] && t=$c
  [ -n "$model" ] && $TOOL metrics "$TERN" "$model" >"$WORK/$name.m0"
  local cpu0 cpu1
  cpu0=$($TOOL cpu "$pid")
  WRK_BODY=$body /usr/bin/time -f '%U %S' -o "$WORK/$name.time" \
    wrk -t "$t" -c "$c" -d "${DUR}s" --latency -s bench/serve_wrk.lua "$url" >"$WORK/$name.wrk" 2>&1 ||
    { cat "$WORK/$name.wrk"; echo "wrk failed ($name)" >&2; exit 1; }
  cpu1=$($TOOL cpu "$pid")
  if [ -n "$model" ]; then
    $TOOL metrics "$TERN" "$model" >"$WORK/$name.m1"
    extra=$($TOOL mdelta "$WORK/$name.m0" "$WORK/$name.m1")
  fi
  echo "run=$name c=$c $($TOOL wrkline "$WORK/$name.wrk")" \
    "cpu_server=$(python3 -c "print(f'{$cpu1 - $cpu0:.2f}')")" \
    "cpu_wrk=$(awk '{printf "%.2f", $1 + $2}' "$WORK/$name.time") $extra ${EXTRA_KV:-}" >>"$RESULTS"
  local line
  line=$(tail -1 "$RESULTS")
  python3 - "$line" <<'PY'
import sys
kv = dict(x.split("=", 1) for x in sys.argv[1].split())
n, s = int(kv["requests"]), int(kv["duration_us"]) / 1e6
txt = (f"  {kv['run']:14s} c={kv['c']:>2}: {n / s:8.0f} req/s  p50 {int(kv['p50_us']) / 1000:6.2f} ms"
       f"  p99 {int(kv['p99_us']) / 1000:6.2f} ms  ({n} requests, non-2xx {kv['non2xx']}, socket errors "
       f"{sum(int(kv[k]) for k in ('connect', 'read', 'write', 'timeout'))}; CPU per request: server "
       f"{float(kv['cpu_server']) / n * 1e6:.0f} us, wrk {float(kv['cpu_wrk']) / n * 1e6:.0f} us")
if "success" in kv and float(kv["success"]):
    ok = float(kv["success"])
    txt += (f"; in-server request {float(kv['dur_us']) / ok:.0f} us = queue "
            f"{float(kv['queue_us']) / ok:.0f} + compute {float(kv['compute_us']) / ok:.0f} us"
            f" + rest; mean batch {float(kv['rows']) / max(1.0, float(kv['execs'])):.1f} rows")
print(txt + ")")
PY
}

echo "== warm-up (2 s each, not reported)"
DUR_SAVE=$DUR
DUR=2
run_wrk warm_tern "$TERN/v2/models/digits/infer" "$WORK/body_digits.json" 16 "$TERN_PID" digits
run_wrk warm_peer "$PEER/v2/models/digits/infer" "$WORK/body_digits.json" 16 "$PEER_PID"
DUR=$DUR_SAVE

echo "== digits model, tern-serve (max_batch_size=64, max_queue_delay_microseconds=0) vs fastapi"
for c in 1 16 64; do
  run_wrk "tern_c$c" "$TERN/v2/models/digits/infer" "$WORK/body_digits.json" "$c" "$TERN_PID" digits
  run_wrk "peer_c$c" "$PEER/v2/models/digits/infer" "$WORK/body_digits.json" "$c" "$PEER_PID"
done

echo "== server overhead: trivial model (4 features, 3 classes), concurrency 1"
run_wrk triv_c1 "$TERN/v2/models/trivial/infer" "$WORK/body_trivial.json" 1 "$TERN_PID" trivial

echo "== dynamic batching: digits, concurrency 64"
run_wrk batch_off_c64 "$TERN/v2/models/digits_b1/infer" "$WORK/body_digits.json" 64 "$TERN_PID" digits_b1
EXTRA_KV="delay=$DELAY" run_wrk batch_on_c64 "$TERN/v2/models/digits_batch/infer" \
  "$WORK/body_digits.json" 64 "$TERN_PID" digits_batch

echo
$TOOL report "$RESULTS"
grep -q 'non2xx=[1-9]\|connect=[1-9]\|read=[1-9]\|write=[1-9]\|timeout=[1-9]\|missing=1' "$RESULTS" &&
  { echo "some requests failed (see $WORK/*.wrk)" >&2; exit 1; }
exit 0
