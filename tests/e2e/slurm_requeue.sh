#!/usr/bin/env bash
# Preemption on a real Slurm cluster: slurm/train.sbatch gets SIGUSR1 in its batch shell (as from
# --signal=B:USR1@120 near the time limit; here scancel --batch), the ranks checkpoint and exit 75,
# the batch shell requeues the job, and the requeued job resumes from exactly that checkpoint and
# finishes. Starts a one-node cluster (slurm_cluster.sh) and stops it at exit; exit 77 (skip) when
# Slurm cannot be installed. Run from the repository root.
#   slurm_requeue.sh [multinode]: with "multinode", slurm/train-multinode.sbatch on this one node.
source "$(dirname "$0")/lib.sh"
if [ "${1:-}" = multinode ]; then
  script=(--nodes=1 --ntasks-per-node=2 slurm/train-multinode.sbatch)
else
  script=(--ntasks=2 slurm/train.sbatch)
fi
here=$(cd "$(dirname "$0")" && pwd)
TERN_BIN=$(cd "$TERN_BIN" && pwd)  # the job runs in the submit dir; absolute is safer
export TERN_BIN
# ~2000-5000 steps/s on 2 ranks here, a few hundred when the machine is busy: the first attempt is
# still running when its first checkpoint (step 200) appears, the second finishes within a minute.
steps=20000
job="" cluster=""
cleanup() {
  [ -n "$job" ] && scancel "$job" 2>/dev/null
  [ -n "$cluster" ] && bash "$here/slurm_cluster.sh" stop >/dev/null 2>&1
  rm -rf "$WORK"
}
trap cleanup EXIT
dump() {
  {
    echo "---- job output" && cat "$WORK/job.out"
    echo "---- scontrol show job $job" && scontrol show job "$job"
    echo "---- metrics.jsonl (events)" && grep event "$WORK/run/metrics.jsonl"
    echo "---- slurmctld.log" && tail -25 /var/log/tern-slurm/slurmctld.log
    echo "---- slurmd.log" && tail -25 /var/log/tern-slurm/slurmd-localhost.log
  } >&2 || true
}
die() { fail "$*"; dump; exit 1; }
# field NAME: a field of `scontrol show job` (JobState, Restarts, Reason, ExitCode, ...)
field() { scontrol show job "$job" 2>/dev/null | grep -o "\b$1=[^ ]*" | head -1 | cut -d= -f2 || true; }
state_is() { [[ " $* " == *" $(field JobState) "* ]]; }
# wait_until SECONDS WHAT CMD...: poll CMD every 0.2 s; give up (and dump the logs) after SECONDS.
wait_until() {
  local limit=$1 what=$2 deadline=$((SECONDS + $1))
  shift 2
  until "$@"; do
    [ $SECONDS -lt $deadline ] || die "timed out after ${limit}s waiting for $what (JobState=$(field JobState))"
    sleep 0.2
  done
}
event() {  # event NAME FIELD: FIELD of the last metrics.jsonl record with "event": NAME
  python3 -c 'import json,sys
r=[json.loads(l) for l in open(sys.argv[1]) if l.strip()]
e=[x for x in r if x.get("event")==sys.argv[2]]
print(e[-1][sys.argv[3]] if e else "none")' "$WORK/run/metrics.jsonl" "$1" "$2"
}

t0=$SECONDS
cluster=1
rc=0
bash "$here/slurm_cluster.sh" start >"$WORK/cluster.log" 2>&1 || rc=$?
if [ $rc = 77 ]; then
  cluster=""
  tail -1 "$WORK/cluster.log"
  exit 77
fi
[ $rc = 0 ] || { cat "$WORK/cluster.log" >&2; die "slurm_cluster.sh start exited $rc"; }
pass "one-node Slurm cluster up in $((SECONDS - t0))s: $(sinfo -h -o '%P %a %D %t %N')"

"$TERN_BIN/tern-data" convert --input data/digits.csv --output "$WORK/digits.h5" >/dev/null
# Checkpoints through TERN_CHECKPOINT_URI, the run dir through a command-line key: both overrides.
t1=$SECONDS
job=$(TERN_CHECKPOINT_URI="$WORK/ckpt" sbatch --parsable --output="$WORK/job.out" \
  --job-name=tern-requeue-test "${script[@]}" configs/digits_mlp.ini \
  --data.path="$WORK/digits.h5" --run.dir="$WORK/run" --train.steps=$steps \
  --checkpoint.every_steps=200 --train.eval_every=0 --train.log_every=100 --run.progress=off) ||
  die "sbatch failed"
