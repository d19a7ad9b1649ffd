#!/usr/bin/env bash
# A small character-level GPT on tiny Shakespeare (embedding, transformer blocks, token windows):
# its validation loss falls below what any model of the previous character alone reaches (the
# bigram cross-entropy of the validation text, about 2.48 nats; a uniform guess is ln 65 = 4.17,
# the unigram 3.35), so it must use the context; and its 2-rank checkpoint,
# resumed on 1 rank, ends where the 2-rank run ends; the export samples with tern-generate and is
# served by tern-serve (next-token logits over HTTP).
source "$(dirname "$0")/lib.sh"
data="$WORK/shakespeare.h5"
"$TERN_BIN/tern-data" text --input data/tinyshakespeare.txt --output "$data" >/dev/null
common=(--config configs/shakespeare_gpt.ini --data.path="$data" --run.progress=off
        --model.layer="embedding vocab=65 dim=32" --model.layer="transformer_block heads=2"
        --model.layer="layernorm" --model.layer="linear out=65"
        --data.block_size=16 --train.batch_size=16 --train.steps=2000 --train.eval_every=0
        --train.log_every=100 --checkpoint.every_steps=100 --checkpoint.keep_every=100)

launch 2 "$TERN_BIN/tern-train" "${common[@]}" --run.dir="$WORK/two" \
  --checkpoint.uri="$WORK/ckpt-two" >"$WORK/two.log" 2>&1 || fail "training failed: $(tail -5 "$WORK/two.log")"
loss=$(done_field "$WORK/two" val_loss)
# The bar: the cross-entropy on the validation split (the text's last 10%, as tern-data text cuts
# it) of the best model of the previous character alone, a bigram model fitted on the training
# split, less a margin of 0.15 nats. A model that ignores the context (unigram) scores ~3.35.
bigram=$(python3 - data/tinyshakespeare.txt <<'PY'
import collections, math, sys
t = open(sys.argv[1], encoding="utf-8").read()
val = len(t) // 10
train, held = t[:len(t) - val], t[len(t) - val:]
V = len(set(t))
pairs, firsts = collections.Counter(zip(train, train[1:])), collections.Counter(train[:-1])
print(f"{-sum(math.log((pairs[a, b] + 0.1) / (firsts[a] + 0.1 * V)) for a, b in zip(held, held[1:])) / (len(held) - 1):.4f}")
PY
)
python3 -c "import sys; sys.exit(0 if float('$loss') < $bigram - 0.15 else 1)" &&
  pass "val_loss $loss < bigram cross-entropy $bigram - 0.15 after 2000 steps: the model uses its context" ||
  fail "val_loss $loss is not below the bigram cross-entropy $bigram - 0.15"

expect_elastic_resume 1900 "${common[@]}"

# Sampling from the export: seeded, so the same seed gives the same text.
gen() { "$TERN_BIN/tern-generate" --model "$WORK/two/model.h5" --prompt "KING:" --length 80 "$@"; }
a=$(gen --seed 7) && b=$(gen --seed 7) && c=$(gen --seed 8) || fail "tern-generate failed: $(gen --seed 7 2>&1 | tail -2)"
[ "$a" = "$b" ] && [ "${#a}" -ge 85 ] && pass "tern-generate: 80 characters after the prompt, the same for the same seed" || fail "tern-generate output: '$a' vs '$b'"
[ "$a" != "$c" ] && pass "another seed, another text" || fail "seeds 7 and 8 gave the same text"
expect_exit 2 "character '€' is not in the model's vocabulary" "$TERN_BIN/tern-generate" --model "$WORK/two/model.h5" --prompt "KING€"
expect_exit 2 "--device gpu: expected cpu, cuda or auto" "$TERN_BIN/tern-generate" --model "$WORK/two/model.h5" --device gpu

# Serving the export: tern-serve takes INT32 token ids and answers the logits of the next token,
# whose arg-max is the character tern-generate picks with --top-k 1.
mkdir -p "$WORK/repo/gpt/1" && cp "$WORK/two/model.h5" "$WORK/repo/gpt/1/model.h5"
serve_repo "$WORK/repo"
curl -sf "$URL/v2/models/gpt" >"$WORK/meta.json" && curl -sf "$URL/v2/models/gpt/config" >"$WORK/config.json" ||
  fail "tern-serve did not serve the export: $(tail -5 "$WORK/serve.log")"
