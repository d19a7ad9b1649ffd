#!/usr/bin/env bash
# CPU training-throughput benchmarks (not tests: they print ratio lines, they do not fail on them).
#
#   bash bench/cpu_train.sh            # from the repository root
#
# 1. tern vs PyTorch (eager, same model, global batch, optimizer, LR schedule, clipping, threads,
#    data file and normalisation; twice: with denormals flushed to zero like tern, whose ratio is
#    the one held to the goal, and in PyTorch's default, which keeps them) for the digits MLP
#    (configs/digits_mlp.ini), the wide MLP (bench/configs/wide_mlp.ini) and the character GPT
#    (configs/shakespeare_gpt.ini, against bench/torch_gpt.py: the same model with torch's
#    scaled_dot_product_attention; tokens/s), at 1 and 2 threads.
# 2. Data-parallel scaling: wide MLP, 2 MPI ranks x 1 BLAS thread vs 1 rank x 1 thread, same
#    global batch (256), unsharded and with ZeRO-1 (dist.zero=1).
# 3. ZeRO-1 memory: optimizer state and peak resident memory per rank, W = 1, 2, 3, with and
#    without dist.zero=1.
#
# Steady-state throughput, both sides the same estimator: the median of per-interval samples/s
# after a warm-up. tern: the metrics.jsonl records (one per train.log_every steps), the first
# ~20% skipped; PyTorch: bench/torch_mlp.py runs the same number of steps, with the same warm-up
# and the same interval length (so both reach the same phase of training: once the digits MLP
# has converged its tiny gradients turn denormal, and tern slows down ~2x; see the drift line).
#
# Environment:
#   BENCH_SECONDS   steady-state seconds per run (default 12)
#   BENCH_BUCKET_MB dist.bucket_mb of the scaling run (default 25; see bench notes)
#   BENCH_SWEEP=1   also sweep dist.bucket_mb over 1 2 4 8 25 for the 2-rank run
#   BENCH_VENV      the PyTorch peer's venv (default .venv-bench, git-ignored)
#   BENCH_OUT       run folders and logs (default bench/out, git-ignored)
#   BENCH_IDLE_WAIT seconds to wait for an idle machine before each timed run (default 300)
#   BENCH_RETRIES   tries per measurement while other processes disturb it (default 4)
#   TERN_BIN        folder with tern-train and tern-data (default build/bin)
#   BENCH_MODELS    which parts (default "digits_mlp wide_mlp scaling gpt zero_memory")
set -euo pipefail

TERN_BIN=${TERN_BIN:-build/bin}
VENV=${BENCH_VENV:-.venv-bench}
OUT=${BENCH_OUT:-bench/out}
TARGET_S=${BENCH_SECONDS:-12}
BUCKET_MB=${BENCH_BUCKET_MB:-25}
SWEEP=${BENCH_SWEEP:-0}
MODELS=" ${BENCH_MODELS:-digits_mlp wide_mlp scaling gpt zero_memory} "
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

if [[ ! -f CMakeLists.txt || ! -d bench ]]; then
  echo "run from the repository root: bash bench/cpu_train.sh" >&2
  exit 2
fi

# ---- setup: binaries, PyTorch peer, data ------------------------------------------------------
mkdir -p "$OUT"
if [[ ! -x $TERN_BIN/tern-train || ! -x $TERN_BIN/tern-data ]]; then
  echo "[setup] $TERN_BIN/tern-train missing: building (Release)" >&2
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >"$OUT/cmake.log" 2>&1 || { cat "$OUT/cmake.log" >&2; exit 1; }
  cmake --build build -j2 --target tern-train tern-data >&2
fi
# Time a snapshot of the binaries, so a rebuild during the benchmark cannot mix two versions.
mkdir -p "$OUT/bin"
cp "$TERN_BIN/tern-train" "$TERN_BIN/tern-data" "$OUT/bin/"
TERN_BIN=$OUT/bin
PY=$VENV/bin/python
# The PyTorch peer only for the parts that compare with it.
needs_torch=0
for m in digits_mlp wide_mlp gpt; do [[ $MODELS == *" $m "* ]] && needs_torch=1; done
if [[ $needs_torch == 1 ]] && ! "$PY" -c "import torch, h5py, numpy" >/dev/null 2>&1; then
  echo "[setup] installing the PyTorch peer into $VENV (torch, h5py, numpy from PyPI)" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet torch h5py numpy >&2