pass "submitted job $job: ${script[*]}"
wait_until 60 "job $job to run" state_is RUNNING COMPLETED FAILED CANCELLED
first_ckpt() {
  state_is RUNNING || die "job left RUNNING before its first checkpoint"
  compgen -G "$WORK/ckpt/ckpt/step-*/MANIFEST.json" >/dev/null  # a manifest = a complete checkpoint
}
wait_until 60 "the first checkpoint" first_ckpt
pass "job running; a checkpoint complete $((SECONDS - t1))s after submission (newest: step $("$TERN_BIN/tern-ckpt" list "$WORK/ckpt" | grep complete | tail -1 | awk "{print \$1}"))"

# What Slurm does at --signal=B:USR1@120: signal the batch shell only.
scancel --batch --signal=USR1 "$job" || die "scancel --batch --signal=USR1 failed"
restarted() { [ "$(field Restarts)" = 1 ]; }
wait_until 60 "the requeue (Restarts=1)" restarted
pass "requeued after $((SECONDS - t1))s: Restarts=1, JobState=$(field JobState), Reason=$(field Reason)"
grep -q "batch shell got SIGUSR1; forwarding" "$WORK/job.out" && pass "batch shell trapped SIGUSR1 and forwarded it" || fail "no forwarding in the job output"
pre=$(grep -o "preempted (SIGUSR1): checkpoint of step [0-9]* committed; exiting with 75" "$WORK/job.out" || true)
[ -n "$pre" ] && pass "ranks: $pre" || fail "no preemption message in the job output"
grep -q "tern: exit 75 (preempted, checkpoint committed): scontrol requeue $job" "$WORK/job.out" && pass "batch shell saw exit 75 and requeued job $job" || fail "no exit 75 / requeue in the job output"
stopped=$(event preempted step)
[ "$(event preempted checkpoint)" = True ] && pass "metrics: preempted at step $stopped with a checkpoint" || fail "metrics: preempted record $stopped without a checkpoint"

# Slurm 22.05 gives a requeued batch job a begin time ~2 minutes ahead (JobState=PENDING,
# Reason=BeginTime); make it eligible now rather than wait. But not at once: the requeue revoked
# the job's credential, and a launch in the same second is refused ("Job credential revoked",
# the job ends FAILED), as slurmd compares whole seconds. Two seconds later it is reissued.
wait_until 30 "the requeued job to be pending or running" state_is PENDING RUNNING COMPLETED
sleep 2
if state_is PENDING; then
  echo "   requeued job: Reason=$(field Reason), EligibleTime=$(field EligibleTime) (now $(date +%FT%T)); releasing"
  scontrol update jobid="$job" StartTime=now || state_is RUNNING COMPLETED ||
    die "scontrol update jobid=$job StartTime=now failed"
fi
t2=$SECONDS
wait_until 180 "the second attempt to finish" state_is COMPLETED FAILED CANCELLED
[ "$(field JobState)" = COMPLETED ] && [ "$(field ExitCode)" = 0:0 ] &&
  pass "second attempt COMPLETED (ExitCode 0:0) $((SECONDS - t2))s after the release" ||
  fail "second attempt: JobState=$(field JobState) ExitCode=$(field ExitCode)"
grep -q "tern: job $job attempt 2 " "$WORK/job.out" && pass "attempt 2 logged to the same (appended) output" || fail "no attempt 2 in the job output"
resumed=$(event resume step)
[ "$resumed" = "$stopped" ] && pass "metrics: resumed at step $resumed = the preemption step" || fail "resumed at step $resumed, preempted at $stopped"
from="resumed from file://$WORK/ckpt/ckpt/step-$(printf %08d "$stopped") (step $stopped, written by 2 rank(s))"
grep -qF "$from" "$WORK/job.out" && pass "log: $from" || fail "no '$from' in the job output"
[ "$(event "done" step)" = $steps ] && pass "metrics: done at step $steps, val_accuracy $(event "done" val_accuracy)" || fail "no done record at step $steps"
echo "   total $((SECONDS - t0))s"
[ "$failures" = 0 ] || dump
finish
