#!/usr/bin/env bash
# Streaming data (data.stream=on): the rows of each batch read from the file as it is made.
#  1. The sample order is the in-memory loader's: the same param_checksum both ways on a small
#     file, on 1 and 2 ranks, on digits, on a compressed file read through HDF5 (whose rows
#     cannot be addressed directly), and for a token corpus (GPT, 2 ranks).
#  2. A data set larger than the memory given to the job: a 1 GB file trains on 2 ranks inside a
#     memory cgroup of 512 MB (both ranks together), each rank's resident memory bounded; the
#     in-memory loader in the same cgroup does not survive (so the limit is real).
source "$(dirname "$0")/lib.sh"
"$TERN_BIN/tern-data" synth --output "$WORK/small.h5" --rows 3000 --features 64 --classes 10 >/dev/null
cfg=(--config configs/digits_mlp.ini --train.steps=200 --train.eval_every=100 --run.progress=off)
for np in 1 2; do
  for mode in off on; do
    launch $np "$TERN_BIN/tern-train" "${cfg[@]}" --data.path="$WORK/small.h5" --data.stream=$mode \
      --run.dir="$WORK/small-$np-$mode" >"$WORK/small-$np-$mode.log" 2>&1 ||
      fail "small file, $np rank(s), data.stream=$mode: $(tail -3 "$WORK/small-$np-$mode.log")"
  done
  a=$(done_field "$WORK/small-$np-off" param_checksum)
  b=$(done_field "$WORK/small-$np-on" param_checksum)
  [ "$a" = "$b" ] && pass "$np rank(s): streamed and in-memory give the same param_checksum ($a)" ||
    fail "$np rank(s): streamed $b, in memory $a"
done
grep -q "data: streaming .*rows read from the file as batches need them$" "$WORK/small-1-on.log" &&
  pass "the synthetic file is read directly (pread at each row's offset)" ||
  fail "the synthetic file was not read directly: $(grep 'data: streaming' "$WORK/small-1-on.log")"
# digits.h5 from tern-data convert: contiguous (small) datasets, direct too; the same both ways.
"$TERN_BIN/tern-data" convert --input data/digits.csv --output "$WORK/digits.h5" >/dev/null
for mode in off on; do
  "$TERN_BIN/tern-train" "${cfg[@]}" --data.path="$WORK/digits.h5" --data.stream=$mode \
    --run.dir="$WORK/digits-$mode" >"$WORK/digits-$mode.log" 2>&1 || fail "digits, data.stream=$mode"
done
[ "$(done_field "$WORK/digits-off" param_checksum)" = "$(done_field "$WORK/digits-on" param_checksum)" ] &&
  pass "digits: streamed and in-memory give the same param_checksum" || fail "digits: streamed and in-memory differ"
# A compressed file (tern-data convert deflates datasets over 1 MB): read through HDF5, slower,
# said in the log, and still the same numbers.
python3 -c "
import random
random.seed(5)
print(','.join(f'f{i}' for i in range(64)) + ',label')
for r in range(8000):
    k = r % 10
    print(','.join(f'{random.gauss(k * (i % 3), 1):.4f}' for i in range(64)) + f',{k}')" >"$WORK/wide.csv"
"$TERN_BIN/tern-data" convert --input "$WORK/wide.csv" --output "$WORK/deflated.h5" >/dev/null
for mode in off on; do
  "$TERN_BIN/tern-train" "${cfg[@]}" --data.path="$WORK/deflated.h5" --data.stream=$mode \
    --run.dir="$WORK/deflated-$mode" >"$WORK/deflated-$mode.log" 2>&1 || fail "compressed file, data.stream=$mode"
done
[ "$(done_field "$WORK/deflated-off" param_checksum)" = "$(done_field "$WORK/deflated-on" param_checksum)" ] &&
  pass "compressed file: streamed through HDF5 and in-memory give the same param_checksum" ||
  fail "compressed file: streamed and in-memory differ"
grep -q "not directly addressable (compressed" "$WORK/deflated-on.log" &&
  pass "the log says the compressed file streams slowly" ||
  fail "no word on the slow path: $(grep 'data: streaming' "$WORK/deflated-on.log")"
# A token corpus: windows read from the file (one or two preads each), the same numbers.
"$TERN_BIN/tern-data" text --input data/tinyshakespeare.txt --output "$WORK/tokens.h5" >/dev/null
for mode in off on; do
  launch 2 "$TERN_BIN/tern-train" --config configs/shakespeare_gpt.ini --data.path="$WORK/tokens.h5" \
    --train.steps=20 --train.eval_every=10 --run.progress=off --data.stream=$mode \
    --run.dir="$WORK/tokens-$mode" >"$WORK/tokens-$mode.log" 2>&1 || fail "tokens, data.stream=$mode"
