#!/usr/bin/env bash
# Train the digits model on 2 ranks, export it (at the end of training, and again from the last
# checkpoint with tern-ckpt), serve both versions with tern-serve, and query them with
# tritonclient[http]: the served predictions on the validation split match the trainer's own
# evaluation.
source "$(dirname "$0")/lib.sh"
if [ -z "${TERN_TEST_PYTHON:-}" ]; then
  missing_component "TERN_TEST_PYTHON is not set (launch/test.sh sets it up): no tritonclient"
fi
data="$WORK/digits.h5"
"$TERN_BIN/tern-data" convert --input data/digits.csv --output "$data" >/dev/null
launch 2 "$TERN_BIN/tern-train" --config configs/digits_mlp.ini --data.path="$data" --run.dir="$WORK/run" \
  --checkpoint.uri="$WORK/run/store" --checkpoint.every_steps=500 >"$WORK/train.log" 2>&1 ||
  fail "training failed: $(tail -3 "$WORK/train.log")"
acc=$(done_field "$WORK/run" val_accuracy)
mkdir -p "$WORK/repo/digits/1" "$WORK/repo/digits/2"
cp "$WORK/run/model.h5" "$WORK/repo/digits/1/model.h5" && pass "tern-train exported model.h5"
"$TERN_BIN/tern-ckpt" export "$WORK/run/store" --output "$WORK/repo/digits/2/model.h5" >/dev/null &&
  pass "tern-ckpt exported the last checkpoint" || fail "tern-ckpt export failed"
printf 'version_policy = all\n' >"$WORK/repo/digits/config.ini"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$TERN_BIN/tern-serve" --model-repository="$WORK/repo" --http-port="$port" --server.address=127.0.0.1 >"$WORK/serve.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; rm -rf "$WORK"' EXIT
for _ in $(seq 100); do curl -sf "127.0.0.1:$port/v2/health/ready" >/dev/null && break; sleep 0.1; done
if "$TERN_TEST_PYTHON" tests/e2e/served_predictions.py "127.0.0.1:$port" digits "$data" "$acc" 1 2 >"$WORK/query.log" 2>&1; then
  pass "$(tr '\n' ';' <"$WORK/query.log")"
else
  fail "served predictions: $(cat "$WORK/query.log") $(tail -5 "$WORK/serve.log")"
fi
kill -TERM $server
wait $server && pass "tern-serve drained and exited 0 on SIGTERM" || fail "tern-serve exit status $?"
finish
