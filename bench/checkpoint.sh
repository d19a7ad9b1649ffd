#!/usr/bin/env bash
# Checkpoint benchmark (not a test): the stall of an asynchronous save against one memcpy of the
# same state, the upload throughput of a 1 GB object to a loopback S3 server (moto) against
# boto3's managed upload of the same bytes in the same run, and the resume time.
#   bash bench/checkpoint.sh        from the repository root, after a build
# Environment: BENCH_STATE_MB (default 256), BENCH_UPLOAD_MB (default 1024).
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/common.sh
setup_python_test_env >/dev/null
TERN_BIN=${TERN_BIN:-build/bin}
STATE_MB=${BENCH_STATE_MB:-256}
UPLOAD_MB=${BENCH_UPLOAD_MB:-1024}
work=$(mktemp -d /tmp/tern-bench-ckpt.XXXXXX)
"$TERN_TEST_PYTHON" tests/store/s3_server.py --port-file "$work/port" >"$work/s3.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do [ -s "$work/port" ] && break; sleep 0.1; done
export AWS_ENDPOINT_URL="http://127.0.0.1:$(cat "$work/port")" AWS_ACCESS_KEY_ID=bench \
  AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1
"$TERN_TEST_PYTHON" tests/store/s3_client.py mb tern-bench >/dev/null

echo "# $(date -u +%Y-%m-%d) $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores"
for target in local s3; do
  uri=$work/local
  [ "$target" = s3 ] && uri=s3://tern-bench/ckpt
  "$TERN_BIN/tern_bench_checkpoint" --uri "$uri" --state-mb "$STATE_MB" --upload-mb "$UPLOAD_MB" >"$work/$target.json"
  python3 - "$work/$target.json" "$target" <<'PY'
import json, sys
r = {x["bench"]: x for x in map(json.loads, open(sys.argv[1]))}
s, u, z = r["stall"], r["upload"], r["resume"]
print(f"{sys.argv[2]:5s} stall per async checkpoint of {s['state_mb']:.0f} MB: {s['stall_ms']:.1f} ms, "
      f"memcpy {s['memcpy_ms']:.1f} ms, ratio {s['ratio']:.2f}x (goal <= 2x)")
print(f"{sys.argv[2]:5s} upload {u['mb']:.0f} MB: {u['seconds']:.2f} s ({u['mb_per_s']:.0f} MB/s); "
      f"resume (find, verify, load) {z['mb']:.0f} MB: {z['seconds']:.2f} s ({z['mb_per_s']:.0f} MB/s)")
PY
done

# boto3's managed upload (upload_file, default TransferConfig) of the same number of bytes.
head -c $((UPLOAD_MB << 20)) /dev/urandom >"$work/object.bin"
boto=$("$TERN_TEST_PYTHON" - "$work/object.bin" <<'PY'
import sys, time, boto3, os
c = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
t0 = time.perf_counter()
c.upload_file(sys.argv[1], "tern-bench", "boto3/object.bin")
print(time.perf_counter() - t0)
PY
)
python3 - "$work/s3.json" "$boto" "$UPLOAD_MB" <<'PY'
import json, sys
tern = [x for x in map(json.loads, open(sys.argv[1])) if x["bench"] == "upload"][0]["seconds"]
boto, mb = float(sys.argv[2]), float(sys.argv[3])
print(f"s3    upload {mb:.0f} MB: tern {mb/tern:.0f} MB/s, boto3 upload_file {mb/boto:.0f} MB/s, "
      f"ratio {boto/tern:.2f}x (goal >= 1.0x)")
PY
