#!/usr/bin/env bash
# What a serving feature costs: digits at concurrency 64 through one tern-serve, to a copy of the
# model with the feature on and to a plain copy, alternated over ROUNDS rounds so both see the
# same machine. Prints the throughput ratio on / off and the p50 / p99 latencies of each.
#   monitoring: input range checks "flag", drift over a 1000-row window (the request log off),
#               against range = off, drift.enabled = false (goal >= 0.95)
#   release:    a canary split (traffic = 1:90, 2:10) plus a 100% shadow to version 3, against
#               one version with no split and no shadow (no goal: the shadow runs the model a
#               second time on the same cores, so the ratio holds the challenger's own work)
#
#   bench/serve_overhead.sh monitoring|release     (BENCH_DURATION=10 s per run, BENCH_ROUNDS=3)
#
# Needs build/bin (tern-serve, tern-train, tern-data) and wrk (Debian). wrk and the server share
# the machine's cores. Work files go to bench/out/serve_KIND/.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${TERN_BIN:-build/bin}
DUR=${BENCH_DURATION:-10}
ROUNDS=${BENCH_ROUNDS:-3}
KIND=${1:-monitoring}
case $KIND in monitoring) GOAL="goal >= 0.95" ;; release) GOAL="the challenger's work included" ;; *) echo "usage: $0 monitoring|release" >&2; exit 2 ;; esac
WORK=bench/out/serve_$KIND
TOOL="python3 bench/serve_tool.py"
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 2; }
rm -rf "$WORK" && mkdir -p "$WORK"

echo "== tern-serve $KIND overhead, $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), nproc $(nproc); wrk -t 1 -c 64, ${DUR} s per run, $ROUNDS rounds"
[ -f data/digits.h5 ] || "$BIN/tern-data" convert --input data/digits.csv --output data/digits.h5 >/dev/null
"$BIN/tern-train" --config configs/digits_mlp.ini --run.dir="$WORK/train" --run.progress=off >"$WORK/train.log" 2>&1
R=$WORK/repo
for v in 1 2 3; do mkdir -p "$R/watched/$v" && cp "$WORK/train/model.h5" "$R/watched/$v/"; done
mkdir -p "$R/plain/1" && cp "$WORK/train/model.h5" "$R/plain/1/"
if [ "$KIND" = monitoring ]; then
  rm -r "$R/watched/2" "$R/watched/3"
  printf 'cache = false\n[input_checks]\nrange = flag\n[drift]\nwindow_rows = 1000\n' >"$R/watched/config.ini"
  printf 'cache = false\n[input_checks]\nrange = off\n[drift]\nenabled = false\n' >"$R/plain/config.ini"
else  # the same monitoring settings on both sides: only routing differs
  printf 'cache = false\nversion_policy = all\ntraffic = 1:90, 2:10\n[shadow]\nversion = 3\n' >"$R/watched/config.ini"
  printf 'cache = false\n' >"$R/plain/config.ini"
fi
"$BIN/tern-serve" --model-repository="$R" --server.address=127.0.0.1 --http-port=0 \
  --server.repository_poll_secs=0 --cache.size_mb=0 >"$WORK/tern-serve.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true; wait 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q "listening on" "$WORK/tern-serve.log" && break; sleep 0.1; done
URL=http://127.0.0.1:$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$WORK/tern-serve.log")
for _ in $(seq 100); do curl -sf "$URL/v2/health/ready" >/dev/null && break; sleep 0.1; done
$TOOL body data/digits.csv 0 "$WORK/body.json"

run() {  # run NAME MODEL SECONDS: appends "NAME requests=.. p50_us=.. p99_us=.." to results
  WRK_BODY=$WORK/body.json wrk -t 1 -c 64 -d "${3}s" --latency -s bench/serve_wrk.lua \
    "$URL/v2/models/$2/infer" >"$WORK/$1.wrk" 2>&1 || { cat "$WORK/$1.wrk"; exit 1; }
  echo "$1 $($TOOL wrkline "$WORK/$1.wrk")" >>"$WORK/results.txt"
}
run warm_watched watched 2 && run warm_plain plain 2 && : >"$WORK/results.txt"
for r in $(seq "$ROUNDS"); do
  run "plain_$r" plain "$DUR"
  run "watched_$r" watched "$DUR"
done
if [ "$KIND" = monitoring ]; then
  curl -s "$URL/metrics" | grep -E '^tern_drift_window_rows\{model="watched"' || { echo "no drift window" >&2; exit 1; }
else
  curl -s "$URL/metrics" | grep -E '^tern_shadow_(requests|dropped)_total\{model="watched"' || { echo "no shadow traffic" >&2; exit 1; }
fi
python3 - "$WORK/results.txt" "$KIND" "$GOAL" <<'PY'
import re, sys
runs = {}
for line in open(sys.argv[1]):
    name, rest = line.split(" ", 1)
    kv = dict(re.findall(r"(\w+)=([\d.]+)", rest))
    bad = sum(int(kv.get(k, 0)) for k in ("non2xx", "connect", "read", "write", "timeout"))
    if bad: sys.exit(f"{name}: {bad} failed requests")
    runs.setdefault(name.split("_")[0], []).append(
        (int(kv["requests"]) / (int(kv["duration_us"]) / 1e6), int(kv["p50_us"]), int(kv["p99_us"])))
for kind, rs in runs.items():
    rps = sum(r[0] for r in rs) / len(rs)
    print(f"{kind:8s} {rps:9.0f} req/s  p50 {sum(r[1] for r in rs) / len(rs):6.0f} us  "
          f"p99 {sum(r[2] for r in rs) / len(rs):6.0f} us  (runs: {', '.join(f'{r[0]:.0f}' for r in rs)})")
ratio = (sum(r[0] for r in runs["watched"]) / len(runs["watched"])) / (sum(r[0] for r in runs["plain"]) / len(runs["plain"]))
print(f"RATIO {sys.argv[2]} on / off throughput: {ratio:.3f} ({sys.argv[3]})")
p99 = lambda k: sum(r[2] for r in runs[k]) / len(runs[k])
print(f"p99 change seen by clients: {p99('watched') / p99('plain'):.3f}x")
PY