done
for field in param_checksum val_loss; do
  a=$(done_field "$WORK/tokens-off" $field) b=$(done_field "$WORK/tokens-on" $field)
  [ "$a" = "$b" ] && pass "token corpus on 2 ranks: streamed and in-memory $field $a" ||
    fail "token corpus: $field streamed $b, in memory $a"
done
expect_exit 2 "data.stream" "$TERN_BIN/tern-train" "${cfg[@]}" --data.path="$WORK/small.h5" --data.stream=maybe

# ---- larger than memory ----
# A memory cgroup: v2 (a child of this process's own cgroup) or v1 (the memory hierarchy).
limit_mb=512
cgroup=""
own=$(sed -n 's/^0:://p' /proc/self/cgroup)
if grep -qw memory /sys/fs/cgroup/cgroup.controllers 2>/dev/null &&
  mkdir "/sys/fs/cgroup$own/tern-stream-$$" 2>/dev/null; then
  cgroup="/sys/fs/cgroup$own/tern-stream-$$"
  echo $((limit_mb << 20)) >"$cgroup/memory.max" && echo 0 >"$cgroup/memory.swap.max" 2>/dev/null || true
elif mkdir "/sys/fs/cgroup/memory/tern-stream-$$" 2>/dev/null; then
  cgroup="/sys/fs/cgroup/memory/tern-stream-$$"
  echo $((limit_mb << 20)) >"$cgroup/memory.limit_in_bytes"
  echo $((limit_mb << 20)) >"$cgroup/memory.memsw.limit_in_bytes" 2>/dev/null || true
fi
if [ -z "$cgroup" ]; then
  fail "no memory cgroup can be made here (cgroup v2 with the memory controller, or v1's memory hierarchy, writable): the larger-than-memory half did not run"
  finish
fi
trap 'rmdir "$cgroup" 2>/dev/null; rm -rf "$WORK"' EXIT
"$TERN_BIN/tern-data" synth --output "$WORK/big.h5" --size 1GB --features 784 --classes 10 >"$WORK/synth.log"
size_mb=$(($(stat -c %s "$WORK/big.h5") >> 20))
pass "$(cat "$WORK/synth.log") ($size_mb MiB, memory given: $limit_mb MiB)"
in_cgroup() { bash -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$cgroup" "$@"; }
wide=(--config bench/configs/wide_mlp.ini --data.path="$WORK/big.h5" --train.steps=150 --train.log_every=50
  --run.threads=1 --run.progress=off)
in_cgroup timeout 300 mpirun -np 2 --oversubscribe /usr/bin/time -f "peak_rss_kb %M" \
  "$TERN_BIN/tern-train" "${wide[@]}" --data.stream=on --run.dir="$WORK/big-on" >"$WORK/big-on.log" 2>&1 ||
  fail "streamed 1 GB file in $limit_mb MiB: $(tail -5 "$WORK/big-on.log")"
steps=$(done_field "$WORK/big-on" step 2>/dev/null || echo none)
[ "$steps" = 150 ] && pass "the $size_mb MiB file trained on 2 ranks in $limit_mb MiB of memory (150 steps)" ||
  fail "the streamed run did not finish: $(tail -5 "$WORK/big-on.log")"
rss=$(sed -n 's/^peak_rss_kb //p' "$WORK/big-on.log" | awk '{printf "%s%d", (NR > 1 ? " " : ""), $1 / 1024}')
worst=$(tr ' ' '\n' <<<"$rss" | sort -n | tail -1)
[ -n "$worst" ] && [ "$worst" -lt 220 ] && pass "peak resident memory per rank: $rss MiB (bound 220 MiB)" ||
  fail "peak resident memory per rank: ${rss:-unknown} MiB (bound 220 MiB)"
rc=0
in_cgroup timeout 300 "$TERN_BIN/tern-train" "${wide[@]}" --data.stream=off --run.dir="$WORK/big-off" \
  >"$WORK/big-off.log" 2>&1 || rc=$?
[ "$rc" != 0 ] && pass "the in-memory loader in the same $limit_mb MiB does not survive (exit $rc)" ||
  fail "the in-memory loader fit in $limit_mb MiB: the limit is not real"
finish
