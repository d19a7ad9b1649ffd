#!/usr/bin/env bash
# tern-serve end to end, with curl (and tritonclient[http] where the Python test env has it):
# every endpoint, JSON and binary tensors, error codes, batching under concurrent load, the
# traffic split, hot reload (a broken version refused, a good one swapped in), /metrics, and a
# graceful drain on SIGTERM. Kind: local (a folder) | s3 (a moto server on loopback).
source "$(dirname "$0")/lib.sh"
kind=${1:-local}
source "$(dirname "$0")/store_env.sh" "$kind"
make_model() { "$TERN_BIN/tern_serve_make_model" "$@"; }

# The repository is built in a folder and, for s3, uploaded under $STORE.
REPO="$WORK/repo"
mkdir -p "$REPO/mlp/1" "$REPO/mlp/2" "$REPO/slow/1"
make_model "$REPO/mlp/1/model.h5" 4 3 1
make_model "$REPO/mlp/2/model.h5" 4 3 2
make_model "$REPO/slow/1/model.h5" 4 3 7
cat >"$REPO/mlp/config.ini" <<'EOF'
version_policy = all
max_batch_size = 8
max_queue_delay_microseconds = 2000
traffic = 1:80, 2:20
cache = true
EOF
# Requests to "slow" wait half a second in its queue: time to send SIGTERM while they do.
printf 'max_batch_size = 64\nmax_queue_delay_microseconds = 500000\n' >"$REPO/slow/config.ini"
publish() {  # publish PATH-IN-REPO: make a file of $REPO visible to the server
  if [ "$kind" = s3 ]; then
    "$TERN_TEST_PYTHON" - "$REPO" "$STORE" "$1" <<'PY'
import boto3, sys
repo, store, key = sys.argv[1:]
bucket, prefix = store[5:].split("/", 1)
boto3.client("s3").upload_file(f"{repo}/{key}", bucket, f"{prefix}/{key}")
PY
  fi
}
if [ "$kind" = s3 ]; then
  for f in mlp/1/model.h5 mlp/2/model.h5 slow/1/model.h5 mlp/config.ini slow/config.ini; do publish "$f"; done
  URI=$STORE
else
  URI=$REPO
fi

"$TERN_BIN/tern-serve" --model-repository="$URI" --server.address=127.0.0.1 --http-port=0 \
  --server.repository_poll_secs=1 --server.max_body_mb=1 --cache.size_mb=16 >"$WORK/serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER ${S3_SERVER_PID:-} 2>/dev/null || true; rm -rf "$WORK"' EXIT
for _ in $(seq 100); do grep -q "listening on" "$WORK/serve.log" && break; sleep 0.1; done
PORT=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$WORK/serve.log")
URL="http://127.0.0.1:$PORT"
for _ in $(seq 100); do curl -sf "$URL/v2/health/ready" >/dev/null && break; sleep 0.1; done
curl -sf "$URL/v2/health/ready" >/dev/null && pass "ready on port $PORT" || { cat "$WORK/serve.log"; fail "not ready"; finish; }

# status METHOD PATH [curl args...]: the HTTP status; the body goes to $WORK/body.
status() {
  local method=$1 path=$2
  shift 2
  curl -s -o "$WORK/body" -w '%{http_code}' -X "$method" "$URL$path" "$@"
}
# expect_status CODE WORDS METHOD PATH [curl args]: the status, and the body contains WORDS.
expect_status() {
  local want=$1 words=$2
  shift 2
  local got
  got=$(status "$@")
  if [ "$got" != "$want" ]; then
    fail "$1 $2 -> $got, expected $want: $(head -c 300 "$WORK/body")"
  elif [ -n "$words" ] && ! grep -qF -- "$words" "$WORK/body"; then
    fail "$1 $2 -> $got, body lacks '$words': $(head -c 300 "$WORK/body")"
  else
    pass "$1 $2 -> $got"
  fi
}
# check_json PYTHON-EXPR: the expression holds for j, the JSON in $WORK/body.
check_json() {
  python3 -c "import json,sys; j=json.load(open('$WORK/body')); sys.exit(0 if ($1) else 1)" &&
    pass "$1" || fail "$1 does not hold for $(head -c 300 "$WORK/body")"
}
infer_body='{"id":"r1","inputs":[{"name":"input","datatype":"FP32","shape":[2,4],"data":[[1,2,3,4],[0.5,0.25,0,-1]]}]}'

# Metadata, config, readiness.
expect_status 200 '' GET /v2/health/live
expect_status 200 '"binary_tensor_data"' GET /v2
expect_status 200 '"platform":"tern"' GET /v2/models/mlp
check_json 'j["versions"] == ["1","2"] and j["inputs"][0]["shape"] == [-1,4] and j["outputs"][0]["name"] == "logits"'
expect_status 200 '"max_batch_size":8' GET /v2/models/mlp/config
check_json 'j["dynamic_batching"]["max_queue_delay_microseconds"] == 2000 and j["output"][0]["labels"] == ["class0","class1","class2"]'
expect_status 200 '' GET /v2/models/mlp/versions/2/ready
expect_status 200 '"READY"' POST /v2/repository/index

