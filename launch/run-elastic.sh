#!/usr/bin/env bash
# Runs tern-train on several hosts and brings it back after a failure, on the hosts still there:
#   launch/run-elastic.sh --hosts "node1 node2 ..." [options] -- --config FILE [--key=value ...]
#
# Each attempt probes the hosts, starts mpirun with SLOTS ranks on each host that answers, and
# waits. The trainer resumes from the newest complete checkpoint (checkpoint.uri must be
# reachable from every host: s3://... or a shared filesystem), whatever the number of ranks.
#   exit 0        training finished: done.
#   exit 75       preempted (SIGTERM/SIGUSR1 here, forwarded to the ranks, or a spot notice on a
#                 rank's host), checkpoint committed: relaunched at once, not counted, without
#                 the hosts that announced an interruption (for --spot-exclude-seconds); when
#                 this script itself was signalled it exits 75 instead ("requeue me").
#   exit 2        bad input (config, data): not retried.
#   anything else a failure (76: the watchdog found a rank dead, stopped, hung or cut off;
#                 137: a rank was killed; Open MPI's own codes when a host's daemon is lost):
#                 counted against --max-failures, then relaunched on the hosts that answer.
# While a job runs on fewer hosts than given, the others are probed every --grow-seconds; when
# one answers again the job is asked to checkpoint and stop (SIGUSR1, exit 75) and is relaunched
# on more ranks. Each relaunch prints how long the job was down ("training again N s after").
#
# Options:
#   --hosts "H1 H2 ..."    the hosts (names or addresses mpirun can reach); or --hostfile FILE
#                          with one host per line (anything after the name is ignored)
#   --slots N              ranks per host (default 1)
#   --min-hosts N          fewest hosts to run on (default 1); fewer answering: wait up to
#                          --wait-seconds (default 300) for more, then give up
#   --max-failures N       failures allowed before giving up (default 3; preemptions not counted)
#   --probe CMD            run as `CMD HOST`; exit 0 means the host is usable
#                          (default: ssh -o BatchMode=yes -o ConnectTimeout=5 HOST true)
#   --grow-seconds S       how often to probe hosts left out (default 30; 0: never grow)
#   --timeout-seconds S    dist.timeout_seconds for the ranks and the basis of Open MPI's
#                          daemon keepalive (default 60)
#   --spot-exclude-seconds S   how long a host that announced a spot interruption is left out
#                          (default 300: the notice comes 2 minutes before the host goes)
#   --mpirun-args "..."    more mpirun arguments (e.g. "--mca btl_tcp_if_include eth0")
# Environment: TERN_BIN (default build/bin).
set -uo pipefail  # no -e: exit statuses are examined
cd "$(dirname "$0")/.."
source launch/common.sh

usage() { sed -n '2,/^set -uo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2; }
hosts=() slots=1 min_hosts=1 max_failures=3 probe="" grow=30 timeout=60 mpirun_args="" spot_exclude=300
while [ $# -gt 0 ]; do
  case $1 in
    --hosts) read -ra hosts <<<"$2"; shift 2 ;;
    --hostfile) mapfile -t hosts < <(awk 'NF && $1 !~ /^#/ {print $1}' "$2"); shift 2 ;;
    --slots) slots=$2; shift 2 ;;
    --min-hosts) min_hosts=$2; shift 2 ;;
    --max-failures) max_failures=$2; shift 2 ;;
    --probe) probe=$2; shift 2 ;;
    --grow-seconds) grow=$2; shift 2 ;;
    --timeout-seconds) timeout=$2; shift 2 ;;
    --wait-seconds) wait_seconds=$2; shift 2 ;;
    --mpirun-args) mpirun_args=$2; shift 2 ;;
    --spot-exclude-seconds) spot_exclude=$2; shift 2 ;;
    --) shift; break ;;
    -h | --help) usage ;;
    *) echo "run-elastic: unknown option '$1'" >&2; usage ;;
  esac
