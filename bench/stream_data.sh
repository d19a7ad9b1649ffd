#!/usr/bin/env bash
# Streaming loader against the in-memory one (not a test: it prints ratio lines).
#
#   bash bench/stream_data.sh            # from the repository root
#
# 1. digits-sized: the digits MLP on a synthetic file of digits' shape (1797 rows x 64 features).
# 2. wide MLP (bench/configs/wide_mlp.ini) on a synthetic file of BENCH_STREAM_SIZE (default 8GB,
#    784 features; made once with tern-data synth, BENCH_DATA folder, git-ignored), 1 rank x 1
#    thread: streamed, and loaded whole (where the machine has the memory).
# Each: samples/s (median of per-interval rates after a warm-up) and data_wait_ms per step (the
# time the step waited for its batch: the goal is near 0, the prefetch hiding the reads).
# Environment: BENCH_STREAM_SIZE, BENCH_STEPS (wide MLP steps, default 400), BENCH_DATA
# (default bench/data), TERN_BIN (default build/bin), BENCH_OUT (default bench/out).
set -euo pipefail
TERN_BIN=${TERN_BIN:-build/bin}
OUT=${BENCH_OUT:-bench/out}/stream
DATA=${BENCH_DATA:-bench/data}
SIZE=${BENCH_STREAM_SIZE:-8GB}
STEPS=${BENCH_STEPS:-400}
mkdir -p "$OUT" "$DATA"

summary() {  # summary RUN_DIR -> "median_samples_per_sec mean_data_wait_ms startup_s"
  python3 - "$1/metrics.jsonl" <<'PY'
import json, statistics, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
iv = [r for r in recs if "event" not in r and "samples_per_sec" in r]
iv = iv[len(iv) // 5:-1] or iv
done = [r for r in recs if r.get("event") == "done"][-1]
print(f'{statistics.median(r["samples_per_sec"] for r in iv):.0f} '
      f'{statistics.mean(r["data_wait_ms"] for r in iv):.3f}')
PY
}
run() {  # run NAME ARGS...: prints "samples/s data_wait_ms wall_s peak_rss_mb"
  local name=$1
  shift
  rm -rf "${OUT:?}/$name"
  local t0=$SECONDS
  /usr/bin/time -f "%M" -o "$OUT/$name.rss" "$TERN_BIN/tern-train" --run.dir="$OUT/$name" \
    --run.progress=off --run.threads=1 --train.eval_every=0 "$@" >"$OUT/$name.log" 2>&1 ||
    { tail -5 "$OUT/$name.log" >&2; echo "FAILED"; return; }
  echo "$(summary "$OUT/$name") $((SECONDS - t0)) $(($(tail -1 "$OUT/$name.rss") / 1024))"
}
line() {  # line WHAT MEMORY STREAMED
  python3 -c "
m, s = '$2'.split(), '$3'.split()
print(f'$1: in memory {int(m[0]):,} samples/s, data_wait {m[1]} ms/step, {m[2]} s, peak RSS {m[3]} MB; '
      f'streamed {int(s[0]):,} samples/s, data_wait {s[1]} ms/step, {s[2]} s, peak RSS {s[3]} MB; '
      f'streamed/in-memory {int(s[0]) / int(m[0]):.2f}x')" 2>/dev/null || echo "$1: in memory [$2], streamed [$3]"
}

small=$DATA/digits_shape.h5
[[ -f $small ]] || "$TERN_BIN/tern-data" synth --output "$small" --rows 1797 --features 64 --classes 10 >/dev/null
d=(--config configs/digits_mlp.ini --data.path="$small" --train.steps=3000 --train.log_every=50)
line "digits-sized (1797 x 64), digits MLP" "$(run small-mem "${d[@]}" --data.stream=off)" \
  "$(run small-stream "${d[@]}" --data.stream=on)"

big=$DATA/stream_$SIZE.h5
if [[ ! -f $big ]]; then
  echo "[setup] tern-data synth --size $SIZE -> $big" >&2
  "$TERN_BIN/tern-data" synth --output "$big" --size "$SIZE" --features 784 --classes 10 >&2
fi
w=(--config bench/configs/wide_mlp.ini --data.path="$big" --train.steps="$STEPS" --train.log_every=10)
mem_mb=$(awk '/MemAvailable/ {print int($2 / 1024)}' /proc/meminfo)
file_mb=$(($(stat -c %s "$big") >> 20))
streamed=$(run big-stream "${w[@]}" --data.stream=on)
if ((mem_mb > 2 * file_mb)); then
  line "wide MLP on $SIZE ($file_mb MiB)" "$(run big-mem "${w[@]}" --data.stream=off)" "$streamed"
else
  echo "wide MLP on $SIZE ($file_mb MiB): streamed [$streamed] (samples/s data_wait_ms s RSS_MB); not loaded whole: $mem_mb MiB available"
fi
echo "logs: $OUT/"
