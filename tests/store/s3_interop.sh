#!/usr/bin/env bash
# The S3 store against a real S3 API: moto on loopback (tests/store/s3_server.py --strict), with
# boto3 as the independent client. Twice: first as moto takes any keys, then with moto checking
# every request's signature against an IAM user's key. Each time: the store suite
# (tern_store_tests), then tern writes what boto3 reads and boto3 writes what tern reads, byte for
# byte. Last, an outage on the same port in the middle of an upload.
# Exit 77 (skipped) without TERN_TEST_PYTHON, a Python with moto[server] and boto3; a failure
# under CI=true (tests/require.sh).
set -euo pipefail
source "$(dirname "$0")/../require.sh"
if [ -z "${TERN_TEST_PYTHON:-}" ]; then
  missing_component "TERN_TEST_PYTHON is unset; launch/test.sh sets it (setup_python_test_env in" \
    "launch/common.sh makes a venv with moto[server] and boto3)"
fi
BIN=${TERN_BIN:-build/bin}
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d /tmp/tern-s3.XXXXXX)
server=""
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
pass() { echo "ok: $*"; }
boto() { "$TERN_TEST_PYTHON" "$HERE/s3_client.py" "$@"; }
tool() { "$BIN/tern_store_tool" "$@"; }

"$TERN_TEST_PYTHON" "$HERE/s3_server.py" --strict --port-file "$WORK/port" >"$WORK/server.log" 2>&1 &
server=$!
for _ in $(seq 300); do
  [ -s "$WORK/port" ] && break
  kill -0 "$server" 2>/dev/null || { cat "$WORK/server.log"; exit 1; }
  sleep 0.1
done
[ -s "$WORK/port" ] || { echo "the S3 server did not start"; cat "$WORK/server.log"; exit 1; }
unset AWS_ENDPOINT_URL_S3 AWS_SESSION_TOKEN AWS_DEFAULT_REGION AWS_PROFILE TERN_S3_PATH_STYLE \
  AWS_S3_FORCE_PATH_STYLE
export AWS_ENDPOINT_URL="http://127.0.0.1:$(cat "$WORK/port")" AWS_REGION=us-east-1
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
echo "== S3 server (moto) at $AWS_ENDPOINT_URL"
bucket=tern-test
boto mb "$bucket"
# Passing the strict checks proves something only if they are on.
boto strict-probe "$bucket" && pass "strict mode rejects a bad payload hash and an unsigned header" ||
  fail "strict mode is off"

head -c 12345 /dev/urandom >"$WORK/small.bin"
printf 'zero\0bytes\0\0inside\n' >"$WORK/zeros.bin"
head -c $((12 * 1024 * 1024 + 7)) /dev/urandom >"$WORK/big.bin"

suite() {  # suite NAME: the store suite under s3://tern-test/suite-NAME
  local log="$WORK/suite-$1.log"
  if TERN_TEST_S3_URI="s3://$bucket/suite-$1" TERN_TEST_S3_FAULTS=1 \
    "$BIN/tern_store_tests" --gtest_filter='*/s3:S3Faults.*' >"$log" 2>&1; then
    grep -E '^\[ multipart \]' "$log" || true
    local executed
    executed=$(gtest_executed "$log")
    if [ "$executed" -gt 0 ] && ! grep -q '^\[  SKIPPED \]' "$log"; then
      pass "store suite ($1): $executed tests executed, $(grep -E '^\[  PASSED  \]' "$log")"
    else
      cat "$log"
      fail "store suite ($1): $executed tests executed (a filter that matches nothing, or skips)"
    fi
  else
    cat "$log"
    fail "store suite ($1)"
  fi
}

