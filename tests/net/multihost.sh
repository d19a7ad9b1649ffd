#!/usr/bin/env bash
# Multi-host runs on test hosts (tests/net/hosts.sh): tests/net/multihost.sh invariant|faults|spot
#
# invariant: 2 ranks over 2 hosts and 4 ranks over 2 hosts against 1 rank (same loss and
#            parameters within float tolerance), two 2-rank runs bit-identical; checkpoints on
#            the store host's S3 server.
# faults:    under launch/run-elastic.sh, mid-run: SIGKILL of a rank, SIGSTOP of a rank, one
#            host's link down, 30% loss on one host's link. The job ends (or, for loss, goes on)
#            within dist.timeout_seconds + 10 s, naming the rank; no process is left on the
#            hosts; the launcher resumes on the hosts that answer and finishes; the result equals
#            the uninterrupted run (bit-identical on the same ranks, within the elastic-resume
#            tolerance on fewer). Then growth: with h2 back after a link down, the job on h1
#            checkpoints and stops, and the launcher relaunches it on both hosts.
# spot:      an EC2 metadata endpoint on host h2 announces an interruption: the ranks save, exit
#            75, and the launcher resumes on h1 alone, not counting it as a failure.
# slurm:     slurmctld here and a slurmd on each host (tests/e2e/slurm_cluster.sh); two 2-node
#            jobs of slurm/train-multinode.sbatch, h2 cut off mid-run in one, set DOWN by
#            scontrol in the other: the job goes on within its allocation on h1, resumes from the
#            newest checkpoint and finishes within the elastic-resume tolerance of the
#            uninterrupted run.
# Run from the repository root, as root (namespaces). Needs iproute2, iputils-ping, nftables
# (loss without the kernel's netem) and the Python test env (moto): tests/require.sh.
set -euo pipefail
source tests/e2e/lib.sh
what=${1:?usage: multihost.sh invariant|faults|spot|slurm}
[ "$(id -u)" = 0 ] || missing_component "needs root for network namespaces"
for tool in ip ping nft unshare; do
  command -v "$tool" >/dev/null || missing_component "$tool is not installed (iproute2, iputils-ping, nftables, util-linux)"
done
[ "${TERN_HAVE_MPI:-ON}" = ON ] || [ "${TERN_HAVE_MPI:-}" = TRUE ] || [ "${TERN_HAVE_MPI:-}" = 1 ] ||
  missing_component "tern was built without MPI"
[ -n "${TERN_TEST_PYTHON:-}" ] || missing_component "TERN_TEST_PYTHON is not set (launch/test.sh sets it up): no S3 server"
nets=tests/net/hosts.sh
timeout=10

