#!/usr/bin/env bash
# The param_checksum of the digits MLP (2 ranks, its whole config), the digits CNN (1 rank, 300
# steps) and the character GPT (1 rank, 200 steps) on the CPU: the figures a change of structure
# must leave identical. Usage: bench/param_checksums.sh [BIN_DIR] (default build/bin).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-build/bin}
WORK=$(mktemp -d /tmp/tern-checksums.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
"$BIN/tern-data" convert --input data/digits.csv --output "$WORK/digits.h5" >/dev/null
"$BIN/tern-data" text --input data/tinyshakespeare.txt --output "$WORK/shakespeare.h5" >/dev/null
checksum() {
  python3 -c 'import json,sys
print([r for r in map(json.loads, open(sys.argv[1])) if r.get("event") == "done"][-1]["param_checksum"])' "$1/metrics.jsonl"
}
run() {  # run NAME NP ARGS...
  local name=$1 np=$2
  shift 2
  local cmd=("$BIN/tern-train" "$@" --run.dir="$WORK/$name" --run.progress=off)
  [ "$np" -gt 1 ] && cmd=(mpirun -np "$np" --oversubscribe "${cmd[@]}")
  "${cmd[@]}" >"$WORK/$name.log" 2>&1 || { tail -5 "$WORK/$name.log"; exit 1; }
  echo "param_checksum $name: $(checksum "$WORK/$name")"
}
run digits 2 --config configs/digits_mlp.ini --data.path="$WORK/digits.h5"
run cnn 1 --config configs/digits_cnn.ini --data.path="$WORK/digits.h5" --train.steps=300
run gpt 1 --config configs/shakespeare_gpt.ini --data.path="$WORK/shakespeare.h5" --train.steps=200
