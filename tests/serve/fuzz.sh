#!/usr/bin/env bash
# Builds tests/serve/fuzz_infer_request.cpp with clang++-14 (libFuzzer, ASan, UBSan), together
# with the sources the request parser needs (src/serve/protocol.cpp and the tensor and device
# code of src/compute/ and src/base/module.cpp, CPU only), writes a seed corpus and a dictionary, and fuzzes for
# ${TERN_FUZZ_SECONDS:-60} seconds. Fails on any crash, sanitizer report, uncaught exception or
# leak. Exit 77 (skip) when clang++-14 is absent; a failure under CI=true (tests/require.sh).
#   tests/serve/fuzz.sh [BUILD_DIR]   (default: a temporary folder, removed at exit)
# Run from the repository root.
set -euo pipefail
cd "$(dirname "$0")/../.."
CXX=${TERN_FUZZ_CXX:-clang++-14}
SECONDS_TO_RUN=${TERN_FUZZ_SECONDS:-60}

if ! command -v "$CXX" >/dev/null 2>&1; then
  # launch/test.sh installs clang-14 and libclang-rt-14-dev (TERN_PACKAGES); try once more here.
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    source launch/common.sh
    TERN_PACKAGES=()
    install_packages clang-14 libclang-rt-14-dev || true
  fi
  if ! command -v "$CXX" >/dev/null 2>&1; then
    source tests/require.sh
    missing_component "$CXX is not installed (Debian packages clang-14, libclang-rt-14-dev)"
  fi
fi

if [ $# -ge 1 ]; then
  OUT=$1
  mkdir -p "$OUT"
else
  OUT=$(mktemp -d /tmp/tern-fuzz.XXXXXX)
  trap 'rm -rf "$OUT"' EXIT
fi
OUT=$(cd "$OUT" && pwd)

# Rebuilt when any input is newer than the binary (a BUILD_DIR kept between runs saves time).
sources=(src/serve/protocol.cpp src/compute/tensor.cpp src/compute/device.cpp src/compute/backend.cpp
  src/base/module.cpp)
inputs=("${sources[@]}" tests/serve/fuzz_infer_request.cpp tests/serve/fuzz.sh
  include/tern/serve/protocol.h include/tern/serve/input_rows.h include/tern/compute/tensor.h)
if [ -x "$OUT/fuzz_infer_request" ] && [ -z "$(find "${inputs[@]}" -newer "$OUT/fuzz_infer_request")" ]; then
  echo "== $OUT/fuzz_infer_request is up to date"
else
  build=1
fi
if [ -n "${build:-}" ]; then
  echo "== building the fuzz target with $CXX"
  start=$(date +%s)
  flags=(-std=c++20 -g -O1 -fno-omit-frame-pointer -Iinclude -Wall -Wextra -Werror
    -fsanitize=address,undefined -fno-sanitize-recover=all)
  objs=()
  for src in "${sources[@]}"; do
    obj="$OUT/$(basename "$src" .cpp).o"
    "$CXX" "${flags[@]}" -fsanitize=fuzzer-no-link -c "$src" -o "$obj"
    objs+=("$obj")
  done
  "$CXX" "${flags[@]}" -fsanitize=fuzzer tests/serve/fuzz_infer_request.cpp "${objs[@]}" -lxxhash -ldl \
    -o "$OUT/fuzz_infer_request"
  echo "built in $(($(date +%s) - start)) s"
fi

# The seed corpus: the first byte is the framing (see fuzz_infer_request.cpp).
CORPUS="$OUT/corpus"
rm -rf "$CORPUS" "$OUT/artifacts"
mkdir -p "$CORPUS" "$OUT/artifacts"
python3 - "$CORPUS" <<'PY'
import json, struct, sys
corpus = sys.argv[1]
def seed(name, body, head_len=None, tokens=False):  # tokens: the language model's schema
    if head_len is None:
        data = bytes([4 if tokens else 0]) + body
    else:
        data = bytes([7 if tokens else 3]) + struct.pack("<H", head_len) + body
    open(f"{corpus}/{name}", "wb").write(data)
j = lambda o: json.dumps(o, separators=(",", ":")).encode()
seed("json_flat", j({"id": "r1", "inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 4],
                                             "data": [1, 2, 3, 4, 0.5, 0.25, 0, -1]}]}))