cleanup() {
  [ "$what" = slurm ] && bash tests/e2e/slurm_cluster.sh stop >/dev/null 2>&1
  "$nets" down >/dev/null 2>&1 || true
  # The runs' logs outlive a failed test when TERN_TEST_LOGS names a folder.
  if [ "$failures" -gt 0 ] && [ -n "${TERN_TEST_LOGS:-}" ]; then
    mkdir -p "$TERN_TEST_LOGS" && cp "$WORK"/*.log "$TERN_TEST_LOGS"/ 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
"$nets" up 2
eval "$("$nets" mpi-env)"

# The store host: moto's S3 server, reached by every rank over the links.
"$nets" exec store "$TERN_TEST_PYTHON" tests/store/s3_server.py --host "$("$nets" addr store)" \
  --port 9000 --port-file "$WORK/s3.port" >"$WORK/s3.log" 2>&1 &
for _ in $(seq 600); do [ -s "$WORK/s3.port" ] && break; sleep 0.1; done
[ -s "$WORK/s3.port" ] || { cat "$WORK/s3.log" >&2; fail "the S3 server on the store host did not start"; finish; }
export AWS_ENDPOINT_URL="http://$("$nets" addr store):9000" AWS_ACCESS_KEY_ID=testing \
  AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1
"$TERN_TEST_PYTHON" -c "import boto3; boto3.client('s3').create_bucket(Bucket='tern-net')"

config=(--config configs/digits_mlp.ini --run.progress=off --train.log_every=10)
done_of() { done_field "$WORK/$1" "$2"; }
distance() {  # relative distance between two checkpoint stores' newest checkpoints
  "$TERN_BIN/tern-ckpt" compare "$1" "$2" | sed 's/.*relative distance \([^,]*\),.*/\1/'
}
below() { python3 -c "import sys; sys.exit(0 if abs(float('$1')) <= float('$2') else 1)"; }
# near_base NAME WHAT [BASE]: NAME's newest checkpoint within the elastic-resume tolerance (1e-3
# relative, docs/checkpoints.md: another world size sums in another order) of the uninterrupted
# run's (BASE, default base).
near_base() {
  local d
  d=$(distance "s3://tern-net/$1" "s3://tern-net/${3:-base}")
  below "$d" 1e-3 && pass "$1: $2: within $d (relative) of the uninterrupted run" ||
    fail "$1: relative distance $d from the uninterrupted run"
}
# ranks NP HOSTS NAME ARGS...: NP ranks spread over HOSTS ("h1 h2") with mpirun.
ranks() {
  local np=$1 hosts=$2 name=$3 slots
  shift 3
  read -ra hs <<<"$hosts"
  slots=$((np / ${#hs[@]}))
  "$nets" hostfile "$slots" "${hs[@]}" >"$WORK/$name.hosts"
  mpirun -np "$np" --hostfile "$WORK/$name.hosts" --bind-to none "$TERN_BIN/tern-train" \
    "${config[@]}" --run.dir="$WORK/$name" --checkpoint.uri="s3://tern-net/$name" "$@" \
    >"$WORK/$name.log" 2>&1 || { fail "$name: mpirun exited $?: $(tail -5 "$WORK/$name.log")"; return 1; }
}
left_on_hosts() {  # [HOST]: processes still running in the test hosts' namespaces (zombies aside)
  local ns pid
  for ns in ${1:-tern-h1 tern-h2}; do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do
      [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" = Z ] && continue
      echo "$ns:$pid:$(cat "/proc/$pid/comm" 2>/dev/null)"
    done
  done
}
# gone_by EPOCH [HOST]: until nothing runs on the hosts (or HOST), by EPOCH at the latest; prints
# what is left then. A rank whose host daemon went first ends by its own watchdog, a timeout
# after the fault: the bound, not the moment the relaunched run finished, is what counts.
gone_by() {
  local left
  while left=$(left_on_hosts "${2:-}"); [ -n "$left" ] && awk -v t="$1" -v n="$(now)" 'BEGIN {exit !(n < t)}'; do sleep 0.5; done
  echo "$left"
}

invariant() {
  # Short enough that the order of the sums (W-dependent) stays at float rounding: later in this
  # schedule one unit's ReLU can flip on such a difference, and the runs part at ~1e-3 (as
  # between PyTorch runs on different numbers of GPUs; docs/checkpoints.md).
  local steps=(--train.steps=80 --checkpoint.every_steps=40)
  "$TERN_BIN/tern-train" "${config[@]}" "${steps[@]}" --run.dir="$WORK/one" \
    --checkpoint.uri="s3://tern-net/one" >"$WORK/one.log" 2>&1 || fail "1 rank: $(tail -3 "$WORK/one.log")"
  ranks 2 "h1 h2" two-a "${steps[@]}"
  ranks 2 "h1 h2" two-b "${steps[@]}"
  ranks 4 "h1 h2" four "${steps[@]}"
  grep -q "4 rank(s), 2 on this node" "$WORK/four.log" && pass "4 ranks ran 2 per host" ||
    fail "4 ranks were not 2 per host: $(head -2 "$WORK/four.log")"
  [ "$(done_of two-a param_checksum)" = "$(done_of two-b param_checksum)" ] &&
    pass "two 2-rank runs over 2 hosts bit-identical ($(done_of two-a param_checksum))" ||
    fail "2-rank runs differ: $(done_of two-a param_checksum) vs $(done_of two-b param_checksum)"
  local l1 d
  l1=$(done_of one train_loss)
  for w in two-a four; do
    d=$(python3 -c "print(abs($(done_of $w train_loss) - $l1) / $l1)")
    below "$d" 1e-5 && pass "$w: train loss within $d (relative) of 1 rank" ||
      fail "$w: train loss $(done_of $w train_loss) vs 1 rank $l1"
    d=$(distance "s3://tern-net/$w" "s3://tern-net/one")
    below "$d" 1e-5 && pass "$w: parameters within $d (relative) of 1 rank, checkpoints on the store host" ||
      fail "$w: parameters $d from 1 rank"
  done
}

# elastic NAME ARGS...: the launcher in the background over h1 and h2 (2 ranks each); sets ELASTIC.
# GROW_SECONDS (default 0: never) is how often it probes a host left out; ELASTIC_TIMEOUT the
# job's dist.timeout_seconds (default $timeout).
elastic() {
  local name=$1
  shift
  # Both hosts answer first (a link just set up again may take a moment).
  for _ in $(seq 50); do "$nets" probe h1 && "$nets" probe h2 && break; sleep 0.2; done
  launch/run-elastic.sh --hosts "h1 h2" --slots 2 --probe "$nets probe" \
    --timeout-seconds "${ELASTIC_TIMEOUT:-$timeout}" \
    --grow-seconds "${GROW_SECONDS:-0}" --max-failures 2 -- "${config[@]}" --run.dir="$WORK/$name" \
    --checkpoint.uri="s3://tern-net/$name" "$@" >"$WORK/$name.log" 2>&1 &
  ELASTIC=$!
}
wait_step() {  # wait_step NAME STEP: until the run log of NAME reaches STEP (60 s at most)
  for _ in $(seq 600); do
    python3 - "$WORK/$1/metrics.jsonl" "$2" 2>/dev/null <<'EOF' && return 0
import json, sys
steps = [json.loads(l).get("step", 0) for l in open(sys.argv[1])]
sys.exit(0 if max(steps) >= int(sys.argv[2]) else 1)
EOF
    sleep 0.1
  done
  fail "$1 did not reach step $2: $(tail -5 "$WORK/$1.log")"
  return 1
}
rank_pid() {  # rank_pid HOST: a tern-train process running on HOST
  local pid
  for pid in $(ip netns pids "tern-$1"); do
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = tern-train ] && { echo "$pid"; return 0; }
  done
  return 1
}
now() { date +%s.%N; }
later() { awk -v a="$1" -v d="$2" 'BEGIN {printf "%.1f", a + d}'; }
since() { awk -v a="$1" -v b="${2:-$(now)}" 'BEGIN {printf "%.1f", b - a}'; }
wait_line() {  # wait_line NAME PATTERN SECONDS: until NAME's log has PATTERN; prints the time
  local deadline=$((SECONDS + $3))
  until grep -qE "$2" "$WORK/$1.log"; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.1
  done
  now
}

faults() {
  local steps=(--train.steps=500 --checkpoint.every_steps=50)
  ranks 4 "h1 h2" base "${steps[@]}"
  local want
  want=$(done_of base param_checksum)
  for fault in ${TERN_TEST_FAULTS:-kill stop link loss}; do
    [ "$fault" = grow ] && continue
    # Under 30% loss TCP's retransmission backoff alone can hold a heartbeat back for more than
    # 10 s (six losses in a row: 0.2 + 0.4 + ... + 6.4 s); a job on such a link is given a longer
    # timeout than the faults that do kill (production's default is 600 s), and the loss lasts
    # longer than their timeout.
    if [ "$fault" = loss ]; then
      ELASTIC_TIMEOUT=$((3 * timeout)) elastic "$fault" "${steps[@]}"
    else
      elastic "$fault" "${steps[@]}"
    fi
    wait_step "$fault" 150 || { kill "$ELASTIC"; continue; }
    grep -q "attempt 1: 4 rank(s) on 2 of 2 host(s)" "$WORK/$fault.log" ||
      fail "$fault: the first attempt was not 4 ranks on 2 hosts: $(grep attempt "$WORK/$fault.log")"
    local t0 pid
    t0=$(now)
    case $fault in
      kill) pid=$(rank_pid h2) && kill -KILL "$pid" ;;
      stop) pid=$(rank_pid h2) && kill -STOP "$pid" ;;
      link) "$nets" link h2 down ;;
      loss) "$nets" shape h2 --loss 30 ;;
    esac
    if [ "$fault" = loss ]; then
      # As long as a timeout and more: the job must go on, slower, without being declared lost.
      sleep $((timeout + 5))
      "$nets" shape h2 --clear
    else
      local t_end
      t_end=$(wait_line "$fault" "the job failed" $((timeout + 30))) ||
        { fail "$fault: the job did not end within $((timeout + 30)) s: $(tail -20 "$WORK/$fault.log")"; kill "$ELASTIC" 2>/dev/null; continue; }
      below "$(since "$t0" "$t_end")" $((timeout + 10)) &&
        pass "$fault: the job ended $(since "$t0" "$t_end") s after the fault (limit $((timeout + 10)) s)" ||
        fail "$fault: the job ended $(since "$t0" "$t_end") s after the fault"
      # SIGKILL: mpirun sees the process end and names it; otherwise the ranks' watchdog does.
      # (or, for a link down, Open MPI's keepalive may find the daemon lost first: the launcher
      # then names the ranks that were on the host).
      local names='watchdog: rank [0-9]+ \(host h2, pid [0-9]+\)[^;]*'
      [ "$fault" = link ] && names="$names|ranks 2-3 \\(host h2\\) stopped answering"
      [ "$fault" = kill ] && names='process rank [0-9]+ with PID [0-9]+ on node h2 exited[^.]*'
      if grep -qE "$names" "$WORK/$fault.log"; then
        pass "$fault: the failure names the rank: $(grep -ohE "$names" "$WORK/$fault.log" | head -1)"
      else
        fail "$fault: no message names the lost rank: $(grep -iE "error|noticed|lost" "$WORK/$fault.log" | head -5)"
      fi
      local t_again
      t_again=$(sed -n 's/.*training again .* (at \([0-9.]*\))/\1/p' "$WORK/$fault.log" | head -1)
      [ -z "$t_again" ] && t_again=$(wait_line "$fault" "training again" 60 >/dev/null &&
        sed -n 's/.*training again .* (at \([0-9.]*\))/\1/p' "$WORK/$fault.log" | head -1)
      if [ -n "$t_again" ]; then
        below "$(since "$t0" "$t_again")" 30 &&
          pass "$fault: training again $(since "$t0" "$t_again") s after the fault (goal < 30 s)" ||
          fail "$fault: training again only $(since "$t0" "$t_again") s after the fault (goal < 30 s)"
      else
        fail "$fault: the launcher never trained again: $(grep run-elastic "$WORK/$fault.log")"
      fi
      [ "$fault" != stop ] || kill -CONT "$pid" 2>/dev/null || true
      if [ "$fault" = link ]; then
        # Still cut off: whatever ran on h2 must have ended by itself (the watchdog's exit, and
        # Open MPI's daemon there with it), without the link coming back.
        local left
        left=$(gone_by "$(later "$t0" $((timeout + 10)))" tern-h2)
        [ -z "$left" ] && pass "link: nothing left running on the cut-off host" ||
          fail "link: still running on the cut-off host h2: $left"
      fi
    fi
    local rc=0
    wait "$ELASTIC" || rc=$?
    [ "$fault" != link ] || "$nets" link h2 up
    [ "$rc" = 0 ] && pass "$fault: the launcher finished the run" ||
      { fail "$fault: the launcher exited $rc: $(tail -8 "$WORK/$fault.log")"; continue; }
    local left
    left=$(gone_by "$(later "$t0" $((timeout + 10)))")
    [ -z "$left" ] && pass "$fault: no process left on the hosts $((timeout + 10)) s after the fault" ||
      fail "$fault: left behind $((timeout + 10)) s after the fault: $left"
    case $fault in
      loss)
        grep -q "the job failed" "$WORK/$fault.log" && fail "loss: the job was declared failed under 30% loss" ||
          pass "loss: 30% loss on h2 for $((timeout + 5)) s: the job went on, no failure declared"
        [ "$(done_of $fault param_checksum)" = "$want" ] && pass "loss: bit-identical to the uninterrupted run" ||
          fail "loss: param_checksum $(done_of $fault param_checksum), uninterrupted $want"
        ;;
      link)
        grep -q "attempt 2: 2 rank(s) on 1 of 2 host(s): h1" "$WORK/$fault.log" &&
          pass "link: resumed on the survivor (2 ranks on h1)" ||
          fail "link: not resumed on h1 alone: $(grep 'attempt' "$WORK/$fault.log")"
        near_base link "4 -> 2 ranks"
        ;;
      *)
        [ "$(done_of $fault param_checksum)" = "$want" ] &&
          pass "$fault: resumed on 4 ranks, bit-identical to the uninterrupted run" ||
          fail "$fault: param_checksum $(done_of $fault param_checksum), uninterrupted $want"
        ;;
    esac
  done
  [[ " ${TERN_TEST_FAULTS:-grow} " == *" grow "* ]] && grow
}

