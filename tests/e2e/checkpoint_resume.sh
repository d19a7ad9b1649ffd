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
# Every random choice of this test comes from one seed, printed first, so that a failing run can be
# replayed exactly (TERN_KILL_SEED=...); each choice is logged where it is made.
KILL_SEED=${TERN_KILL_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
echo "kill seed: $KILL_SEED (replay with TERN_KILL_SEED=$KILL_SEED)"
DRAWS=0
draw() {  # draw LO HI: sets RAND to the next number of the seeded sequence, in [LO, HI]
  RAND=$(python3 -c "import random; print(random.Random('$KILL_SEED-$DRAWS').randint($1, $2))")
  DRAWS=$((DRAWS + 1))
}
has_done() { grep -qs '"event":"done"' "$WORK/$1/metrics.jsonl"; }
# resumed_step NAME FROM_LINE: the step the run resumed from, in its log after line FROM_LINE
# ("resumed from URI/ckpt/step-... (step K, written by W rank(s))"); empty when it did not resume.
resumed_step() { tail -n +"$(($2 + 1))" "$WORK/$1.log" | sed -n 's/.*resumed from .* (step \([0-9]*\), written by.*/\1/p' | tail -1; }
lines() { wc -l <"$WORK/$1.log" 2>/dev/null || echo 0; }
# in_flight NAME: the store holds part of a checkpoint newer than its newest complete one (a shard
# without a manifest, or a local temp file): a checkpoint was being written when the run died.
in_flight() {
  "$TERN_BIN/tern-ckpt" list "$STORE/$1" 2>/dev/null |
    awk '/ complete$/ {newest = $1} /incomplete/ {last = $1} END {exit !(last > newest)}' && return 0
  [ -d "$STORE/$1" ] && [ -n "$(find "$STORE/$1" -name '*.tern-tmp.*' 2>/dev/null | head -1)" ]
}
# expect_mid_run_kill NAME RC FROM_LINE WHAT: the killed run (exit RC) had not finished, and its
# rerun (log after FROM_LINE) resumed from a step strictly inside the run.
expect_mid_run_kill() {
  local name=$1 rc=$2 from=$3 what=$4 k
  [ "$rc" != 0 ] || fail "$what: the killed run exited 0 (it had finished before the kill)"
  k=$(resumed_step "$name" "$from")
  if [ -n "$k" ] && [ "$k" -gt 0 ] && [ "$k" -lt "$steps" ]; then
    pass "$what: the rerun resumed from step $k (0 < $k < $steps)"
  else
    fail "$what: the rerun did not resume from a step inside the run (resumed: '${k:-none}')"
  fi
}

train 2 ref || fail "reference run failed: $(tail -3 "$WORK/ref.log")"
ref=$(checksum ref)
pass "reference: $steps steps on 2 ranks, param_checksum $ref"

# 1. Bit-exact resume: SIGKILL once step 500 is committed, resume, finish.
train 2 exact &
run=$!
wait_for_commit exact 500 || fail "no checkpoint of step 500 in time"
kill_all exact
wait "$run" && rc=0 || rc=$?
has_done exact && fail "the run meant to be killed at step 500 finished first"
from=$(lines exact)
train 2 exact || fail "resume after SIGKILL failed: $(tail -3 "$WORK/exact.log")"
expect_mid_run_kill exact "$rc" "$from" "SIGKILL after step 500"
[ "$(checksum exact)" = "$ref" ] && pass "k steps + SIGKILL + resume = straight run ($ref)" || fail "checksum $(checksum exact) != $ref"

# 2. SIGKILL at random moments: once a random checkpoint (step 50-2000 of 4000) has committed, a
#    random delay more (0-90 ms: a few checkpoint intervals). Each kill must land inside the run.
#    Whether it also caught a checkpoint being written is logged (on a local store a checkpoint of
#    this model takes microseconds to write; on S3, case 2b kills one in flight on purpose).
runs=${TERN_KILL_RUNS:-10}
caught=0
for i in $(seq "$runs"); do
  name=random$i
  draw 1 40; at=$((RAND * 50))
  draw 0 9; delay=0.0$RAND
  echo "kill $i: after the commit of step $at, then ${delay} s"
  train 2 "$name" &
  run=$!
  wait_for_commit "$name" "$at" || fail "kill $i: no checkpoint of step $at in time"
  sleep "$delay"
  kill_all "$name"
  wait "$run" && rc=0 || rc=$?
  if has_done "$name"; then
    fail "kill $i: the run finished before the kill (after step $at + ${delay} s)"
    continue
  fi
  mid=""
  in_flight "$name" && { mid=", a checkpoint was being written"; caught=$((caught + 1)); }
  complete=$("$TERN_BIN/tern-ckpt" list "$STORE/$name" 2>/dev/null | grep -c " complete$" || true)
  from=$(lines "$name")
  train 2 "$name" || { fail "kill $i: resume failed: $(tail -3 "$WORK/$name.log")"; continue; }
  expect_mid_run_kill "$name" "$rc" "$from" "kill $i ($complete complete checkpoint(s) at the kill$mid)"
  [ "$(checksum "$name")" = "$ref" ] && pass "kill $i: same checksum as the straight run" ||
    fail "kill $i: checksum $(checksum "$name") != $ref"
done
echo "random kills that caught a checkpoint being written: $caught of $runs"

if [ "$kind" = s3 ]; then
  # 2b. SIGKILL with an upload in flight, for certain: once a random checkpoint has committed,
  #     the S3 server answers every shard PUT with 503 SlowDown (its fault injection; manifests,
  #     listings and deletes go through), so the next checkpoint's shard uploads retry (the store
  #     logs each retry), and the run is killed while they do. The rerun, with the faults gone,
  #     resumes from the last committed checkpoint.
  name=midupload
  draw 2 30; at=$((RAND * 50))
  echo "mid-upload kill: shard uploads fail (503) after the commit of step $at"
  faults="$AWS_ENDPOINT_URL/__tern/faults"
  train 2 "$name" --checkpoint.retry_seconds=60 &
  run=$!
  wait_for_commit "$name" "$at" || fail "mid-upload: no checkpoint of step $at in time"
  before=$(lines "$name")
  curl -sf -X POST "$faults" -d '{"status": 503, "code": "SlowDown", "count": 1000000, "match": "/shard-", "method": "PUT"}' >/dev/null ||
    fail "mid-upload: the S3 server took no fault injection"
  # A retry of a shard's upload, logged after the faults were set ("S3 put .../shard-...:
  # ...; attempt N failed, retrying in ...").
  for _ in $(seq 600); do tail -n +"$((before + 1))" "$WORK/$name.log" | grep -q "shard-.*retrying" && break; sleep 0.05; done
  retry_line=$(tail -n +"$((before + 1))" "$WORK/$name.log" | grep -m1 -o "S3 .*shard-.*retrying" || true)
  kill_all "$name"
  wait "$run" && rc=0 || rc=$?
  curl -sf -X DELETE "$faults" >/dev/null || fail "mid-upload: the faults could not be cleared"
  [ -n "$retry_line" ] && pass "mid-upload: killed while the store retried a shard's upload: $(cut -c1-160 <<<"$retry_line")" ||
    fail "mid-upload: no shard upload was retrying when the run was killed"
  has_done "$name" && fail "mid-upload: the run finished before the kill"
  committed=$(grep -o "checkpoint step [0-9]* committed" "$WORK/$name.log" | tail -1 | grep -o "[0-9]*")
  from=$(lines "$name")
  train 2 "$name" --checkpoint.retry_seconds=60 || fail "mid-upload: resume failed: $(tail -3 "$WORK/$name.log")"
  expect_mid_run_kill "$name" "$rc" "$from" "mid-upload kill"
  [ "$(resumed_step "$name" "$from")" = "$committed" ] && pass "mid-upload: resumed from the last committed checkpoint (step $committed)" ||
    fail "mid-upload: resumed from $(resumed_step "$name" "$from"), the last commit was step $committed"
  [ "$(checksum "$name")" = "$ref" ] && pass "mid-upload: same checksum as the straight run" ||
    fail "mid-upload: checksum $(checksum "$name") != $ref"
fi

if [ "$kind" = local ]; then
  # 3. Elastic: save on 2 ranks (stopped by SIGUSR1 at a step boundary), resume on 3 and on 1.
  for np in 3 1; do
    name=elastic$np
    train 2 "$name" &
    run=$!
    # Late in the run: early on, at the peak learning rate, training amplifies float summation
    # differences (a W-rank and a W'-rank run are equal only up to them) far past 1e-5.
    draw 60 74; at=$((RAND * 50))
    echo "elastic $np: SIGUSR1 after the commit of step $at"
    wait_for_commit "$name" "$at" || fail "elastic $np: no checkpoint of step $at in time"
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
  draw 4 40; at=$((RAND * 50))
  draw 0 9; delay=0.0$RAND
  echo "preemption: SIGTERM after the commit of step $at, then ${delay} s"
  wait_for_commit "$name" "$at" || fail "preemption: no checkpoint of step $at in time"
  sleep "$delay"
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
  wait_for_commit "$name" 100 || fail "outage: no checkpoint of step 100 in time"
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
