#!/usr/bin/env bash
# The digits CNN (configs/digits_cnn.ini: reshape, conv2d, maxpool2d, flatten): at least 0.97
# validation accuracy on 2 ranks; its checkpoint resumed on 1 rank ends where the 2-rank run
# ends; its export predicts offline.
source "$(dirname "$0")/lib.sh"
data="$WORK/digits.h5"
"$TERN_BIN/tern-data" convert --input data/digits.csv --output "$data" >/dev/null
common=(--config configs/digits_cnn.ini --data.path="$data" --run.progress=off
        --checkpoint.every_steps=250 --checkpoint.keep_every=250)

launch 2 "$TERN_BIN/tern-train" "${common[@]}" --run.dir="$WORK/two" \
  --checkpoint.uri="$WORK/ckpt-two" >"$WORK/two.log" 2>&1 || fail "training failed: $(tail -5 "$WORK/two.log")"
acc=$(done_field "$WORK/two" val_accuracy)
python3 -c "import sys; sys.exit(0 if float('$acc') >= 0.97 else 1)" && pass "val_accuracy $acc >= 0.97" || fail "val_accuracy $acc < 0.97"

# Elastic: the 2-rank checkpoint of step 1250, trained on by 1 rank to the end.
expect_elastic_resume 1250 "${common[@]}"

"$TERN_BIN/tern-predict" --model "$WORK/two/model.h5" --input "$data" --output "$WORK/pred.h5" >"$WORK/pred.log" 2>&1 &&
  grep -q "359 rows" "$WORK/pred.log" && pass "the export predicts the 359 validation rows" || fail "tern-predict: $(cat "$WORK/pred.log")"
# The export normalises with batch norm's running statistics, as the trainer's evaluation does:
# the same accuracy (h5py comes with launch/test.sh's Python test environment).
if [ -n "${TERN_TEST_PYTHON:-}" ]; then
  served=$("$TERN_TEST_PYTHON" -c "
import h5py, sys
p, d = h5py.File(sys.argv[1], 'r'), h5py.File(sys.argv[2], 'r')
print((p['classes'][:] == d['val/y'][:]).mean())" "$WORK/pred.h5" "$data")
  python3 -c "import sys; sys.exit(0 if abs(float('$served') - float('$acc')) < 1e-9 else 1)" &&
    pass "exported model's accuracy $served = the trainer's" || fail "exported model's accuracy $served != $acc"
fi
finish
