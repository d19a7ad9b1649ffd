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
mkdir -p "$REPO/mlp/1" "$REPO/mlp/2" "$REPO/slow/1" "$REPO/split/1" "$REPO/split/2" "$REPO/live/1"
make_model "$REPO/mlp/1/model.h5" 4 3 1
make_model "$REPO/mlp/2/model.h5" 4 3 2
make_model "$REPO/slow/1/model.h5" 4 3 7
make_model "$REPO/split/1/model.h5" 4 3 11
make_model "$REPO/split/2/model.h5" 4 3 12
make_model "$REPO/live/1/model.h5" 4 3 21
cat >"$REPO/mlp/config.ini" <<'EOF'
version_policy = all
max_batch_size = 8
max_queue_delay_microseconds = 2000
traffic = 1:80, 2:20
cache = true
EOF
# Requests to "slow" wait half a second in its queue: time to send SIGTERM while they do.
printf 'max_batch_size = 64\nmax_queue_delay_microseconds = 500000\n' >"$REPO/slow/config.ini"
# "split": the 90/10 traffic split with no cache, so every request is routed. "live": the newest
# version only, swapped under load.
printf 'version_policy = all\ntraffic = 1:90, 2:10\ncache = false\n' >"$REPO/split/config.ini"
printf 'version_policy = latest:1\ncache = false\n' >"$REPO/live/config.ini"
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
  for f in mlp/1/model.h5 mlp/2/model.h5 slow/1/model.h5 mlp/config.ini slow/config.ini \
    split/1/model.h5 split/2/model.h5 split/config.ini live/1/model.h5 live/config.ini; do
    publish "$f"
  done
  URI=$STORE
else
  URI=$REPO
fi

"$TERN_BIN/tern-serve" --model-repository="$URI" --server.address=127.0.0.1 --http-port=0 \
  --server.repository_poll_secs=1 --server.max_body_mb=1 --cache.size_mb=16 >"$WORK/serve.log" 2>&1 &
SERVER=$!
# LOAD: the client of "hot reload under load", while it runs.
trap 'kill $SERVER ${LOAD:-} ${S3_SERVER_PID:-} 2>/dev/null || true; rm -rf "$WORK"' EXIT
for _ in $(seq 100); do grep -q "listening on" "$WORK/serve.log" && break; sleep 0.1; done
PORT=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$WORK/serve.log")
URL="http://127.0.0.1:$PORT"
for _ in $(seq 100); do curl -sf "$URL/v2/health/ready" >/dev/null && break; sleep 0.1; done
curl -sf "$URL/v2/health/ready" >/dev/null && pass "ready on port $PORT" || { cat "$WORK/serve.log"; fail "not ready"; finish; }
# The serving binary stays light: on the CPU it maps no CUDA, NCCL or MPI library (the CUDA
# backend is a module loaded only for a GPU, and tern-serve links nothing of dist).
heavy=$(awk '$6 ~ /lib(cuda|cudart|cublas|cudnn|nccl|mpi|open-pal|tern_cuda|tern_nccl)[^/]*\.so/ {print $6}' "/proc/$SERVER/maps" | sort -u)
[ -z "$heavy" ] && pass "tern-serve maps no CUDA or MPI library" || fail "tern-serve maps: $heavy"

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
# The rest of the malformed-request suite: not an object, missing fields, values that do not
# fit, binary framing, methods; then the server still answers a good request.
expect_status 400 "must be a JSON object" POST /v2/models/mlp/infer -d '[1,2,3]'
expect_status 400 "not valid JSON" POST /v2/models/mlp/infer -d ''
expect_status 400 "needs 'inputs'" POST /v2/models/mlp/infer -d '{"id":"x"}'
expect_status 400 "needs 'inputs'" POST /v2/models/mlp/infer -d '{"inputs":[]}'
expect_status 400 "every input needs a string 'name'" POST /v2/models/mlp/infer \
  -d '{"inputs":[{"datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}]}'
