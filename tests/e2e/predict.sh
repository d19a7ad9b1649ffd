#!/usr/bin/env bash
# Offline prediction: train the digits model, predict its validation split with tern-predict alone
# and on 2 ranks. Both outputs are identical, their classes score the trainer's own val_accuracy,
# the attributes record the model and input, and a wrong-width input is refused (exit 2) with a
# message naming the dataset. The outputs are read with h5py.
source "$(dirname "$0")/lib.sh"
if [ -z "${TERN_TEST_PYTHON:-}" ]; then
  missing_component "TERN_TEST_PYTHON is not set (launch/test.sh sets it up): no h5py"
fi
data="$WORK/d.h5"
model="$WORK/run/model.h5"
"$TERN_BIN/tern-data" convert --input data/digits.csv --output "$data" >/dev/null
"$TERN_BIN/tern-train" --config configs/digits_mlp.ini --data.path="$data" --run.dir="$WORK/run" \
  --run.progress=off >"$WORK/train.log" 2>&1 || fail "training failed: $(tail -3 "$WORK/train.log")"
[ -f "$model" ] && pass "tern-train exported $model" || fail "no model.h5 in the run dir"
acc=$(done_field "$WORK/run" val_accuracy)

# 359 validation rows in batches of 100: 4 alone, 2 per rank on 2 ranks. One BLAS thread per rank,
# so that only the number of ranks differs.
"$TERN_BIN/tern-predict" --model "$model" --input "$data" --output "$WORK/p1.h5" --batch-size 100 \
  --threads 1 >"$WORK/p1.log" 2>&1 && pass "1 rank: $(cat "$WORK/p1.log")" || fail "1 rank: $(cat "$WORK/p1.log")"
launch 2 "$TERN_BIN/tern-predict" --model "$model" --input "$data" --output "$WORK/p2.h5" \
  --batch-size 100 --threads 1 >"$WORK/p2.log" 2>&1 && pass "2 ranks: $(cat "$WORK/p2.log")" ||
  fail "2 ranks: $(cat "$WORK/p2.log")"
ls "$WORK"/p1.h5.tmp.* "$WORK"/p2.h5.tmp.* >/dev/null 2>&1 && fail "temp files left behind"

if "$TERN_TEST_PYTHON" - "$data" "$model" "$acc" "$WORK/p1.h5" "$WORK/p2.h5" >"$WORK/check.log" 2>&1 <<'EOF'; then
import json
import sys

import h5py
import numpy as np

data, model, expected, p1, p2 = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4], sys.argv[5]
text = lambda v: v.decode() if isinstance(v, bytes) else str(v)
with h5py.File(data, "r") as f:
    y = f["/val/y"][...]
with h5py.File(model, "r") as f:
    lineage = json.loads(text(f.attrs["lineage"]))
out = {}
for p in (p1, p2):
    with h5py.File(p, "r") as f:
        out[p] = f["/predictions"][...], f["/classes"][...], {k: text(v) for k, v in f.attrs.items()}
pred, classes, attrs = out[p1]
assert pred.dtype == np.float32 and pred.shape == (len(y), 10), (pred.dtype, pred.shape)
assert classes.dtype == np.int32 and np.array_equal(classes, pred.argmax(1))
for i, name in enumerate(("predictions", "classes")):
    assert np.array_equal(out[p2][i], out[p1][i]), f"/{name} differ between 1 and 2 ranks"
accuracy = float((classes == y).mean())
print(f"{len(y)} rows, same on 1 and 2 ranks; accuracy {accuracy:.6f}, trainer's {expected:.6f}")
assert abs(accuracy - expected) < 1e-9, "predictions differ from the trainer's evaluation"
assert attrs["input_dataset"] == "/val/x", attrs
assert attrs["input"].endswith("/d.h5") and attrs["model"].endswith("/run/model.h5"), attrs
assert attrs["created_by"].startswith("tern-predict "), attrs
assert json.loads(attrs["model_lineage"]) == lineage
print("attributes: " + ", ".join(sorted(attrs)))
EOF
  pass "$(tr '\n' ';' <"$WORK/check.log")"
else
  fail "output check: $(cat "$WORK/check.log")"
fi

# A file with /x of the wrong width: /x is picked over /val/x, and refused.
"$TERN_TEST_PYTHON" -c 'import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "w") as f:
    f["/x"] = np.zeros((5, 32), np.float32)
    f["/val/x"] = np.zeros((5, 64), np.float32)' "$WORK/narrow.h5"
expect_exit 2 "dataset /x has 32 features per row, the model '$model' expects 64" \
  "$TERN_BIN/tern-predict" --model "$model" --input "$WORK/narrow.h5" --output "$WORK/n.h5"
expect_exit 2 "dataset /x has 32 features per row" \
  launch 2 "$TERN_BIN/tern-predict" --model "$model" --input "$WORK/narrow.h5" --output "$WORK/n.h5"
expect_exit 2 "dataset /train/y is not floating point" \
  "$TERN_BIN/tern-predict" --model "$model" --input "$data" --dataset /train/y --output "$WORK/n.h5"
expect_exit 2 "dataset /nope does not exist" \
  "$TERN_BIN/tern-predict" --model "$model" --input "$data" --dataset /nope --output "$WORK/n.h5"
expect_exit 2 "--input is required" "$TERN_BIN/tern-predict" --model "$model" --output "$WORK/n.h5"
[ -e "$WORK/n.h5" ] && fail "a failed run wrote $WORK/n.h5"
finish
