#!/usr/bin/env bash
# Communication over real links between test hosts (tests/net/hosts.sh), as root:
#   bash bench/multihost.sh            # from the repository root, after a release build
#
# 1. All-reduce bandwidth, 2 hosts x 1 rank, message sizes 1 KB .. 256 MB (bench/allreduce_bench.cpp,
#    reported like nccl-tests: algbw and busbw), over the veth link without a limit, then with
#    the link limited to 1 Gbit/s (+ 1 ms delay where the kernel has netem): busbw against the
#    link rate, the limit.
# 2. Overlap of the gradient all-reduce with backward: the wide MLP (bench/configs/wide_mlp.ini),
#    2 hosts x 1 rank, on the 1 Gbit/s link, dist.overlap=true vs false, same buckets. What the
#    overlap can hide at most is the communication that fits under backward, min(comm, backward),
#    with comm the all-reduce wait of the run without overlap; hidden = step(off) - step(on).
#
# Environment: BENCH_PARTS (default "allreduce overlap"), BENCH_STEPS (overlap runs, default 200), BENCH_BUCKET_MB (default 1),
# BENCH_MAX_BYTES (default 268435456), BENCH_OUT (default bench/out), TERN_BIN (build/bin).
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/common.sh
TERN_BIN=${TERN_BIN:-build/bin}
out=${BENCH_OUT:-bench/out}/multihost
steps=${BENCH_STEPS:-200}
bucket=${BENCH_BUCKET_MB:-1}
max_bytes=${BENCH_MAX_BYTES:-268435456}
nets=tests/net/hosts.sh
mkdir -p "$out"
trap '"$nets" down >/dev/null 2>&1 || true' EXIT
"$nets" up 2 >&2
eval "$("$nets" mpi-env)"
"$nets" hostfile 1 h1 h2 >"$out/hosts"
run2() { mpirun -np 2 --hostfile "$out/hosts" --bind-to none "$@"; }
want() { [[ " ${BENCH_PARTS:-allreduce overlap} " == *" $1 "* ]]; }

echo "# multi-host benchmarks, $(date -u +%Y-%m-%d), $(nproc) cores, kernel $(uname -r)"
if want allreduce; then
  echo "## all-reduce, 2 hosts x 1 rank, veth, no limit"
  run2 "$TERN_BIN/tern_bench_allreduce" --max-bytes "$max_bytes" | tee "$out/allreduce-veth.txt"
fi
delay=""
if "$nets" shape h1 --delay 1ms 2>/dev/null; then delay="--delay 1ms"; fi
"$nets" shape h1 --rate 1gbit $delay
"$nets" shape h2 --rate 1gbit $delay
limit="1 Gbit/s${delay:+ + 1 ms delay}"
[ -z "$delay" ] && limit="$limit (no delay: this kernel has no netem qdisc)"
if want allreduce; then
  echo "## all-reduce, 2 hosts x 1 rank, link limited to $limit"
  run2 "$TERN_BIN/tern_bench_allreduce" --max-bytes "$max_bytes" | tee "$out/allreduce-1g.txt"
  awk '$1 ~ /^[0-9]+$/ {b = $6} END {printf "ratio: busbw at the largest size / link rate (0.125 GB/s) = %.2f\n", b / 0.125}' \
    "$out/allreduce-1g.txt"
fi
want overlap || exit 0

echo "## overlap, wide MLP, 2 hosts x 1 rank, $limit, bucket_mb=$bucket, $steps steps"
[ -f bench/data/wide.h5 ] || { mkdir -p bench/data; "$TERN_BIN/tern-data" synth --output bench/data/wide.h5 --rows 20000 --features 784 --classes 10 >&2; }
for overlap in true false; do
  rm -rf "$out/overlap-$overlap"
  run2 "$TERN_BIN/tern-train" --config bench/configs/wide_mlp.ini --train.steps="$steps" \
    --train.log_every=10 --run.threads=1 --dist.bucket_mb="$bucket" --dist.overlap="$overlap" \
    --run.dir="$out/overlap-$overlap" >"$out/overlap-$overlap.log" 2>&1
done
python3 - "$out" <<'EOF'
import json, statistics, sys
out = sys.argv[1]
def phases(run):
    recs = [json.loads(l) for l in open(f"{out}/overlap-{run}/metrics.jsonl") if "\"forward_ms\"" in l]
    recs = recs[len(recs) // 5:]  # warm-up
    med = lambda k: statistics.median(r[k] for r in recs)
    step = statistics.median(256 / r["samples_per_sec"] * 1000 for r in recs)
    return {"step": step, "fwd": med("forward_ms"), "bwd": med("backward_ms"),
            "wait": med("allreduce_wait_ms"), "opt": med("optimizer_ms")}
on, off = phases("true"), phases("false")
for name, p in (("overlap on ", on), ("overlap off", off)):
    print(f"{name}: step {p['step']:.1f} ms = forward {p['fwd']:.1f} + backward {p['bwd']:.1f} "
          f"+ all-reduce wait {p['wait']:.1f} + optimizer {p['opt']:.1f} (+ rest)")
hideable = min(off["wait"], off["bwd"])
hidden = off["step"] - on["step"]
print(f"communication that fits under backward: min({off['wait']:.1f}, {off['bwd']:.1f}) = {hideable:.1f} ms; "
      f"hidden by the overlap: {hidden:.1f} ms")
print(f"ratio: hidden / hideable = {hidden / hideable:.2f} (goal >= 0.80)")
EOF
