#!/usr/bin/env bash
# Checkpoints survive SIGKILL, preemption and corruption, and resume exactly, also on another
# number of ranks. Usage: checkpoint_resume.sh local|s3 (s3 needs the moto server helper).
source "$(dirname "$0")/lib.sh"
kind=${1:-local}
source "$(dirname "$0")/store_env.sh" "$kind"
data="$WORK/digits.h5"
"$TERN_BIN/tern-data" convert --input data/digits.csv --output "$data" >/dev/null
steps=4000
common=(--config configs/digits_mlp.ini --data.path="$data" --train.steps=$steps
        --checkpoint.every_steps=50 --train.eval_every=0 --train.log_every=100 --run.progress=off)
train() {  # train NP NAME [extra args]: a run writing checkpoints under $STORE/NAME, log in $WORK/NAME.log
  local np=$1 name=$2
  shift 2
  launch "$np" "$TERN_BIN/tern-train" "${common[@]}" --checkpoint.uri="$STORE/$name" --run.dir="$WORK/$name" "$@" \
    >>"$WORK/$name.log" 2>&1
}
kill_all() {  # SIGKILL every process of a run, ranks first
  pkill -9 -f "run.dir=$WORK/$1\b" 2>/dev/null || true
  sleep 0.2
}
checksum() { done_field "$WORK/$1" param_checksum; }
# wait_for_commit NAME STEP: until the run has committed a checkpoint at STEP or later (the
# machine's speed varies too much for fixed delays; progress does not). Returns 1 on timeout.
wait_for_commit() {
  for _ in $(seq 1200); do
    grep -o "checkpoint step [0-9]* committed" "$WORK/$1.log" 2>/dev/null | awk -v s="$2" '$3 >= s {f=1} END {exit !f}' && return 0
    sleep 0.05
  done
  return 1
}
random_between() { python3 -c "import random; print(random.randint($1, $2))"; }

train 2 ref || fail "reference run failed: $(tail -3 "$WORK/ref.log")"
ref=$(checksum ref)
pass "reference: $steps steps on 2 ranks, param_checksum $ref"

# 1. Bit-exact resume: SIGKILL once step 500 is committed, resume, finish.
train 2 exact &
run=$!
wait_for_commit exact 500 || fail "no checkpoint of step 500 in time"
kill_all exact
wait "$run" || true
train 2 exact || fail "resume after SIGKILL failed: $(tail -3 "$WORK/exact.log")"
grep -q "resumed from" "$WORK/exact.log" && pass "resumed after SIGKILL: $(grep -o 'resumed from [^ ]*' "$WORK/exact.log" | tail -1)" || fail "no resume after SIGKILL"
[ "$(checksum exact)" = "$ref" ] && pass "k steps + SIGKILL + resume = straight run ($ref)" || fail "checksum $(checksum exact) != $ref"

# 2. SIGKILL at random moments, also during uploads: after a random checkpoint, a random delay
#    more (shorter than the time between checkpoints, so it often falls inside an upload).
runs=${TERN_KILL_RUNS:-10}
for i in $(seq "$runs"); do
  name=random$i
  train 2 "$name" &
  run=$!
  wait_for_commit "$name" $(( $(random_between 0 60) * 50 )) || true
  sleep "0.0$(random_between 0 9)"
  kill_all "$name"
  wait "$run" || true
  complete=$("$TERN_BIN/tern-ckpt" list "$STORE/$name" 2>/dev/null | grep -c " complete$" || true)
  train 2 "$name" || { fail "run $i: resume failed: $(tail -3 "$WORK/$name.log")"; continue; }
  from=$(grep -o 'resumed from [^ ]*' "$WORK/$name.log" | tail -1 || true)
  if [ "$(checksum "$name")" = "$ref" ]; then
    pass "kill $i: ${from:-started over (killed before the first checkpoint)}, $complete complete checkpoint(s) at the kill, same checksum"
  else
    fail "kill $i: checksum $(checksum "$name") != $ref (${from:-no resume})"
  fi
done

