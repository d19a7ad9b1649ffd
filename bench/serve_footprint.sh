#!/usr/bin/env bash
# The serving footprint on the CPU: tern-serve serving the digits model (trained for 200 steps
# and exported by tern-train of the same build), measured as a user would see it:
#   - time from exec to the first 200 from /v2/health/ready (polled every 2 ms);
#   - resident memory (VmRSS) after the first inference request;
#   - the shared libraries it maps (CUDA and MPI ones named), and the size of the binary and of
#     the non-system libraries it maps (those outside /lib, /usr/lib and /lib64), in MB.
# Usage: bench/serve_footprint.sh [BIN_DIR]   (default build/bin; it needs tern-train, tern-data
# and tern-serve). Prints one "footprint:" line per figure, then a verdict against the goals
# (RSS < 50 MB, ready < 100 ms, no CUDA or MPI library mapped).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-build/bin}
WORK=$(mktemp -d /tmp/tern-footprint.XXXXXX)
SERVER=
trap '[ -n "$SERVER" ] && kill $SERVER 2>/dev/null; rm -rf "$WORK"' EXIT

"$BIN/tern-data" convert --input data/digits.csv --output "$WORK/digits.h5" >/dev/null
"$BIN/tern-train" --config configs/digits_mlp.ini --data.path="$WORK/digits.h5" --train.steps=200 \
  --run.dir="$WORK/run" --run.progress=off >"$WORK/train.log" 2>&1 || { tail -5 "$WORK/train.log"; exit 1; }
mkdir -p "$WORK/repo/digits/1"
cp "$WORK/run/model.h5" "$WORK/repo/digits/1/model.h5"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
start=$(date +%s%N)
"$BIN/tern-serve" --model-repository="$WORK/repo" --server.address=127.0.0.1 --http-port="$port" \
  --server.repository_poll_secs=0 >"$WORK/serve.log" 2>&1 &
SERVER=$!
ready=
for _ in $(seq 5000); do
  if curl -sf -o /dev/null "http://127.0.0.1:$port/v2/health/ready"; then
    ready=$(( ($(date +%s%N) - start) / 1000000 ))
    break
  fi
  sleep 0.002
done
[ -n "$ready" ] || { cat "$WORK/serve.log"; echo "tern-serve never became ready"; exit 1; }
row=$(python3 -c 'print(",".join(["0.5"] * 64))')
curl -sf -o /dev/null -H 'Content-Type: application/json' \
  -d "{\"inputs\":[{\"name\":\"input\",\"datatype\":\"FP32\",\"shape\":[1,64],\"data\":[$row]}]}" \
  "http://127.0.0.1:$port/v2/models/digits/infer"
rss_kb=$(awk '/^VmRSS/ {print $2}' "/proc/$SERVER/status")
libs=$(awk '$6 ~ /\.so/ {print $6}' "/proc/$SERVER/maps" | sort -u)
gpu_mpi=$(grep -E 'lib(cuda|cudart|cublas|cublasLt|cudnn|nccl|nvrtc|mpi|open-pal|open-rte|pmix|tern_cuda|tern_nccl)[^/]*\.so' <<<"$libs" || true)
own=$(grep -vE '^/(usr/)?lib(64)?/' <<<"$libs" || true)
mb() { python3 -c "import sys; print(f'{sum(int(x) for x in sys.argv[1:]) / 1e6:.1f}')" "$@"; }
bin_bytes=$(stat -L -c %s "$BIN/tern-serve")
own_bytes=0
[ -n "$own" ] && own_bytes=$(stat -L -c %s $own | paste -sd+ | bc)
all_bytes=$(stat -L -c %s $libs | paste -sd+ | bc)

echo "footprint: ready after ${ready} ms"
echo "footprint: resident after the first request $(python3 -c "print(f'{$rss_kb / 1024:.1f}')") MB"
echo "footprint: binary $(mb "$bin_bytes") MB; non-system libraries $(mb "$own_bytes") MB ($(wc -w <<<"$own") files); all mapped libraries $(mb "$all_bytes") MB ($(wc -l <<<"$libs") files)"
echo "footprint: CUDA/MPI libraries mapped: ${gpu_mpi:-none}" | tr '\n' ' '
echo
verdict=met
[ "$rss_kb" -lt $((50 * 1024)) ] || verdict="NOT met"
[ "$ready" -lt 100 ] || verdict="NOT met"
[ -z "$gpu_mpi" ] || verdict="NOT met"
echo "footprint goal (RSS < 50 MB, ready < 100 ms, no CUDA/MPI library): $verdict"