expect_status 400 "input 'input': needs a string 'datatype'" POST /v2/models/mlp/infer \
  -d '{"inputs":[{"name":"input","shape":[1,4],"data":[1,2,3,4]}]}'
expect_status 400 "input 'input': needs 'shape'" POST /v2/models/mlp/infer \
  -d '{"inputs":[{"name":"input","datatype":"FP32","data":[1,2,3,4]}]}'
expect_status 400 "input 'input': needs 'data'" POST /v2/models/mlp/infer \
  -d '{"inputs":[{"name":"input","datatype":"FP32","shape":[1,4]}]}'
expect_status 400 "input 'input': datatype 'FP8'" POST /v2/models/mlp/infer \
  -d '{"inputs":[{"name":"input","datatype":"FP8","shape":[1,4],"data":[1,2,3,4]}]}'
expect_status 400 "'shape' [1,-4]" POST /v2/models/mlp/infer \
  -d '{"inputs":[{"name":"input","datatype":"FP32","shape":[1,-4],"data":[1,2,3,4]}]}'
expect_status 400 "'data' has 3 values" POST /v2/models/mlp/infer \
  -d '{"inputs":[{"name":"input","datatype":"FP32","shape":[1,4],"data":[1,2,3]}]}'
expect_status 400 "input 'input'" POST /v2/models/mlp/infer \
  -d '{"inputs":[{"name":"input","datatype":"FP32","shape":[1,4],"data":[1,"two",3,4]}]}'
# A number JSON can write but a double cannot hold: a 400 like any other bad value, not a 500.
expect_status 400 "" POST /v2/models/mlp/infer \
  -d '{"inputs":[{"name":"input","datatype":"FP32","shape":[1,4],"data":[1e400,2,3,4]}]}'
expect_status 400 "unknown output 'probs'" POST /v2/models/mlp/infer \
  -d '{"inputs":[{"name":"input","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}],"outputs":[{"name":"probs"}]}'
# Binary framing: a size that does not match the shape, a size without the header, a header
# longer than the body, a header that is not a number, bytes that belong to no input.
python3 - "$WORK/bin_bad" <<'PY'
import json, struct, sys
head = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4],
                               "parameters": {"binary_data_size": 12}}]}).encode()
open(sys.argv[1], "wb").write(head + struct.pack("<3f", 1, 2, 3))
open(sys.argv[1] + ".len", "w").write(str(len(head)))
PY
expect_status 400 "binary_data_size 12 does not match shape [1,4] of FP32 (16 bytes)" \
  POST /v2/models/mlp/infer -H "Inference-Header-Content-Length: $(cat "$WORK/bin_bad.len")" \
  --data-binary @"$WORK/bin_bad"
expect_status 400 "needs the Inference-Header-Content-Length header" \
  POST /v2/models/mlp/infer --data-binary @"$WORK/bin_request"
expect_status 400 "but the body has only" POST /v2/models/mlp/infer \
  -H "Inference-Header-Content-Length: 100000" --data-binary @"$WORK/bin_request"
expect_status 400 "is not a byte count" POST /v2/models/mlp/infer \
  -H "Inference-Header-Content-Length: twelve" --data-binary @"$WORK/bin_request"
{ cat "$WORK/bin_request" && printf 'abcd'; } >"$WORK/bin_extra"
expect_status 400 "belong to no input" POST /v2/models/mlp/infer \
  -H "Inference-Header-Content-Length: $(cat "$WORK/bin_request.len")" --data-binary @"$WORK/bin_extra"
expect_status 404 "unknown model 'nope'" GET /v2/models/nope
expect_status 404 "" POST /v2/models/mlp/versions/99/infer -d "$infer_body"
expect_status 405 "" PUT /v2/models/mlp/infer -d "$infer_body"
expect_status 405 "" DELETE /v2/models/mlp/versions/1/infer
expect_status 405 "" POST /v2/health/ready
# After all of that, the server still serves.
expect_status 200 '"model_version":"1"' POST /v2/models/mlp/versions/1/infer -d "$infer_body"
expect_status 200 '' GET /v2/health/ready

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