done
wait_seconds=${wait_seconds:-300}
# The trainer's own --dist.timeout_seconds, if given, is the timeout.
timeout_arg=(--dist.timeout_seconds="$timeout")
for a in "$@"; do case $a in --dist.timeout_seconds=*) timeout=${a#*=} timeout_arg=() ;; esac; done
timeout=${timeout%.*}
[ ${#hosts[@]} -gt 0 ] || { echo "run-elastic: --hosts or --hostfile is required" >&2; usage; }
[ $# -gt 0 ] || { echo "run-elastic: the trainer's arguments follow --" >&2; usage; }
for n in "$slots" "$min_hosts" "$max_failures" "$grow" "$wait_seconds" "$spot_exclude" "$timeout"; do
  [[ $n =~ ^[0-9]+$ ]] || { echo "run-elastic: '$n' is not a whole number" >&2; exit 2; }
done

log() { echo "run-elastic: $*" >&2; }
usable() {
  if [ -n "$probe" ]; then
    $probe "$1" >/dev/null 2>&1
  else
    ssh -o BatchMode=yes -o ConnectTimeout=5 "$1" true >/dev/null 2>&1
  fi
}
noticed() {  # HOST announced a spot interruption less than --spot-exclude-seconds ago
  local since
  since=$(awk -v h="$1" '$1 == h {t = $2} END {print t}' "$work/spot_hosts" 2>/dev/null)
  [ -n "$since" ] && [ $(($(date +%s) - ${since%.*})) -lt "$spot_exclude" ]
}
reachable() {  # prints the hosts that answer, in the given order
  local h
  for h in "${hosts[@]}"; do
    noticed "$h" && continue
    usable "$h" && echo "$h"
  done
}

# Open MPI's daemons hold TCP connections to mpirun that are idle while the job runs: keepalive
# makes a host that is cut off a lost daemon within about the timeout (the default, 5 minutes of
# idleness before the first probe, would hold a failed job that long). A probe may fall just
# after the link went, so Open MPI can report the lost daemon before the ranks' watchdog speaks:
# the output watcher below then names the ranks that were on that host.
ka=$(( timeout + 2 ))
export OMPI_MCA_oob_tcp_keepalive_time=${OMPI_MCA_oob_tcp_keepalive_time:-$ka}
export OMPI_MCA_oob_tcp_keepalive_intvl=${OMPI_MCA_oob_tcp_keepalive_intvl:-1}
export OMPI_MCA_oob_tcp_keepalive_probes=${OMPI_MCA_oob_tcp_keepalive_probes:-2}

work=$(mktemp -d /tmp/tern-elastic.XXXXXX)
trap 'rm -rf "$work"' EXIT
signalled="" launcher="" failures=0 attempt=0 down_since=""
forward() {
  signalled=$1
  [ -n "$launcher" ] && kill -USR1 "$launcher" 2>/dev/null
}
trap 'forward TERM' TERM
trap 'forward USR1' USR1

now() { date +%s.%N; }
# Open MPI lost the daemon on HOST: the ranks it ran (mpirun fills each host's slots in turn).
lost_host() {
  local i
  i=$(awk -v h="$1" '$1 == h {print NR - 1; exit}' "$work/hostfile")
  [ -n "$i" ] && log "lost host $1 (Open MPI lost its daemon there): ranks $((i * slots))-$((i * slots + slots - 1)) (host $1) stopped answering"
}
# Echoes the job's output; the first line saying the trainer resumed (or started) marks the job
# as training again, and how long after the failure that was is printed.
watch_output() {
  local line marked=""
  while IFS= read -r line; do
    printf '%s\n' "$line"
    if [[ $line =~ Remote\ daemon:.*\ on\ node\ ([^[:space:]]+) ]]; then
      lost_host "${BASH_REMATCH[1]}"
    fi
    # The watchdog ended the job; mpirun may still wait on a daemon behind a cut link (TCP
    # retransmitting what it sent there), which the main loop does not wait out.
    [[ $line == *"watchdog: "*"ending the job (exit 76)"* ]] && [ ! -s "$work/ended" ] && date +%s >"$work/ended"
    if [[ $line =~ spot\ interruption\ notice\ on\ host\ ([^:[:space:]]+) ]]; then
      echo "${BASH_REMATCH[1]} $(date +%s)" >>"$work/spot_hosts"
    fi
    if [ -z "$marked" ] && [[ $line == *"resumed from"* || $line == *"] model: "* ]]; then
      marked=1
      if [ -s "$work/down_since" ]; then
        local t
        t=$(now)
        log "training again $(awk -v a="$(cat "$work/down_since")" -v b="$t" 'BEGIN {printf "%.1f", b - a}') s after the job went down (at $t)"
        : >"$work/down_since"
      fi
    fi
  done
}

while :; do
  mapfile -t up < <(reachable)
  waited_from=$SECONDS
  while [ ${#up[@]} -lt "$min_hosts" ]; do
    if [ $((SECONDS - waited_from)) -ge "$wait_seconds" ]; then
      log "only ${#up[@]} of ${#hosts[@]} host(s) answer (at least $min_hosts needed) after ${wait_seconds} s: giving up"
      exit 1
    fi
    sleep 2
    mapfile -t up < <(reachable)
  done
  attempt=$((attempt + 1))
  np=$((slots * ${#up[@]}))
  for h in "${up[@]}"; do echo "$h slots=$slots"; done >"$work/hostfile"
  log "attempt $attempt: $np rank(s) on ${#up[@]} of ${#hosts[@]} host(s): ${up[*]}"
  # shellcheck disable=SC2086 # mpirun_args is a list of words
  mpirun -np "$np" --hostfile "$work/hostfile" --bind-to none $mpirun_args \
    "${TERN_BIN:-build/bin}/tern-train" "$@" "${timeout_arg[@]}" \
    > >(watch_output) 2>&1 &
  launcher=$!
  grow_next=$((SECONDS + grow))
  : >"$work/ended"
  sent=""
  while kill -0 "$launcher" 2>/dev/null; do
    # 10 s after the watchdog ended the job, SIGTERM to an mpirun still there, SIGKILL 5 s later
    # (its daemons on the hosts it still reaches end their ranks when it goes).
    if [ -s "$work/ended" ]; then
      late=$(($(date +%s) - $(cat "$work/ended"))) sig=""
      [ "$late" -ge 10 ] && sig=TERM
      [ "$late" -ge 15 ] && sig=KILL
      if [ -n "$sig" ] && [ "$sig" != "$sent" ]; then
        log "mpirun still runs $late s after the watchdog ended the job: SIG$sig to it"
        kill -"$sig" "$launcher" 2>/dev/null
        sent=$sig
      fi
    fi
    if [ "$grow" -gt 0 ] && [ ${#up[@]} -lt ${#hosts[@]} ] && [ $SECONDS -ge $grow_next ] && [ -z "$signalled" ]; then
      grow_next=$((SECONDS + grow))
      mapfile -t now_up < <(reachable)
      if [ ${#now_up[@]} -gt ${#up[@]} ]; then
        log "${#now_up[@]} host(s) answer now: asking the job to checkpoint and stop, to grow it"
        growing=1
        kill -USR1 "$launcher" 2>/dev/null
      fi
    fi
    sleep 1 & wait $! 2>/dev/null
  done
  wait "$launcher"
  rc=$?
  launcher=""
  case $rc in
    0) log "training finished (attempt $attempt, $failures failure(s))"; exit 0 ;;
    2) log "bad input (exit 2): not retrying"; exit 2 ;;
    75)
      if [ -n "$signalled" ]; then
        log "preempted (SIG$signalled), checkpoint committed: exiting 75"
        exit 75
      fi
      log "${growing:+grown: }the job checkpointed and stopped (exit 75): relaunching, not counted"
      growing=""
      ;;
    *)
      [ -n "$signalled" ] && { log "signalled (SIG$signalled) and the job exited $rc"; exit "$rc"; }
      failures=$((failures + 1))
      log "the job failed (exit $rc$( [ "$rc" = 76 ] && echo ": a rank was lost, see the watchdog's message above")); failure $failures of at most $max_failures"
      if [ "$failures" -gt "$max_failures" ]; then
        log "giving up after $failures failures"
        exit "$rc"
      fi
      ;;
  esac
  now >"$work/down_since"
done
