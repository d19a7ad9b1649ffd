#!/usr/bin/env bash
# Installs what is missing, builds, and runs the main job: the digits model on 2 ranks.
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/common.sh

install_packages
build_preset release

echo "== converting data/digits.csv -> data/digits.h5"
build/bin/tern-data convert --input data/digits.csv --output data/digits.h5

run_dir=runs/digits
rm -rf "$run_dir"
echo "== training the digits MLP on 2 ranks (run folder $run_dir, checkpoints in $run_dir/store)"
mpirun -np 2 --oversubscribe build/bin/tern-train --config configs/digits_mlp.ini --run.dir="$run_dir" \
  --checkpoint.uri="$run_dir/store" --checkpoint.every_steps=250
echo "== checkpoints"
build/bin/tern-ckpt list "$run_dir/store"
build/bin/tern-ckpt verify "$run_dir/store"

python3 - "$run_dir/metrics.jsonl" <<'PY'
import json, sys
done = [json.loads(l) for l in open(sys.argv[1])][-1]
print(f"== done: {done['step']} steps on {done['world_size']} ranks in {done['wall_seconds']:.1f} s, "
      f"val_accuracy {done['val_accuracy']:.4f}, param_checksum {done['param_checksum']}")
PY
echo "== run log: $run_dir/metrics.jsonl, effective config: $run_dir/config.ini, export: $run_dir/model.h5"

echo "== serving the export with tern-serve (KServe v2 / Triton HTTP protocol)"
mkdir -p "$run_dir/repo/digits/1"
cp "$run_dir/model.h5" "$run_dir/repo/digits/1/model.h5"
port=${TERN_PORT:-8000}
build/bin/tern-serve --model-repository="$run_dir/repo" --http-port="$port" --server.address=127.0.0.1 \
  >"$run_dir/serve.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "127.0.0.1:$port/v2/health/ready" >/dev/null && break; sleep 0.1; done
row=$(head -n 1 data/digits.csv)
request="{\"inputs\": [{\"name\": \"input\", \"datatype\": \"FP32\", \"shape\": [1, 64], \"data\": [${row%,*}]}]}"
echo "== querying: curl -X POST 127.0.0.1:$port/v2/models/digits/infer (the first row of data/digits.csv)"
curl -sf -X POST "127.0.0.1:$port/v2/models/digits/infer" -d "$request" | python3 -c "
import json, sys
r = json.load(sys.stdin)
logits = r['outputs'][0]['data']
print(f'== model {r[\"model_name\"]} version {r[\"model_version\"]} predicts {logits.index(max(logits))}; the label is ${row##*,}')"
kill -TERM $server
wait $server
echo "== tern-serve stopped (log: $run_dir/serve.log)"