python3 - "$WORK/meta.json" "$WORK/config.json" <<'PY' && pass "metadata: INT32 [-1,-1] in, FP32 [-1,65] out, max_sequence_length 16" || fail "metadata: $(cat "$WORK/meta.json")"
import json, sys
meta, config = (json.load(open(f)) for f in sys.argv[1:])
assert meta["inputs"][0]["datatype"] == "INT32" and meta["inputs"][0]["shape"] == [-1, -1], meta
assert meta["outputs"][0]["datatype"] == "FP32" and meta["outputs"][0]["shape"] == [-1, 65], meta
assert config["parameters"]["max_sequence_length"]["string_value"] == "16", config
PY
# request.json: "KING:" as token ids (the vocabulary is the config's output labels).
python3 - "$WORK/config.json" >"$WORK/request.json" <<'PY'
import json, sys
labels = json.load(open(sys.argv[1]))["output"][0]["labels"]
ids = [labels.index(c) for c in "KING:"]
print(json.dumps({"inputs": [{"name": "input", "datatype": "INT32", "shape": [1, len(ids)], "data": [ids]}]}))
PY
code=$(curl -s -o "$WORK/infer.json" -w '%{http_code}' "$URL/v2/models/gpt/infer" -d @"$WORK/request.json")
"$TERN_BIN/tern-generate" --model "$WORK/two/model.h5" --prompt "KING:" --length 1 --top-k 1 >"$WORK/next.txt"
python3 - "$WORK/infer.json" "$WORK/config.json" "$WORK/next.txt" <<'PY' && pass "infer 'KING:' -> [1, 65] finite logits; arg-max = tern-generate's next character" || fail "infer ($code): $(head -c 300 "$WORK/infer.json")"
import json, math, sys
out = json.load(open(sys.argv[1]))["outputs"][0]
labels = json.load(open(sys.argv[2]))["output"][0]["labels"]
generated = open(sys.argv[3], encoding="utf-8").read()[len("KING:")]
z = out["data"]
assert out["shape"] == [1, 65] and len(z) == 65 and all(v is not None and math.isfinite(v) for v in z), out
assert labels[max(range(65), key=lambda i: z[i])] == generated, (generated, z)
PY
code=$(curl -s -o "$WORK/bad.json" -w '%{http_code}' "$URL/v2/models/gpt/infer" \
  -d '{"inputs":[{"name":"input","datatype":"INT32","shape":[1,2],"data":[1,65]}]}')
[ "$code" = 400 ] && grep -qF "token id 65 at row 0, position 1 is outside the vocabulary [0, 65)" "$WORK/bad.json" &&
  pass "token id 65 -> 400 naming it" || fail "token id 65 -> $code: $(cat "$WORK/bad.json")"
code=$(curl -s -o "$WORK/bad.json" -w '%{http_code}' "$URL/v2/models/gpt/infer" \
  -d '{"inputs":[{"name":"input","datatype":"INT64","shape":[1,17],"data":[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]}]}')
[ "$code" = 400 ] && grep -qF "17 tokens per row, more than the model's context of 16" "$WORK/bad.json" &&
  pass "17 tokens -> 400 naming the context" || fail "17 tokens -> $code: $(cat "$WORK/bad.json")"
kill -TERM $SERVER
wait $SERVER && pass "tern-serve exited 0 on SIGTERM" || fail "tern-serve exit status $?"
"$TERN_BIN/tern-data" convert --input data/digits.csv --output "$WORK/digits.h5" >/dev/null
"$TERN_BIN/tern-train" --config configs/digits_mlp.ini --data.path="$WORK/digits.h5" --train.steps=5 \
  --run.dir="$WORK/mlp" --run.progress=off >/dev/null 2>&1 || fail "digits training failed"
expect_exit 2 "is not a language model" "$TERN_BIN/tern-generate" --model "$WORK/mlp/model.h5"
finish
