#!/usr/bin/env bash
# A small character-level GPT on tiny Shakespeare (embedding, transformer blocks, token windows):
# the loss falls well below that of a uniform guess (ln 65 = 4.17), and its 2-rank checkpoint,
# resumed on 1 rank, ends where the 2-rank run ends.
source "$(dirname "$0")/lib.sh"
data="$WORK/shakespeare.h5"
"$TERN_BIN/tern-data" text --input data/tinyshakespeare.txt --output "$data" >/dev/null
common=(--config configs/shakespeare_gpt.ini --data.path="$data" --run.progress=off
        --model.layer="embedding vocab=65 dim=32" --model.layer="transformer_block heads=2"
        --model.layer="layernorm" --model.layer="linear out=65"
        --data.block_size=16 --train.batch_size=16 --train.steps=200 --train.eval_every=0
        --train.log_every=20 --checkpoint.every_steps=100 --checkpoint.keep_every=100)

launch 2 "$TERN_BIN/tern-train" "${common[@]}" --run.dir="$WORK/two" \
  --checkpoint.uri="$WORK/ckpt-two" >"$WORK/two.log" 2>&1 || fail "training failed: $(tail -5 "$WORK/two.log")"
loss=$(done_field "$WORK/two" val_loss)
python3 -c "import sys; sys.exit(0 if float('$loss') < 3.0 else 1)" && pass "val_loss $loss < 3.0 after 200 steps" || fail "val_loss $loss >= 3.0"

expect_elastic_resume 100 "${common[@]}"
finish