# After a link down the job goes on with h1 alone; when h2 answers again the launcher asks that
# job to checkpoint and stop (exit 75, not a failure) and relaunches on both. A checkpoint every
# other step slows the 2-rank attempt (its steps take well under a millisecond), and the schedule
# is long enough that it is still running when h2 comes back, after the watchdog has ended what
# was left on h2 (some 20 s); its uninterrupted run is `grow-base`.
grow() {
  local steps=(--train.steps=1500 --checkpoint.every_steps=2)
  ranks 4 "h1 h2" grow-base --train.steps=1500 --checkpoint.every_steps=500
  GROW_SECONDS=1 elastic grow "${steps[@]}"
  wait_step grow 150 || { kill "$ELASTIC"; return; }
  "$nets" link h2 down
  wait_line grow "attempt 2: 2 rank\(s\) on 1 of 2 host\(s\): h1" $((timeout + 30)) >/dev/null ||
    { fail "grow: no attempt on h1 alone: $(tail -20 "$WORK/grow.log")"; kill "$ELASTIC"; "$nets" link h2 up; return; }
  # Whatever ran on h2 ends by itself, as in `faults`, before h2 rejoins.
  local left
  left=$(gone_by "$(later "$(now)" $((timeout + 10)))" tern-h2)
  [ -z "$left" ] || fail "grow: still running on the cut-off host h2: $left"
  "$nets" link h2 up
  local rc=0
  wait "$ELASTIC" || rc=$?
  [ "$rc" = 0 ] && pass "grow: the launcher finished the run" ||
    { fail "grow: the launcher exited $rc: $(tail -8 "$WORK/grow.log")"; return; }
  grep -q "grown: the job checkpointed and stopped (exit 75)" "$WORK/grow.log" &&
    grep -q "attempt 3: 4 rank(s) on 2 of 2 host(s): h1 h2" "$WORK/grow.log" &&
    pass "grow: h2 back: $(grep -o 'resumed from [^ ]* (step [0-9]*, written by 2 rank(s))' "$WORK/grow.log" | tail -1), on 4 ranks again" ||
    fail "grow: not grown back to 2 hosts: $(grep -E 'run-elastic' "$WORK/grow.log" | tr '\n' ' ')"
  grep -q "failure 2" "$WORK/grow.log" && fail "grow: growing was counted as a failure" ||
    pass "grow: growing not counted as a failure"
  near_base grow "4 -> 2 -> 4 ranks" grow-base
}