fi
mkdir -p bench/data
if [[ ! -f data/digits.h5 ]]; then
  "$TERN_BIN/tern-data" convert --input data/digits.csv --output data/digits.h5 >&2
fi
if [[ ! -f data/shakespeare.h5 ]]; then
  "$TERN_BIN/tern-data" text --input data/tinyshakespeare.txt --output data/shakespeare.h5 >&2
fi
if [[ ! -f bench/data/wide.h5 ]]; then
  "$TERN_BIN/tern-data" synth --output bench/data/wide.h5 --rows 20000 --features 784 --classes 10 >&2
fi

# ---- helpers ----------------------------------------------------------------------------------
# summarize METRICS_JSONL SKIP_FRACTION -> one line: median_sps mean_sps intervals steps, the mean
# per-step ms of data_wait forward backward allreduce_wait optimizer, then the median samples/s of
# the first and last quarter of the kept intervals and of the skipped warm-up intervals
summarize() {
  python3 - "$1" "$2" <<'EOF'
import json, statistics, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
iv = [r for r in recs if "event" not in r and "samples_per_sec" in r]
skip = max(2, int(len(iv) * float(sys.argv[2])))
early = statistics.median(r["samples_per_sec"] for r in iv[1:skip])  # warm-up intervals but the 1st
iv = iv[skip:-1] if len(iv) > skip + 2 else iv[skip:]   # the last interval may be short
med = statistics.median(r["samples_per_sec"] for r in iv)
# time-weighted mean: total samples / total seconds over the kept intervals
mean = len(iv) / sum(1.0 / r["samples_per_sec"] for r in iv)
f = lambda k: statistics.mean(r[k] for r in iv)
q = max(1, len(iv) // 4)
first = statistics.median(r["samples_per_sec"] for r in iv[:q])
last = statistics.median(r["samples_per_sec"] for r in iv[-q:])
print(f"{med:.0f} {mean:.0f} {len(iv)} {iv[-1]['step'] - iv[0]['step']} "
      f"{f('data_wait_ms'):.3f} {f('forward_ms'):.3f} {f('backward_ms'):.3f} "
      f"{f('allreduce_wait_ms'):.3f} {f('optimizer_ms'):.3f} {first:.0f} {last:.0f} {early:.0f}")
EOF
}

# Other processes on the machine (compiles, other jobs) skew the numbers: wait for an idle machine
# before each timed run (at most BENCH_IDLE_WAIT s), then measure how much CPU other processes
# took during it (all busy CPU time minus the run's own, from /usr/bin/time) and flag the run.
IDLE_WAIT=${BENCH_IDLE_WAIT:-300}
RETRIES=${BENCH_RETRIES:-4}
NCPU=$(nproc)
cpu_busy() { awk '/^cpu /{printf "%.2f\n", ($2+$3+$4+$7+$8)/100}' /proc/stat; }
wait_idle() {
  local waited=0 b0 b1
  while ((waited < IDLE_WAIT)); do
    b0=$(cpu_busy); sleep 2; b1=$(cpu_busy)
    python3 -c "import sys; sys.exit(0 if ($b1 - $b0) / (2 * $NCPU) < 0.10 else 1)" && return 0
    waited=$((waited + 2))
  done
  echo "  (machine still busy after ${IDLE_WAIT}s; timing anyway)" >&2
}
# measured CMD... : runs CMD, sets FOREIGN to " [disturbed: ...]" or ""
measured() {
  local b0 b1 rc=0
  b0=$(cpu_busy)
  /usr/bin/time -f "%U %S %e" -o "$OUT/time.tmp" "$@" || rc=$?
  b1=$(cpu_busy)
  FOREIGN=$(python3 -c "
u, s, e = map(float, open('$OUT/time.tmp').read().split()[-3:])
f = max(0.0, ($b1 - $b0) - (u + s)) / max(e * $NCPU, 1e-9)
print(f' [disturbed: other processes used {100 * f:.0f}% of the CPUs]' if f > 0.03 else '')")
  return $rc
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

# run_tern NAME CFG NP THREADS EXTRA... -> sets TERN_SUM (summarize output), TERN_STEPS,
# TERN_LOG_EVERY, TERN_FOREIGN; a run that other processes disturbed is repeated (BENCH_RETRIES)
run_tern() {
  local name=$1 cfg=$2 np=$3 threads=$4; shift 4
  local rate steps log_every dir=$OUT/$name attempt
  for ((attempt = 1; attempt <= RETRIES; attempt++)); do
    wait_idle
    rate=$(calibrate "$cfg" "$np" "$threads" "$@")
    # target seconds of steady state + 25% warm-up; ~60 intervals
    steps=$(python3 -c "print(max(600, int($rate * $TARGET_S * 1.25)))")
    log_every=$(python3 -c "print(max(1, $steps // 60))")
    rm -rf "$dir"
    measured $(tern_launch "$np") "$TERN_BIN/tern-train" --config "$cfg" --run.dir="$dir" \
      --run.threads="$threads" --run.progress=off --train.steps=$steps --train.log_every=$log_every \
      --train.eval_every=0 "$@" >"$OUT/$name.log" 2>&1 || { cat "$OUT/$name.log" >&2; exit 1; }
    TERN_FOREIGN=$FOREIGN
    [[ -z $FOREIGN ]] && break
    echo "  [$name: tern attempt $attempt$FOREIGN]" >&2
  done
  ((attempt == 1 || attempt > RETRIES)) || TERN_FOREIGN=" [undisturbed on attempt $attempt]"
  TERN_SUM=$(summarize "$dir/metrics.jsonl" 0.2)
  TERN_STEPS=$steps
  TERN_LOG_EVERY=$log_every
}

# run_torch NAME CFG THREADS PEER [PEER_ARGS...] -> sets TORCH_SPS, TORCH_FOREIGN (retried like
# run_tern). The peer runs the same steps as the tern run just before it (TERN_STEPS, TERN_LOG_EVERY): the same warm-up
# (the ~20% of steps whose intervals tern's summary skips), the same interval length, the same
# LR schedule length, so both go through the same phase of training (see the denormal note).
run_torch() {
  local name=$1 cfg=$2 threads=$3 peer=$4 attempt
  shift 4
  local extra=("$@")
  local warm=$(((TERN_STEPS / TERN_LOG_EVERY) / 5 * TERN_LOG_EVERY))
  for ((attempt = 1; attempt <= RETRIES; attempt++)); do
    wait_idle
    measured "$PY" "$peer" --tern-config "$cfg" --threads "$threads" --warmup "$warm" \
      --steps $((TERN_STEPS - warm)) --interval "$TERN_LOG_EVERY" --train-steps "$TERN_STEPS" \
      "${extra[@]}" >"$OUT/$name.torch.json" 2>"$OUT/$name.torch.log" ||
      { cat "$OUT/$name.torch.log" >&2; exit 1; }
    TORCH_FOREIGN=$FOREIGN
    [[ -z $FOREIGN ]] && break
    echo "  [$name: pytorch attempt $attempt$FOREIGN]" >&2
  done
  ((attempt == 1 || attempt > RETRIES)) || TORCH_FOREIGN=" [undisturbed on attempt $attempt]"
  TORCH_SPS=$(json_field samples_per_sec <"$OUT/$name.torch.json")
}

split_line() {  # split_line PREFIX SUMMARY
  local med n dw fw bw ar op first last early
  read -r med _ n _ dw fw bw ar op first last early <<<"$2"
  echo "  $1 per-step ms: data_wait $dw, forward $fw, backward $bw, allreduce_wait $ar, optimizer $op ($n intervals)"
  python3 -c "
m, f, l, e = $med, $first, $last, $early
if abs(l - f) > 0.15 * f or abs(m - e) > 0.15 * e:
    print(f'  $1 throughput drifts: warm-up intervals {e:.0f}, steady first quarter {f:.0f}, last quarter {l:.0f} samples/s')"
}

# ---- header -----------------------------------------------------------------------------------
echo "== tern CPU training benchmarks =="
echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs ($(lscpu | sed -n 's/^Core(s) per socket: *//p') cores/socket x $(lscpu | sed -n 's/^Socket(s): *//p') socket), $(free -g | awk '/^Mem:/{print $2}') GiB RAM"
echo "tern: $("$TERN_BIN/tern-train" --version 2>&1 | head -1), BLAS: $(ldd "$TERN_BIN/tern-train" | grep -o 'libopenblas[^ ]*' | head -1) $(dpkg-query -W -f '${Version}' libopenblas0-pthread 2>/dev/null || true), $(mpirun --version 2>/dev/null | head -1 || true)"
[[ $needs_torch == 1 ]] && echo "pytorch: $("$PY" -c 'import torch; print(torch.__version__, "BLAS", "mkl" if torch.backends.mkl.is_available() else "?")')"
if pgrep -x cc1plus >/dev/null || pgrep -x cc1 >/dev/null; then
  echo "WARNING: compilers are running on this machine; the timings below are disturbed"
fi
echo "steady state: ~${TARGET_S} s per run, median of per-interval samples/s after a warm-up"
echo

# ---- 1. tern vs PyTorch -----------------------------------------------------------------------
# name config peer goal; the GPT's throughput is in tokens (samples x data.block_size)
for bench in "digits_mlp configs/digits_mlp.ini bench/torch_mlp.py 3x" \
             "wide_mlp bench/configs/wide_mlp.ini bench/torch_mlp.py 1.0x" \
             "gpt configs/shakespeare_gpt.ini bench/torch_gpt.py 1.0x"; do
  read -r name cfg peer goal <<<"$bench"
  [[ $MODELS == *" $name "* ]] || continue
  block=$(sed -n 's/^block_size *= *//p' "$cfg")
  for threads in 1 2; do
    run_tern "$name.t$threads" "$cfg" 1 "$threads"
    # The peer twice: with denormals flushed to zero, as tern does by default (the same numerics:
    # the goal's ratio), and as PyTorch runs by default.
    run_torch "$name.t$threads.ftz" "$cfg" "$threads" "$peer" --flush-denormal
    FTZ_SPS=$TORCH_SPS FTZ_FOREIGN=$TORCH_FOREIGN
    run_torch "$name.t$threads" "$cfg" "$threads" "$peer"
    tern_sps=${TERN_SUM%% *}
    python3 -c "
t, p, d, T = $tern_sps, $FTZ_SPS, $TORCH_SPS, ${block:-0}
unit, m = ('tokens', T) if T else ('samples', 1)
print(f'$name threads=$threads: tern {t * m:.0f} {unit}/s, pytorch (denormals flushed, as tern) {p * m:.0f} {unit}/s, ratio {t / p:.2f}x (goal >= $goal: {\"met\" if t / p >= float(\"$goal\".rstrip(\"x\")) else \"NOT met\"}); pytorch default (denormals kept) {d * m:.0f} {unit}/s, ratio {t / d:.2f}x')"
    split_line "tern" "$TERN_SUM"
    [[ -z $TERN_FOREIGN ]] || echo "  note: tern run$TERN_FOREIGN"
    [[ -z $FTZ_FOREIGN ]] || echo "  note: pytorch (denormals flushed) run$FTZ_FOREIGN"
    [[ -z $TORCH_FOREIGN ]] || echo "  note: pytorch (default) run$TORCH_FOREIGN"
  done
done
echo

# ---- 2. data-parallel scaling -----------------------------------------------------------------
if [[ $MODELS == *" scaling "* ]]; then
WIDE=bench/configs/wide_mlp.ini
run_tern wide_mlp.np1 "$WIDE" 1 1 --dist.bucket_mb="$BUCKET_MB"
ONE=$TERN_SUM ONE_FOREIGN=$TERN_FOREIGN
run_tern wide_mlp.np2 "$WIDE" 2 1 --dist.bucket_mb="$BUCKET_MB"
TWO=$TERN_SUM TWO_FOREIGN=$TERN_FOREIGN
run_tern wide_mlp.np2.zero "$WIDE" 2 1 --dist.bucket_mb="$BUCKET_MB" --dist.zero=1
ZERO=$TERN_SUM ZERO_FOREIGN=$TERN_FOREIGN
python3 -c "
one, two, zero = ${ONE%% *}, ${TWO%% *}, ${ZERO%% *}
print(f'scaling wide_mlp 2 ranks x 1 thread vs 1 rank x 1 thread: ratio {two / one:.2f}x (goal >= 1.8x)')
print(f'scaling wide_mlp with ZeRO-1 (dist.zero=1), 2 ranks x 1 thread vs 1 rank x 1 thread: ratio {zero / one:.2f}x (goal >= 1.8x)')
print(f'  1 rank x 1 thread: {one:.0f} samples/s; 2 ranks x 1 thread: {two:.0f} samples/s, with ZeRO-1 {zero:.0f} (global batch 256, dist.bucket_mb=$BUCKET_MB, mpirun --bind-to core)')"
split_line "1 rank " "$ONE"
split_line "2 ranks" "$TWO"
split_line "2 ranks, ZeRO-1" "$ZERO"
[[ -z $ONE_FOREIGN ]] || echo "  note: 1-rank run$ONE_FOREIGN"
[[ -z $TWO_FOREIGN ]] || echo "  note: 2-rank run$TWO_FOREIGN"
[[ -z $ZERO_FOREIGN ]] || echo "  note: 2-rank ZeRO-1 run$ZERO_FOREIGN"

if [[ $SWEEP == 1 ]]; then
  echo
  echo "bucket sweep (2 ranks x 1 thread, wide_mlp):"
  for mb in 1 2 4 8 25; do
    run_tern "wide_mlp.np2.b$mb" "$WIDE" 2 1 --dist.bucket_mb="$mb"
    read -r sps _ _ _ _ _ _ ar _ <<<"$TERN_SUM"
    echo "  dist.bucket_mb=$mb: $sps samples/s ($(python3 -c "print(f'{$sps / ${ONE%% *}:.2f}')")x), allreduce_wait $ar ms/step$TERN_FOREIGN"
  done
fi
fi
echo

# ---- 3. ZeRO-1 memory ---------------------------------------------------------------------------
# Optimizer state per rank (the run log's optimizer_state_mb, rank 0's slice) and each rank's peak
# resident memory (/usr/bin/time), with and without dist.zero=1, at W = 1, 2, 3 (wide MLP,
# 50 steps; the goal is 1/W of the state).
if [[ $MODELS == *" zero_memory "* ]]; then
  WIDE=bench/configs/wide_mlp.ini
  echo "ZeRO-1 memory, wide MLP (1.86 M parameters, AdamW):"
  printf '  %-3s %-6s %-26s %s\n' W zero "optimizer state per rank" "peak RSS per rank (MB)"
  for np in 1 2 3; do
    for zero in 0 1; do
      dir=$OUT/zero_mem.np$np.z$zero
      rm -rf "$dir"
      mpirun -np "$np" --oversubscribe /usr/bin/time -f "rss_kb %M" "$TERN_BIN/tern-train" \
        --config "$WIDE" --run.dir="$dir" --run.threads=1 --run.progress=off --train.steps=50 \
        --train.log_every=50 --dist.zero=$zero >"$OUT/zero_mem.np$np.z$zero.log" 2>&1 ||
        { cat "$OUT/zero_mem.np$np.z$zero.log" >&2; exit 1; }
      mb=$(grep '"event":"done"' "$dir/metrics.jsonl" | json_field optimizer_state_mb)
      rss=$(sed -n 's/^rss_kb //p' "$OUT/zero_mem.np$np.z$zero.log" | awk '{printf "%s%.0f", (NR > 1 ? " " : ""), $1 / 1024}')
      [[ $zero == 0 ]] && base_mb=$mb
      ratio=$(python3 -c "print(f'{$mb / $base_mb:.3f}')")
      printf '  %-3s %-6s %-26s %s\n' "$np" "$zero" "$mb MB ($ratio of unsharded)" "$rss"
    done
  done
fi
echo

echo "run folders and logs: $OUT/"
