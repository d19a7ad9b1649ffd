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

# Sampling from the export: seeded, so the same seed gives the same text.
gen() { "$TERN_BIN/tern-generate" --model "$WORK/two/model.h5" --prompt "KING:" --length 80 "$@"; }
a=$(gen --seed 7) && b=$(gen --seed 7) && c=$(gen --seed 8) || fail "tern-generate failed: $(gen --seed 7 2>&1 | tail -2)"
[ "$a" = "$b" ] && [ "${#a}" -ge 85 ] && pass "tern-generate: 80 characters after the prompt, the same for the same seed" || fail "tern-generate output: '$a' vs '$b'"
[ "$a" != "$c" ] && pass "another seed, another text" || fail "seeds 7 and 8 gave the same text"
expect_exit 2 "character '€' is not in the model's vocabulary" "$TERN_BIN/tern-generate" --model "$WORK/two/model.h5" --prompt "KING€"
"$TERN_BIN/tern-data" convert --input data/digits.csv --output "$WORK/digits.h5" >/dev/null
"$TERN_BIN/tern-train" --config configs/digits_mlp.ini --data.path="$WORK/digits.h5" --train.steps=5 \
  --run.dir="$WORK/mlp" --run.progress=off >/dev/null 2>&1 || fail "digits training failed"
expect_exit 2 "is not a language model" "$TERN_BIN/tern-generate" --model "$WORK/mlp/model.h5"
finish
