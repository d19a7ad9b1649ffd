#!/usr/bin/env bash
# CPU training-throughput benchmarks (not tests: they print ratio lines, they do not fail on them).
#
#   bash bench/cpu_train.sh            # from the repository root
#
# 1. tern vs PyTorch (eager, same model, global batch, optimizer, LR schedule, clipping, threads,
#    data file and normalisation) for the digits MLP (configs/digits_mlp.ini) and the wide MLP
#    (bench/configs/wide_mlp.ini) at 1 and 2 threads.
# 2. Data-parallel scaling: wide MLP, 2 MPI ranks x 1 BLAS thread vs 1 rank x 1 thread, same
#    global batch (256).
#
# Steady-state throughput, both sides the same estimator: the median of per-interval samples/s
# after a warm-up. tern: the metrics.jsonl records (one per train.log_every steps), the first
# ~20% skipped; PyTorch: bench/torch_mlp.py's intervals of the same number of steps after its
# warm-up.
#
# Environment:
#   BENCH_SECONDS   steady-state seconds per run (default 12)
#   BENCH_BUCKET_MB dist.bucket_mb of the scaling run (default 25; see bench notes)
#   BENCH_SWEEP=1   also sweep dist.bucket_mb over 1 2 4 8 25 for the 2-rank run
#   BENCH_VENV      the PyTorch peer's venv (default .venv-bench, git-ignored)
#   BENCH_OUT       run folders and logs (default bench/out, git-ignored)
#   TERN_BIN        folder with tern-train and tern-data (default build/bin)
set -euo pipefail

TERN_BIN=${TERN_BIN:-build/bin}
VENV=${BENCH_VENV:-.venv-bench}
OUT=${BENCH_OUT:-bench/out}
TARGET_S=${BENCH_SECONDS:-12}
BUCKET_MB=${BENCH_BUCKET_MB:-25}
SWEEP=${BENCH_SWEEP:-0}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

if [[ ! -f CMakeLists.txt || ! -d bench ]]; then
  echo "run from the repository root: bash bench/cpu_train.sh" >&2
  exit 2
fi

# ---- setup: binaries, PyTorch peer, data ------------------------------------------------------
if [[ ! -x $TERN_BIN/tern-train || ! -x $TERN_BIN/tern-data ]]; then
  echo "[setup] $TERN_BIN/tern-train missing: building (Release)" >&2
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >"$OUT.cmake.log" 2>&1 || { cat "$OUT.cmake.log" >&2; exit 1; }
  cmake --build build -j2 --target tern-train tern-data >&2
fi
PY=$VENV/bin/python
if ! "$PY" -c "import torch, h5py, numpy" >/dev/null 2>&1; then
  echo "[setup] installing the PyTorch peer into $VENV (torch, h5py, numpy from PyPI)" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet torch h5py numpy >&2
fi
mkdir -p bench/data "$OUT"
if [[ ! -f data/digits.h5 ]]; then
  "$TERN_BIN/tern-data" convert --input data/digits.csv --output data/digits.h5 >&2
fi
if [[ ! -f bench/data/wide.h5 ]]; then
  "$TERN_BIN/tern-data" synth --output bench/data/wide.h5 --rows 20000 --features 784 --classes 10 >&2
fi

# ---- helpers ----------------------------------------------------------------------------------
# summarize METRICS_JSONL SKIP_FRACTION -> "median_sps mean_sps intervals steps data fwd bwd ar opt"
summarize() {
  python3 - "$1" "$2" <<'EOF'
import json, statistics, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
iv = [r for r in recs if "event" not in r and "samples_per_sec" in r]
skip = max(2, int(len(iv) * float(sys.argv[2])))
iv = iv[skip:-1] if len(iv) > skip + 2 else iv[skip:]   # the last interval may be short
med = statistics.median(r["samples_per_sec"] for r in iv)
# time-weighted mean: total samples / total seconds over the kept intervals
mean = len(iv) / sum(1.0 / r["samples_per_sec"] for r in iv)
f = lambda k: statistics.mean(r[k] for r in iv)
print(f"{med:.0f} {mean:.0f} {len(iv)} {iv[-1]['step'] - iv[0]['step']} "
      f"{f('data_wait_ms'):.3f} {f('forward_ms'):.3f} {f('backward_ms'):.3f} "
      f"{f('allreduce_wait_ms'):.3f} {f('optimizer_ms'):.3f}")
EOF
}

json_field() { python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())[sys.argv[1]])' "$1"; }

# tern_cmd NP -- prints the launcher prefix for NP ranks
tern_launch() {
  if [[ $1 -gt 1 ]]; then
    echo "mpirun -np $1 --bind-to core"
  fi
}

# calibrate CFG NP THREADS EXTRA... -> steps/s of a short run (grows the probe until >= 0.5 s)
calibrate() {
  local cfg=$1 np=$2 threads=$3; shift 3
  local steps=20 dir=$OUT/probe wall
  while :; do
    rm -rf "$dir"
    $(tern_launch "$np") "$TERN_BIN/tern-train" --config "$cfg" --run.dir="$dir" --run.threads="$threads" \
      --run.progress=off --run.log_level=warn --train.steps=$steps --train.log_every=$steps \
      --train.eval_every=0 "$@" >"$OUT/probe.log" 2>&1 || { cat "$OUT/probe.log" >&2; exit 1; }
    wall=$(grep '"event":"done"' "$dir/metrics.jsonl" | json_field wall_seconds)
    if python3 -c "import sys; sys.exit(0 if $wall >= 0.5 or $steps >= 100000 else 1)"; then
      python3 -c "print($steps / $wall)"
      return
    fi
    steps=$((steps * 4))
  done
}