interop() {  # interop NAME: both directions under s3://tern-test/interop-NAME
  local uri="s3://$bucket/interop-$1" p="interop-$1" f
  tool put "$uri" small.bin "$WORK/small.bin"
  tool put "$uri" "dir/with space+plus=&.bin" "$WORK/zeros.bin"
  tool --part-size $((5 * 1024 * 1024)) --parallel 3 put "$uri" big.bin "$WORK/big.bin"
  boto ls "$bucket" "$p/" >"$WORK/ls"
  printf '%s\n' "$p/big.bin $(stat -c %s "$WORK/big.bin")" \
    "$p/dir/with space+plus=&.bin $(stat -c %s "$WORK/zeros.bin")" \
    "$p/small.bin 12345" | diff - "$WORK/ls" && pass "boto3 lists what tern wrote ($1)" ||
    fail "boto3's listing of what tern wrote ($1)"
  local -A file_of=([small.bin]=small.bin ["dir/with space+plus=&.bin"]=zeros.bin [big.bin]=big.bin)
  for f in "${!file_of[@]}"; do
    boto get "$bucket" "$p/$f" "$WORK/back"
    cmp -s "$WORK/back" "$WORK/${file_of[$f]}" && pass "boto3 reads $f as tern wrote it ($1)" ||
      fail "boto3 read $f differently ($1)"
  done
  [ "$(boto parts "$bucket" "$p/big.bin")" = 3 ] && pass "tern sent big.bin in 3 parts ($1)" ||
    fail "big.bin was not a 3-part upload ($1)"

  boto put "$bucket" "$p/from-boto/big.bin" "$WORK/big.bin"
  boto put "$bucket" "$p/from-boto/zeros.bin" "$WORK/zeros.bin"
  [ "$(boto parts "$bucket" "$p/from-boto/big.bin")" -gt 1 ] || fail "boto3 did not use parts ($1)"
  for f in big.bin zeros.bin; do
    tool get "$uri" "from-boto/$f" "$WORK/back"
    cmp -s "$WORK/back" "$WORK/$f" && pass "tern reads from-boto/$f as boto3 wrote it ($1)" ||
      fail "tern read from-boto/$f differently ($1)"
  done
  tool list "$uri" from-boto/ >"$WORK/ls"
  printf '%s\n' "from-boto/big.bin $(stat -c %s "$WORK/big.bin")" \
    "from-boto/zeros.bin $(stat -c %s "$WORK/zeros.bin")" | diff - "$WORK/ls" &&
    pass "tern lists what boto3 wrote ($1)" || fail "tern's listing of what boto3 wrote ($1)"
}

echo "== any keys accepted"
suite open
interop open

echo "== every signature checked (moto IAM)"
read -r key secret < <(boto iam-key)
boto enforce-auth
export AWS_ACCESS_KEY_ID=$key AWS_SECRET_ACCESS_KEY=$secret
if out=$(AWS_SECRET_ACCESS_KEY=not-the-secret tool list "s3://$bucket/x" "" 2>&1); then
  fail "a wrong secret was let in"
else
  grep -q SignatureDoesNotMatch <<<"$out" && pass "a wrong secret gets SignatureDoesNotMatch" ||
    fail "a wrong secret: $out"
fi
suite signed
interop signed

echo "== outage on the same port: down before an upload starts, up 2 s later"
kill -USR1 "$server"
port=$(cat "$WORK/port")
for _ in $(seq 100); do (: <"/dev/tcp/127.0.0.1/$port") 2>/dev/null || break; sleep 0.05; done
tool --part-size $((5 * 1024 * 1024)) --parallel 2 --max-retry-seconds 30 \
  put "s3://$bucket/outage" big.bin "$WORK/big.bin" &>"$WORK/outage.log" &
upload=$!
sleep 2
kill -USR2 "$server"
if wait "$upload"; then
  retries=$(grep -c retrying "$WORK/outage.log" || true)
  boto get "$bucket" outage/big.bin "$WORK/back"
  cmp -s "$WORK/back" "$WORK/big.bin" && [ "$retries" -gt 0 ] &&
    pass "upload through the outage ($retries retry lines)" ||
    fail "upload through the outage: $retries retries, or it reads back differently"
  grep -m1 retrying "$WORK/outage.log" || true
else
  cat "$WORK/outage.log"
  fail "upload through the outage"
fi
tool get "s3://$bucket/interop-signed" small.bin "$WORK/back" && cmp -s "$WORK/back" "$WORK/small.bin" &&
  pass "objects from before the outage are still there" || fail "objects lost in the outage"

[ -z "$(boto uploads "$bucket")" ] && pass "no multipart upload left open" ||
  fail "multipart uploads left open: $(boto uploads "$bucket" | tr '\n' ' ')"

if [ "$failures" -ne 0 ]; then
  echo "$failures check(s) failed"
  exit 1
fi
echo "all S3 interop checks passed"
