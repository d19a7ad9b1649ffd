# Sets STORE for a test: a local folder, or an S3 prefix on a moto server started on loopback
# (stopped when the test exits). Source it after lib.sh with the kind: local | s3.
case "$1" in
  local) STORE="$WORK/store" ;;
  s3)
    if [ -z "${TERN_TEST_PYTHON:-}" ]; then
      missing_component "TERN_TEST_PYTHON is not set (launch/test.sh sets it up): no S3 server to test against"
    fi
    "$TERN_TEST_PYTHON" tests/store/s3_server.py --port-file "$WORK/s3.port" >"$WORK/s3.log" 2>&1 &
    S3_SERVER_PID=$!
    trap 'kill $S3_SERVER_PID 2>/dev/null || true; rm -rf "$WORK"' EXIT
    for _ in $(seq 100); do [ -s "$WORK/s3.port" ] && break; sleep 0.1; done
    export AWS_ENDPOINT_URL="http://127.0.0.1:$(cat "$WORK/s3.port")" AWS_ACCESS_KEY_ID=testing \
      AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1
    "$TERN_TEST_PYTHON" -c "import boto3; boto3.client('s3').create_bucket(Bucket='tern-e2e')"
    STORE="s3://tern-e2e/$(basename "$WORK")"
    ;;
  *) echo "store kind must be local or s3" >&2; exit 2 ;;
esac