# Traffic split 90:10 over 2,000 requests with the cache off: each version's share is within 3
# percentage points of its weight (one keep-alive connection).
start=$(date +%s.%N)
python3 tests/serve/infer_load.py "127.0.0.1:$PORT" split "$WORK/split2000" --count 2000 --max-seconds 120
took=$(python3 -c "import time; print(f'{time.time() - $start:.1f}')")
python3 - "$WORK/split2000" <<'PY' && pass "traffic split 90:10 over 2000 requests in $took s: $(cat "$WORK/split2000.share")" || fail "traffic split 90:10 off: $(cat "$WORK/split2000.share")"
import collections, sys
rows = [l.split() for l in open(sys.argv[1])]
codes = collections.Counter(r[1] for r in rows)
counts = collections.Counter(r[2] for r in rows if r[1] == "200")
share = {v: counts[v] / 2000 for v in ("1", "2")}
open(sys.argv[1] + ".share", "w").write(
    f"answers {dict(codes)}, version 1 {share['1']:.3f}, version 2 {share['2']:.3f}")
sys.exit(0 if len(rows) == 2000 and codes == {"200": 2000} and set(counts) == {"1", "2"}
         and abs(share["1"] - 0.9) <= 0.03 and abs(share["2"] - 0.1) <= 0.03 else 1)
PY
status GET /v2/models/split/stats >/dev/null
check_json 'sum(s["inference_stats"]["cache_hit"]["count"] for s in j["model_stats"]) == 0 and sum(s["inference_stats"]["success"]["count"] for s in j["model_stats"]) == 2000'

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

# Hot reload under load: 4 clients send requests that name no version to "live" (latest:1)
# without pause while version 2 is dropped in, then a corrupt version 3. Not one request fails;
# responses move from version 1 to 2 and never back; version 3 is refused and 2 serves on.
# wait_for SECONDS COMMAND...: polls COMMAND every 0.1 s until it succeeds or time runs out.
wait_for() {
  local tries=$(($1 * 10))
  shift
  for _ in $(seq "$tries"); do "$@" && return 0; sleep 0.1; done
  return 1
}
answered() {
  local n
  n=$(grep -c " 200 $1\$" "$WORK/load" 2>/dev/null || true)
  [ "${n:-0}" -ge "$2" ]
}
lines_over() { [ "$(wc -l <"$WORK/load")" -ge "$1" ]; }
python3 tests/serve/infer_load.py "127.0.0.1:$PORT" live "$WORK/load" --threads 4 \
  --stop-file "$WORK/load.stop" --max-seconds 150 &
LOAD=$!
wait_for 30 answered 1 100 || fail "under load: no 100 answers from version 1: $(sort -k2 "$WORK/load" | uniq -c -f1 | head)"
make_model "$WORK/live2.h5" 4 3 22
mkdir -p "$REPO/live/2"
mv "$WORK/live2.h5" "$REPO/live/2/model.h5"  # a rename: the server never sees half a file
publish live/2/model.h5
wait_for 30 answered 2 1 && pass "under load: version 2 went live" || fail "under load: version 2 never answered"
mark=$(wc -l <"$WORK/load")
wait_for 30 lines_over $((mark + 100)) || fail "under load: the clients stalled after the swap"
mkdir -p "$REPO/live/3"
echo "not an HDF5 file" >"$WORK/live3.h5"
mv "$WORK/live3.h5" "$REPO/live/3/model.h5"
publish live/3/model.h5
wait_for 30 grep -q "model 'live' version 3: refused" "$WORK/serve.log" &&
  pass "under load: corrupt version 3 refused" || fail "under load: no refusal of version 3 logged"
