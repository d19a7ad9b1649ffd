#!/usr/bin/env bash
# The digits demo on 2 ranks: at least 0.95 validation accuracy in under a minute, a complete
# run log, and the same param_checksum from two runs with the same number of ranks.
source "$(dirname "$0")/lib.sh"
data="$WORK/digits.h5"
"$TERN_BIN/tern-data" convert --input data/digits.csv --output "$data" >/dev/null
run() { launch 2 "$TERN_BIN/tern-train" --config configs/digits_mlp.ini --data.path="$data" --run.dir="$1"; }

start=$(date +%s)
run "$WORK/a" >"$WORK/a.log" 2>&1 || fail "training failed: $(tail -5 "$WORK/a.log")"
secs=$(( $(date +%s) - start ))
acc=$(done_field "$WORK/a" val_accuracy)
python3 -c "import sys; sys.exit(0 if float('$acc') >= 0.95 else 1)" && pass "val_accuracy $acc >= 0.95" || fail "val_accuracy $acc < 0.95"
[ "$secs" -lt 60 ] && pass "finished in ${secs}s" || fail "took ${secs}s, over a minute"
[ -f "$WORK/a/config.ini" ] && grep -q "^layer = linear out=128" "$WORK/a/config.ini" && pass "effective config written" || fail "no effective config.ini"
python3 - "$WORK/a/metrics.jsonl" <<'PY' && pass "metrics.jsonl fields" || fail "metrics.jsonl lacks fields"
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
steps = [r for r in recs if "event" not in r]
need = {"step", "train_loss", "lr", "samples_per_sec", "data_wait_ms", "forward_ms", "backward_ms",
        "allreduce_wait_ms", "optimizer_ms", "checkpoint_stall_ms"}
assert steps and all(need <= r.keys() for r in steps), need - steps[0].keys()
assert any(r.get("event") == "eval" and "val_accuracy" in r for r in recs)
assert recs[-1]["event"] == "done" and recs[-1]["world_size"] == 2 and len(recs[-1]["param_checksum"]) == 16
PY

run "$WORK/b" >"$WORK/b.log" 2>&1 || fail "second training failed"
a=$(done_field "$WORK/a" param_checksum)
b=$(done_field "$WORK/b" param_checksum)
[ "$a" = "$b" ] && pass "same W, same param_checksum $a" || fail "param_checksum differs: $a vs $b"
finish