# Inference: JSON, nested data, a named version, classification.
expect_status 200 '"id":"r1"' POST /v2/models/mlp/versions/1/infer -d "$infer_body"
check_json 'j["model_version"] == "1" and j["outputs"][0]["shape"] == [2,3] and len(j["outputs"][0]["data"]) == 6'
cp "$WORK/body" "$WORK/v1.json"
expect_status 200 '"BYTES"' POST /v2/models/mlp/versions/1/infer \
  -d '{"inputs":[{"name":"input","datatype":"FP64","shape":[1,4],"data":[1,2,3,4]}],"outputs":[{"name":"logits","parameters":{"classification":2}}]}'
check_json 'all(s.count(":") == 2 and s.split(":")[2].startswith("class") for s in j["outputs"][0]["data"])'

# The binary tensor extension, both ways, agrees with the JSON answer.
python3 - "$WORK/bin_request" <<'PY'
import json, struct, sys
head = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 4],
                               "parameters": {"binary_data_size": 32}}],
                   "parameters": {"binary_data_output": True}}).encode()
open(sys.argv[1], "wb").write(head + struct.pack("<8f", 1, 2, 3, 4, 0.5, 0.25, 0, -1))
open(sys.argv[1] + ".len", "w").write(str(len(head)))
PY
curl -s -D "$WORK/headers" -o "$WORK/bin_response" -X POST "$URL/v2/models/mlp/versions/1/infer" \
  -H "Inference-Header-Content-Length: $(cat "$WORK/bin_request.len")" \
  -H 'Content-Type: application/octet-stream' --data-binary @"$WORK/bin_request"
python3 - "$WORK/headers" "$WORK/bin_response" "$WORK/v1.json" <<'PY' && pass "binary in, binary out = JSON answer" || fail "binary response wrong"
import json, struct, sys
headers = {l.split(":", 1)[0].lower(): l.split(":", 1)[1].strip()
           for l in open(sys.argv[1]) if ":" in l}
body = open(sys.argv[2], "rb").read()
n = int(headers["inference-header-content-length"])
meta = json.loads(body[:n])
size = meta["outputs"][0]["parameters"]["binary_data_size"]
assert size == 24 and len(body) == n + size, (size, len(body), n)
values = struct.unpack("<6f", body[n:])
expect = json.load(open(sys.argv[3]))["outputs"][0]["data"]
assert all(abs(a - b) < 1e-6 for a, b in zip(values, expect)), (values, expect)
PY

# Errors: status and a message naming the culprit.
expect_status 400 "not valid JSON" POST /v2/models/mlp/infer -d '{"inputs":['
expect_status 400 "input 'input': datatype 'BYTES'" POST /v2/models/mlp/infer \
  -d '{"inputs":[{"name":"input","datatype":"BYTES","shape":[1,4],"data":[1,2,3,4]}]}'
expect_status 400 "unknown input 'pixels'" POST /v2/models/mlp/infer \
  -d '{"inputs":[{"name":"pixels","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}]}'
expect_status 400 "shape [1,5]" POST /v2/models/mlp/infer \
  -d '{"inputs":[{"name":"input","datatype":"FP32","shape":[1,5],"data":[1,2,3,4,5]}]}'
expect_status 400 "max_batch_size 8" POST /v2/models/mlp/infer \
  -d '{"inputs":[{"name":"input","datatype":"FP32","shape":[9,4],"data":[]}]}'
head -c $(($(cat "$WORK/bin_request.len") + 16)) "$WORK/bin_request" >"$WORK/bin_short"
expect_status 400 "input 'input': binary_data_size 32 exceeds the 16 bytes" \
  POST /v2/models/mlp/infer -H "Inference-Header-Content-Length: $(cat "$WORK/bin_request.len")" \
  --data-binary @"$WORK/bin_short"
expect_status 404 "unknown model 'nope'" POST /v2/models/nope/infer -d "$infer_body"
expect_status 404 "no ready version 7" POST /v2/models/mlp/versions/7/infer -d "$infer_body"
expect_status 405 "use POST" GET /v2/models/mlp/infer
head -c 2000000 /dev/zero >"$WORK/big"
expect_status 413 "exceeds the limit" POST /v2/models/mlp/infer --data-binary @"$WORK/big"

# Concurrent load on keep-alive connections: every request answered, and batched.
seq 200 | xargs -P 16 -I{} curl -s -o /dev/null -w '%{http_code}\n' -X POST \
  "$URL/v2/models/mlp/versions/2/infer" \
  -d '{"inputs":[{"name":"input","datatype":"FP32","shape":[1,4],"data":[{},1,2,3]}]}' \
  >"$WORK/codes"
[ "$(grep -c '^200$' "$WORK/codes")" = 200 ] && pass "200 concurrent requests answered" ||
  fail "concurrent requests: $(sort "$WORK/codes" | uniq -c | tr '\n' ' ')"