# run_tern NAME CFG NP THREADS EXTRA... -> sets TERN_SUM (summarize output), TERN_STEPS, TERN_LOG_EVERY
run_tern() {
  local name=$1 cfg=$2 np=$3 threads=$4; shift 4
  local rate steps log_every dir=$OUT/$name
  rate=$(calibrate "$cfg" "$np" "$threads" "$@")
  # target seconds of steady state + 25% warm-up; ~60 intervals
  steps=$(python3 -c "print(max(600, int($rate * $TARGET_S * 1.25)))")
  log_every=$(python3 -c "print(max(1, $steps // 60))")
  rm -rf "$dir"
  $(tern_launch "$np") "$TERN_BIN/tern-train" --config "$cfg" --run.dir="$dir" --run.threads="$threads" \
    --run.progress=off --train.steps=$steps --train.log_every=$log_every --train.eval_every=0 "$@" \
    >"$OUT/$name.log" 2>&1 || { cat "$OUT/$name.log" >&2; exit 1; }
  TERN_SUM=$(summarize "$dir/metrics.jsonl" 0.2)
  TERN_STEPS=$steps
  TERN_LOG_EVERY=$log_every
}

# run_torch NAME CFG THREADS INTERVAL -> sets TORCH_SPS
run_torch() {
  local name=$1 cfg=$2 threads=$3 interval=$4
  "$PY" bench/torch_mlp.py --tern-config "$cfg" --threads "$threads" --warmup 1000000 \
    --warmup-seconds "$(python3 -c "print($TARGET_S * 0.25)")" --seconds "$TARGET_S" \
    --interval "$interval" >"$OUT/$name.torch.json" 2>"$OUT/$name.torch.log" ||
    { cat "$OUT/$name.torch.log" >&2; exit 1; }
  TORCH_SPS=$(json_field samples_per_sec <"$OUT/$name.torch.json")
}

split_line() {  # split_line PREFIX SUMMARY
  read -r _ _ n _ dw fw bw ar op <<<"$2"
  echo "  $1 per-step ms: data_wait $dw, forward $fw, backward $bw, allreduce_wait $ar, optimizer $op ($n intervals)"
}

# ---- header -----------------------------------------------------------------------------------
echo "== tern CPU training benchmarks =="
echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs ($(lscpu | sed -n 's/^Core(s) per socket: *//p') cores/socket x $(lscpu | sed -n 's/^Socket(s): *//p') socket), $(free -g | awk '/^Mem:/{print $2}') GiB RAM"
echo "tern: $("$TERN_BIN/tern-train" --version 2>&1 | head -1), BLAS: $(ldd "$TERN_BIN/tern-train" | grep -o 'libopenblas[^ ]*' | head -1)"
echo "pytorch: $("$PY" -c 'import torch; print(torch.__version__, "BLAS", "mkl" if torch.backends.mkl.is_available() else "?")')"
if pgrep -x cc1plus >/dev/null || pgrep -x cc1 >/dev/null; then
  echo "WARNING: compilers are running on this machine; the timings below are disturbed"
fi
echo "steady state: ~${TARGET_S} s per run, median of per-interval samples/s after a warm-up"
echo

# ---- 1. tern vs PyTorch -----------------------------------------------------------------------
for bench in "digits_mlp configs/digits_mlp.ini" "wide_mlp bench/configs/wide_mlp.ini"; do
  read -r name cfg <<<"$bench"
  for threads in 1 2; do
    run_tern "$name.t$threads" "$cfg" 1 "$threads"
    run_torch "$name.t$threads" "$cfg" "$threads" "$TERN_LOG_EVERY"
    tern_sps=${TERN_SUM%% *}
    python3 -c "
t, p = $tern_sps, $TORCH_SPS
print(f'$name threads=$threads: tern {t:.0f} samples/s, pytorch {p:.0f} samples/s, ratio {t / p:.2f}x (goal >= 3x)')"
    split_line "tern" "$TERN_SUM"
  done
done
echo

# ---- 2. data-parallel scaling -----------------------------------------------------------------
WIDE=bench/configs/wide_mlp.ini
run_tern wide_mlp.np1 "$WIDE" 1 1 --dist.bucket_mb="$BUCKET_MB"
ONE=$TERN_SUM
run_tern wide_mlp.np2 "$WIDE" 2 1 --dist.bucket_mb="$BUCKET_MB"
TWO=$TERN_SUM
python3 -c "
one, two = ${ONE%% *}, ${TWO%% *}
print(f'scaling wide_mlp 2 ranks x 1 thread vs 1 rank x 1 thread: ratio {two / one:.2f}x (goal >= 1.8x)')
print(f'  1 rank x 1 thread: {one:.0f} samples/s; 2 ranks x 1 thread: {two:.0f} samples/s (global batch 256, dist.bucket_mb=$BUCKET_MB)')"
split_line "1 rank " "$ONE"
split_line "2 ranks" "$TWO"

if [[ $SWEEP == 1 ]]; then
  echo
  echo "bucket sweep (2 ranks x 1 thread, wide_mlp):"
  for mb in 1 2 4 8 25; do
    run_tern "wide_mlp.np2.b$mb" "$WIDE" 2 1 --dist.bucket_mb="$mb"
    read -r sps _ _ _ _ _ _ ar _ <<<"$TERN_SUM"
    echo "  dist.bucket_mb=$mb: $sps samples/s ($(python3 -c "print(f'{$sps / ${ONE%% *}:.2f}')")x), allreduce_wait $ar ms/step"
  done
fi
echo
echo "run folders and logs: $OUT/"
