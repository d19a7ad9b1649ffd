#!/usr/bin/env bash
# Installs what is missing, checks formatting, builds, and runs every test: the release build's
# whole suite, then the unit tests again under AddressSanitizer and UBSan.
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/common.sh

install_packages
setup_python_test_env

echo "== checking formatting (clang-format)"
mapfile -t sources < <(git ls-files '*.cpp' '*.h' '*.cu' '*.cuh')
clang-format --dry-run --Werror "${sources[@]}"

build_preset release
echo "== converting data/digits.csv -> data/digits.h5 (the path configs/digits_mlp.ini names)"
build/bin/tern-data convert --input data/digits.csv --output data/digits.h5
echo "== tests (release)"
ctest --preset release

build_preset debug-asan
echo "== unit tests under AddressSanitizer + UBSan"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  ctest --preset debug-asan