spot() {
  local steps=(--train.steps=400 --checkpoint.every_steps=100)
  ranks 4 "h1 h2" base "${steps[@]}"
  # Every host has its instance metadata at the link-local address; h2's announces.
  local h
  for h in h1 h2; do
    ip -n "tern-$h" addr add 169.254.169.254/32 dev lo
    "$nets" exec "$h" "$TERN_TEST_PYTHON" tests/net/spot_metadata.py --trigger "$WORK/notice-$h" &
  done
  sleep 1
  elastic spot "${steps[@]}" --checkpoint.spot_notice=true --checkpoint.spot_poll_seconds=0.5
  wait_step spot 150 || { kill "$ELASTIC"; return; }
  touch "$WORK/notice-h2"
  local rc=0
  wait "$ELASTIC" || rc=$?
  [ "$rc" = 0 ] && pass "spot: the launcher finished the run" || fail "spot: the launcher exited $rc: $(tail -8 "$WORK/spot.log")"
  grep -q "spot interruption notice on host h2" "$WORK/spot.log" && pass "spot: the notice on h2 was seen" ||
    fail "spot: no notice seen: $(grep -i spot "$WORK/spot.log" | head -3)"
  grep -q "checkpoint of step [0-9]* committed; exiting with 75" "$WORK/spot.log" &&
    pass "spot: coordinated save, exit 75: $(grep -o 'preempted (.*): checkpoint of step [0-9]* committed' "$WORK/spot.log" | head -1)" ||
    fail "spot: no committed checkpoint before exit 75: $(grep -iE 'preempt|75' "$WORK/spot.log" | head -3)"
  grep -q "attempt 2: 2 rank(s) on 1 of 2 host(s): h1" "$WORK/spot.log" && pass "spot: resumed elsewhere (h1 alone)" ||
    fail "spot: not resumed on h1 alone: $(grep attempt "$WORK/spot.log")"
  grep -q "failure 1" "$WORK/spot.log" && fail "spot: the preemption was counted as a failure" ||
    pass "spot: not counted as a failure"
  near_base spot "4 -> 2 ranks"
}