if [ "$kind" = local ]; then
  # 3. Elastic: save on 2 ranks (stopped by SIGUSR1 at a step boundary), resume on 3 and on 1.
  for np in 3 1; do
    name=elastic$np
    train 2 "$name" &
    run=$!
    # Late in the run: early on, at the peak learning rate, training amplifies float summation
    # differences (a W-rank and a W'-rank run are equal only up to them) far past 1e-5.
    wait_for_commit "$name" $(( $(random_between 60 74) * 50 )) || true
    pkill -USR1 -f "mpirun.*run.dir=$WORK/$name\b" 2>/dev/null || true
    wait "$run" && rc=0 || rc=$?
    [ "$rc" = 75 ] && pass "2 ranks stopped by SIGUSR1, exit 75" || fail "SIGUSR1 run exited $rc"
    stopped=$(python3 -c "import json,sys; print([json.loads(l) for l in open(sys.argv[1])][-1].get('step'))" "$WORK/$name/metrics.jsonl")
    train "$np" "$name" || fail "resume on $np ranks failed: $(tail -3 "$WORK/$name.log")"
    grep -q "step $stopped, written by 2 rank(s)" "$WORK/$name.log" && pass "resumed on $np rank(s) at step $stopped" || fail "resume on $np ranks not from step $stopped"
    dist=$("$TERN_BIN/tern-ckpt" compare "$STORE/$name" "$STORE/ref" | sed 's/.*relative distance \([^,]*\),.*/\1/')
    python3 -c "import sys; sys.exit(0 if float('$dist') < 1e-5 else 1)" && pass "2 -> $np ranks: relative distance $dist < 1e-5" || fail "2 -> $np ranks: relative distance $dist"
  done

  # 4. Preemption: SIGTERM to the mpirun wrapper -> checkpoint at a step boundary, exit 75; the
  #    restarted job resumes from exactly that step and ends where the straight run ends.
  name=preempt
  launch/run-local.sh 2 "${common[@]}" --checkpoint.uri="$STORE/$name" --run.dir="$WORK/$name" >>"$WORK/$name.log" 2>&1 &
  wrapper=$!
  wait_for_commit "$name" $(( $(random_between 4 40) * 50 )) || true
  sleep 0.0$(random_between 0 9)
  kill -TERM "$wrapper"
  wait "$wrapper" && rc=0 || rc=$?
  [ "$rc" = 75 ] && pass "SIGTERM to launch/run-local.sh: exit 75" || fail "preempted run exited $rc"
  stopped=$(python3 -c "import json,sys; r=[json.loads(l) for l in open(sys.argv[1])]; p=[x for x in r if x.get('event')=='preempted'][-1]; print(p['step'] if p['checkpoint'] else -1)" "$WORK/$name/metrics.jsonl")
  [ "$stopped" -gt 0 ] && pass "checkpoint of step $stopped committed at preemption" || fail "no checkpoint at preemption"
  train 2 "$name" || fail "restart after preemption failed"
  resumed=$(python3 -c "import json,sys; print([json.loads(l) for l in open(sys.argv[1]) if 'resume' in l][-1]['step'])" "$WORK/$name/metrics.jsonl")
  [ "$resumed" = "$stopped" ] && pass "restart resumed from step $resumed exactly" || fail "restart resumed from $resumed, expected $stopped"
  [ "$(checksum "$name")" = "$ref" ] && pass "preempted + resumed = straight run" || fail "preempted run checksum differs"

  # 5. A flipped byte in the newest checkpoint: detected, skipped with a warning, the one before loaded.
  shard="$STORE/ref/ckpt/step-$(printf %08d $steps)/shard-00001-of-00002.bin"
  python3 -c "import sys; p=sys.argv[1]; b=bytearray(open(p,'rb').read()); b[1234]^=0x40; open(p,'wb').write(b)" "$shard"
  "$TERN_BIN/tern-ckpt" verify "$STORE/ref" >"$WORK/verify.log" 2>&1 && fail "verify missed the flipped byte" || pass "tern-ckpt verify: $(cat "$WORK/verify.log")"
  train 2 ref || fail "run after corruption failed"
  grep -q "checkpoint ckpt/step-$(printf %08d $steps) is unusable: .*checksum mismatch" "$WORK/ref.log" && pass "corrupt checkpoint named in a warning" || fail "no warning naming the corrupt checkpoint"
  grep -q "resumed from .*step-$(printf %08d $((steps - 50)))" "$WORK/ref.log" && pass "fell back to step $((steps - 50))" || fail "did not fall back to the previous checkpoint"
  [ "$(checksum ref)" = "$ref" ] && pass "retrained the last 50 steps to the same parameters" || fail "checksum after fallback differs"
fi
if [ "$kind" = s3 ]; then
  # 6. The S3 server goes down during training: the save in flight retries, then is reported
  #    failed with no manifest; training goes on; the next save succeeds once the server is back.
  name=fault
  train 2 "$name" --checkpoint.retry_seconds=2 &
  run=$!
  wait_for_commit "$name" 100 || true
  kill -USR1 "$S3_SERVER_PID"  # stop listening, cut open connections
  for _ in $(seq 600); do grep -q "checkpoint step [0-9]* failed" "$WORK/$name.log" && break; sleep 0.05; done
  kill -USR2 "$S3_SERVER_PID"  # listen again, objects intact
  wait "$run" && rc=0 || rc=$?
  failed=$(grep -o "checkpoint step [0-9]* failed" "$WORK/$name.log" | head -1 | grep -o "[0-9]*" || true)
  [ -n "$failed" ] && pass "server down: checkpoint step $failed reported failed: $(grep -m1 -o "checkpoint step $failed failed.*" "$WORK/$name.log" | cut -c1-140)" || fail "no failed checkpoint reported"
  grep -q "retry" "$WORK/$name.log" && pass "the store retried before giving up" || fail "no retries logged"
  later=$(grep -o "checkpoint step [0-9]* committed" "$WORK/$name.log" | grep -o "[0-9]*" | awk -v f="${failed:-0}" '$1 > f' | head -1)
  [ -n "$later" ] && pass "the next checkpoint (step $later) committed once the server was back" || fail "no checkpoint committed after the failure"
  [ "$rc" = 0 ] && [ "$(checksum "$name")" = "$ref" ] && pass "training went on to the end with the same parameters" || fail "run after the outage: rc $rc"
  "$TERN_BIN/tern-ckpt" list "$STORE/$name" | grep -q "^ *$failed .*complete$" && fail "step $failed has a manifest" || pass "step $failed has no manifest"
fi
finish