status GET /v2/models/mlp/versions/2/stats >/dev/null
check_json 'j["model_stats"][0]["execution_count"] < j["model_stats"][0]["inference_count"]'

# Traffic split 80:20 for requests that name no version (cache hits answer from the version
# the split picked, so the split shows either way).
for i in $(seq 300); do
  curl -s -X POST "$URL/v2/models/mlp/infer" -d "$infer_body" | grep -o '"model_version":"[0-9]"'
done | sort | uniq -c >"$WORK/split"
python3 - "$WORK/split" <<'PY' && pass "traffic split: $(tr -s ' \n' ' ' <"$WORK/split")" || fail "traffic split off: $(cat "$WORK/split")"
import re, sys
counts = {m[1]: int(m[0]) for m in re.findall(r'(\d+) "model_version":"(\d)"', open(sys.argv[1]).read())}
share = counts.get("1", 0) / sum(counts.values())
sys.exit(0 if 0.65 < share < 0.93 and set(counts) == {"1", "2"} else 1)
PY
status GET /v2/models/mlp/stats >/dev/null
check_json 'sum(s["inference_stats"]["cache_hit"]["count"] for s in j["model_stats"]) > 250'

# Hot reload: a broken version 3 is refused and the others keep serving; a good one goes live.
mkdir -p "$REPO/mlp/3"
echo "not an HDF5 file" >"$REPO/mlp/3/model.h5"
publish mlp/3/model.h5
for _ in $(seq 50); do grep -q "version 3: refused" "$WORK/serve.log" && break; sleep 0.1; done
grep -q "version 3: refused" "$WORK/serve.log" && pass "broken version 3 refused" || fail "no refusal logged"
expect_status 200 '"versions":["1","2"]' GET /v2/models/mlp
make_model "$REPO/mlp/3/model.h5" 4 3 3
publish mlp/3/model.h5
for _ in $(seq 50); do curl -sf "$URL/v2/models/mlp/versions/3/ready" >/dev/null && break; sleep 0.1; done
expect_status 200 '"model_version":"3"' POST /v2/models/mlp/versions/3/infer -d "$infer_body"

# /metrics: Triton's names, histograms, one TYPE per family.
expect_status 200 'nv_inference_request_success{model="mlp",version="1"}' GET /metrics
python3 - "$WORK/body" <<'PY' && pass "metrics exposition valid" || fail "metrics exposition invalid"
import re, sys
types, seen = {}, set()
for line in open(sys.argv[1]).read().splitlines():
    if line.startswith("# TYPE "):
        name, kind = line.split()[2:4]
        assert name not in types, f"second TYPE for {name}"
        types[name] = kind
    elif not line.startswith("#"):
        m = re.match(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? ([0-9.e+-]+|\+Inf)$', line)
        assert m, line
        name = m[1]
        family = next((f for f in (name, re.sub(r"_(bucket|sum|count)$", "", name)) if f in types), None)
        assert family, f"no TYPE for {name}"
        seen.add(family)
for need in ["nv_inference_request_success", "nv_inference_request_failure", "nv_inference_count",
             "nv_inference_exec_count", "nv_inference_request_duration_us",
             "nv_inference_queue_duration_us", "nv_inference_compute_infer_duration_us",
             "nv_cache_num_hits_per_model", "nv_cache_num_misses_per_model",
             "tern_request_duration_seconds"]:
    assert need in seen, need
assert types["tern_request_duration_seconds"] == "histogram"
PY

# tritonclient[http], where the Python test env has it.
if [ -n "${TERN_TEST_PYTHON:-}" ] && "$TERN_TEST_PYTHON" -c 'import tritonclient.http, numpy' 2>/dev/null; then
  "$TERN_TEST_PYTHON" tests/serve/tritonclient_check.py "127.0.0.1:$PORT" >"$WORK/tc.log" 2>&1 &&
    pass "tritonclient[http]: $(tail -1 "$WORK/tc.log")" || fail "tritonclient: $(cat "$WORK/tc.log")"
else
  echo "skip: tritonclient[http] (no Python test env with it)"
fi

# Graceful drain: requests waiting in a queue when SIGTERM comes are all answered, exit 0.
clients=()
for i in $(seq 8); do
  curl -s -o /dev/null -w '%{http_code}\n' -X POST "$URL/v2/models/slow/infer" -d "$infer_body" >>"$WORK/drain" &
  clients+=($!)
done
sleep 0.2
kill -TERM "$SERVER"
rc=0
wait "$SERVER" || rc=$?
wait "${clients[@]}"
[ "$rc" = 0 ] && pass "exit 0 after SIGTERM" || fail "exit $rc after SIGTERM"
[ "$(grep -c '^200$' "$WORK/drain")" = 8 ] && pass "8 in-flight requests answered during the drain" ||
  fail "drain: $(sort "$WORK/drain" | uniq -c | tr '\n' ' ')"
grep -q "every request answered" "$WORK/serve.log" && pass "drained" || fail "$(tail -3 "$WORK/serve.log")"
curl -s "$URL/v2/health/live" >/dev/null && fail "still accepting after exit" || pass "no longer listening"
finish
