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
echo "== run log: $run_dir/metrics.jsonl, effective config: $run_dir/config.ini"