mark=$(wc -l <"$WORK/load")
sleep 1.5  # past the next poll
wait_for 30 lines_over $((mark + 100)) || fail "under load: the clients stalled after the refusal"
touch "$WORK/load.stop"
wait "$LOAD" || fail "under load: the client exited $?"
LOAD=
python3 - "$WORK/load" "$mark" <<'PY' && pass "under load: $(cat "$WORK/load.summary")" || fail "under load: $(cat "$WORK/load.summary")"
import collections, sys
rows = [l.split() for l in open(sys.argv[1])]
mark = int(sys.argv[2])
codes = collections.Counter(r[1] for r in rows)
versions = collections.Counter(r[2] for r in rows if r[1] == "200")
last = {}
backwards = 0
for tid, code, version in rows:
    if code == "200":
        backwards += last.get(tid, "1") > version
        last[tid] = version
after = collections.Counter(r[2] for r in rows[mark:])
open(sys.argv[1] + ".summary", "w").write(
    f"{len(rows)} requests, answers {dict(codes)}, versions {dict(versions)}, "
    f"after the refusal {dict(after)}, back to an older version {backwards}")
sys.exit(0 if codes.keys() == {"200"} and versions.keys() == {"1", "2"} and versions["1"] >= 100
         and after.keys() == {"2"} and backwards == 0 else 1)
PY
expect_status 200 '"versions":["2"]' GET /v2/models/live

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
# promtool (Debian's prometheus package) parses and lints the same exposition, taken after
# traffic that includes failed requests.
python3 - "$WORK/body" <<'PY' && pass "metrics count failed requests" || fail "no failed request in /metrics"
import re, sys
text = open(sys.argv[1]).read()
sys.exit(0 if any(float(v) > 0 for v in re.findall(r'^nv_inference_request_failure\{[^}]*\} (\S+)$', text, re.M)) else 1)
PY
# Exit 1 is a parse error; exit 3 lists lint problems. The only ones allowed are promtool's
# naming conventions on Triton's nv_* names, which tern-serve keeps so Triton dashboards work
# (nv_inference_count, nv_inference_request_duration_us, ... are counters without "_total").
if command -v promtool >/dev/null 2>&1; then
  rc=0
  promtool check metrics <"$WORK/body" >"$WORK/promtool.log" 2>&1 || rc=$?
  if [ "$rc" = 0 ]; then
    pass "promtool check metrics: clean"
  elif [ "$rc" = 3 ] && python3 - "$WORK/promtool.log" <<'PY'; then
import sys
naming = ('counter metrics should have "_total" suffix',
          "metric names should not contain abbreviated units",
          'non-histogram and non-summary metrics should not have "_count" suffix')
lines = [l.strip() for l in open(sys.argv[1]) if l.strip()]
bad = [l for l in lines if not (l.startswith("nv_") and l.split(" ", 1)[1] in naming)]
if bad:
    print("\n".join(bad))
sys.exit(1 if bad or not lines else 0)
PY
    pass "promtool check metrics: parses; only naming lints on Triton's nv_* names ($(wc -l <"$WORK/promtool.log"))"
  else
    fail "promtool check metrics exited $rc: $(head -30 "$WORK/promtool.log")"
  fi
else
  fail "promtool is missing (Debian package prometheus; launch/common.sh installs it)"
fi

# tritonclient[http], where the Python test env has it.
if [ -n "${TERN_TEST_PYTHON:-}" ] && "$TERN_TEST_PYTHON" -c 'import tritonclient.http, numpy' 2>/dev/null; then
  "$TERN_TEST_PYTHON" tests/serve/tritonclient_check.py "127.0.0.1:$PORT" >"$WORK/tc.log" 2>&1 &&
    pass "tritonclient[http]: $(tail -1 "$WORK/tc.log")" || fail "tritonclient: $(cat "$WORK/tc.log")"
else
  if strict_components; then
    fail "tritonclient[http] is missing (no Python test env with it; launch/common.sh installs it)"
  else
    echo "skip: tritonclient[http] (no Python test env with it)"
  fi
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