slurm() {
  local steps=(--train.steps=500 --checkpoint.every_steps=50)
  ranks 4 "h1 h2" base "${steps[@]}"
  local rc=0
  TERN_SLURM_HOSTS="h1 h2" bash tests/e2e/slurm_cluster.sh start >"$WORK/cluster.log" 2>&1 || rc=$?
  [ "$rc" = 77 ] && { cat "$WORK/cluster.log"; exit 77; }
  [ "$rc" = 0 ] || { fail "the Slurm cluster did not start: $(tail -20 "$WORK/cluster.log")"; return; }
  pass "slurmctld and a slurmd on h1 and h2: $(sinfo -h -o '%N %t' | tr '\n' ' ')"
  slurm_job cut "${steps[@]}"
  slurm_job down "${steps[@]}"
}

# slurm_job cut|down STEPS...: a 2-node job; mid-run h2 is cut off (link down) or set DOWN by
# the administrator while its daemons still run. The job goes on within its allocation on h1.
slurm_job() {
  local how=$1 name=slurm-$1 job
  shift
  # Both nodes idle again (a node back from DOWN, or its link back) before the job is submitted.
  for _ in $(seq 60); do
    [ "$(sinfo -h -n h1,h2 -o '%t' | sort -u | tr -d '\n')" = idle ] && break
    sleep 1
  done
  # The job runs mpirun inside its allocation (Open MPI's Slurm launcher), not the test's agent.
  job=$(env -u OMPI_MCA_plm_rsh_agent TERN_BIN="$(cd "$TERN_BIN" && pwd)" sbatch --parsable \
    --nodes=2 --ntasks-per-node=2 --output="$WORK/$name.log" slurm/train-multinode.sbatch \
    configs/digits_mlp.ini --run.progress=off --train.log_every=10 "$@" \
    --run.dir="$WORK/$name" --checkpoint.uri="s3://tern-net/$name" --dist.timeout_seconds="$timeout")
  wait_step "$name" 150 || { scancel "$job"; return; }
  grep -q "attempt 1 on h\[1-2\]" "$WORK/$name.log" && pass "$name: job $job runs on h1 and h2" ||
    fail "$name: the first attempt is not on both nodes: $(grep attempt "$WORK/$name.log")"
  case $how in
    cut) "$nets" link h2 down ;;
    down) scontrol update NodeName=h2 State=DOWN Reason="set down mid-job" ||
      fail "slurm-down: scontrol could not set h2 DOWN" ;;
  esac
  local deadline=$((SECONDS + 180)) st=""
  while [ $SECONDS -lt $deadline ]; do
    st=$(scontrol show job "$job" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2)
    [ "$st" = COMPLETED ] || [ "$st" = FAILED ] || [ "$st" = CANCELLED ] && break
    sleep 2
  done
  case $how in
    cut) "$nets" link h2 up ;;
    down) scontrol update NodeName=h2 State=RESUME || fail "slurm-down: scontrol could not resume h2" ;;
  esac
  local what_happened="cut off"
  [ "$how" = down ] && what_happened="set DOWN"
  [ "$st" = COMPLETED ] && pass "$name: h2 $what_happened mid-run; the job completed" ||
    fail "$name: job $job is $st: $(tail -30 "$WORK/$name.log")"
  grep -q "relaunching 2 rank(s) on h1$" "$WORK/$name.log" &&
    pass "$name: $(grep -o 'mpirun exited .*relaunching 2 rank(s) on h1' "$WORK/$name.log")" ||
    fail "$name: not relaunched on h1 alone: $(grep -E '^tern:|watchdog' "$WORK/$name.log" | tr '\n' ' ')"
  if [ "$how" = down ]; then
    grep -q "tern: node h2 is DOWN.*: left out" "$WORK/$name.log" && pass "$name: h2, DOWN, left out though it answers" ||
      fail "$name: h2 not left out as DOWN: $(grep '^tern:' "$WORK/$name.log" | tr '\n' ' ')"
  fi
  grep -q "resumed from s3://tern-net/$name/ckpt/step-" "$WORK/$name.log" &&
    pass "$name: $(grep -o 'resumed from [^ ]* (step [0-9]*, written by [0-9]* rank(s))' "$WORK/$name.log" | tail -1)" ||
    fail "$name: did not resume from a checkpoint"
  near_base "$name" "4 -> 2 ranks"
}

"$what"
finish