seed("json_nested", j({"inputs": [{"name": "input", "datatype": "FP64", "shape": [2, 4],
                                   "data": [[1, 2, 3, 4], [5, 6, 7, 8]]}],
                       "outputs": [{"name": "logits", "parameters": {"classification": 2}}]}))
seed("json_int", j({"inputs": [{"name": "input", "datatype": "INT32", "shape": [1, 4],
                                "data": [1, -2, 3, 4]}],
                    "outputs": [{"name": "logits", "parameters": {"binary_data": True}}]}))
head = j({"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 4],
                      "parameters": {"binary_data_size": 32}}],
          "parameters": {"binary_data_output": True}})
seed("binary_fp32", head + struct.pack("<8f", 1, 2, 3, 4, 0.5, 0.25, 0, -1), len(head))
head = j({"inputs": [{"name": "input", "datatype": "UINT8", "shape": [1, 4],
                      "parameters": {"binary_data_size": 4}}]})
seed("binary_u8", head + bytes([1, 2, 3, 255]), len(head))
seed("tokens_json", j({"inputs": [{"name": "input", "datatype": "INT32", "shape": [2, 3],
                                   "data": [[0, 1, 4], [2, 3, 3]]}]}), tokens=True)
head = j({"inputs": [{"name": "input", "datatype": "INT64", "shape": [1, 2],
                      "parameters": {"binary_data_size": 16}}]})
seed("tokens_binary", head + struct.pack("<2q", 4, 0), len(head), tokens=True)
PY
cat >"$OUT/protocol.dict" <<'EOF'
"\"inputs\""
"\"outputs\""
"\"name\""
"\"input\""
"\"logits\""
"\"shape\""
"\"datatype\""
"\"data\""
"\"id\""
"\"parameters\""
"\"binary_data_size\""
"\"binary_data_output\""
"\"binary_data\""
"\"classification\""
"\"shared_memory_region\""
"\"FP32\""
"\"FP64\""
"\"FP16\""
"\"BF16\""
"\"INT8\""
"\"INT16\""
"\"INT32\""
"\"INT64\""
"\"UINT8\""
"\"BOOL\""
"\"BYTES\""
"true"
"false"
"null"
"1e308"
"-0"
"18446744073709551615"
EOF

echo "== fuzzing for $SECONDS_TO_RUN s"
rc=0
(cd "$OUT/artifacts" &&
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    "$OUT/fuzz_infer_request" -max_total_time="$SECONDS_TO_RUN" -timeout=10 -rss_limit_mb=2048 \
    -max_len=4096 -error_exitcode=1 -dict="$OUT/protocol.dict" -print_final_stats=1 \
    -artifact_prefix="$OUT/artifacts/" "$CORPUS" >"$OUT/fuzz.log" 2>&1) || rc=$?
grep -E '^#[0-9]+.*(DONE|pulse)|^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)' \
  "$OUT/fuzz.log" | tail -6 || true
if [ "$rc" != 0 ] || grep -qE 'ERROR: (AddressSanitizer|libFuzzer|LeakSanitizer)|runtime error:' "$OUT/fuzz.log"; then
  echo "FAIL: the fuzzer found a problem (exit $rc):" >&2
  grep -nE 'ERROR|runtime error|SUMMARY|Test unit written|uncaught|terminate|what\(\)' "$OUT/fuzz.log" | head -20 >&2
  tail -60 "$OUT/fuzz.log" >&2
  for f in "$OUT"/artifacts/crash-* "$OUT"/artifacts/leak-* "$OUT"/artifacts/timeout-* "$OUT"/artifacts/oom-*; do
    [ -e "$f" ] && { echo "input $f (base64):" >&2; base64 "$f" | head -20 >&2; }
  done
  exit 1
fi
runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$OUT/fuzz.log")
echo "ok: ${runs:-?} inputs in $SECONDS_TO_RUN s, no crash or sanitizer report"
