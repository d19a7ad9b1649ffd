#!/usr/bin/env bash
# Installs what is missing, checks formatting, builds, and runs every test: the release build's
# whole suite (soak included), the unit tests and the HTTP framing fuzzer again under
# AddressSanitizer and UBSan, and the threaded tests (server, batcher, hot reload, checkpoint
# saves, loader prefetch, the op thread pool) under ThreadSanitizer. Every suite runs even when
# one before it failed (to build or to pass); the end names the tests each suite skipped, with
# the reason, and the exit status is non-zero when any suite failed.
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/common.sh

install_packages
setup_python_test_env
# Everything the tests need was installed just now: a component still missing is a failure, not
# a skip (tests/require.sh).
export TERN_TEST_STRICT=1

echo "== checking formatting (clang-format)"
mapfile -t sources < <(git ls-files '*.cpp' '*.h' '*.cu' '*.cuh')
clang-format --dry-run --Werror "${sources[@]}"

status=0
failed_suites=()
reports=()
# built PRESET: builds it; a build that fails is a failed suite, and the others still run.
built() {
  if build_preset "$1"; then return 0; fi
  status=1
  failed_suites+=("$1 (build)")
  return 1
}
# suite NAME CTEST_ARGS...: one CTest run; its JUnit report goes to build/reports/NAME.xml.
suite() {
  local name=$1
  shift
  mkdir -p build/reports
  local rc=0
  ctest "$@" --output-junit "$PWD/build/reports/$name.xml" || rc=$?
  reports+=("$name")
  if [ "$rc" != 0 ]; then
    status=1
    failed_suites+=("$name")
  fi
}

if built release; then
  echo "== converting data/digits.csv -> data/digits.h5 (the path configs/digits_mlp.ini names)"
  build/bin/tern-data convert --input data/digits.csv --output data/digits.h5
  echo "== tests (release)"
  suite release --preset release
fi

if built debug-asan; then
  echo "== unit tests and the HTTP framing fuzzer under AddressSanitizer + UBSan"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    suite debug-asan --preset debug-asan
fi

if built debug-tsan; then
  echo "== threaded tests under ThreadSanitizer"
  suite debug-tsan --preset debug-tsan
fi

echo
echo "== skipped tests"
for name in "${reports[@]}"; do python3 tests/skipped_tests.py "build/reports/$name.xml" "$name"; done
if [ "$status" != 0 ]; then
  echo "FAILED suites: ${failed_suites[*]}"
  exit 1
fi
echo "all suites passed"
