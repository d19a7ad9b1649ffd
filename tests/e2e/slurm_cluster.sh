#!/usr/bin/env bash
# A real one-node Slurm cluster on this machine, for the e2e tests: slurm_cluster.sh start|stop|status
#
# start: installs Debian's slurm-wlm and munge if missing, writes /etc/slurm/slurm.conf (node
#        "localhost" with the CPUs and memory `slurmd -C` finds), creates the munge key if missing,
#        starts munged, slurmctld and slurmd as daemons and waits until the node is idle. Running it
#        again while the cluster is up changes nothing.
# stop:  cancels every job (so no job process outlives the daemons), stops slurmd and slurmctld,
#        and munged if this script started it.
# With TERN_SLURM_HOSTS="h1 h2" (test hosts of tests/net/hosts.sh, already up): one slurmd per
# host, inside its namespace (NodeAddr = its address, a spool folder per node), slurmctld here on
# the bridge address, and a node that misses SlurmdTimeout (10 s) is DOWN.
# Exit 77 ("skip") where the machine has a slurm.conf of its own, or where Slurm cannot be installed
# (a failure instead under CI=true or TERN_TEST_STRICT=1: tests/require.sh).
set -euo pipefail
skip() { echo "slurm_cluster: skip: $*" >&2; exit 77; }
# A component that cannot be had: a skip, but a failure under CI=true (tests/require.sh).
missing() {
  source "$(dirname "${BASH_SOURCE[0]}")/../require.sh"
  missing_component "slurm_cluster: $*" >&2
}
# Daemons, /etc and apt need root: re-run under passwordless sudo, or skip.
if [ "$(id -u)" != 0 ]; then
  sudo -n true 2>/dev/null || missing "needs root or passwordless sudo"
  # sudo resets the environment: carry the strictness across (tests/require.sh).
  exec sudo -n env CI="${CI:-}" TERN_TEST_STRICT="${TERN_TEST_STRICT:-0}" bash "$0" "$@"
fi

conf=/etc/slurm/slurm.conf
state=/var/spool/tern-slurm                 # StateSaveLocation, SlurmdSpoolDir, pid files
logs=/var/log/tern-slurm                    # slurmctld.log, slurmd.log (the test prints them on failure)
marker="# written by tern tests/e2e/slurm_cluster.sh"
hosts_sh="$(cd "$(dirname "${BASH_SOURCE[0]}")/../net" && pwd)/hosts.sh"
read -ra nodes <<<"${TERN_SLURM_HOSTS:-localhost}"

alive() {  # alive PIDFILE NAME: the process in PIDFILE runs and is NAME
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]
}

wait_for() {  # wait_for SECONDS CMD...: retry CMD every 0.5 s until it succeeds or time runs out
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.5
  done
}

install_slurm() {
  command -v slurmctld && command -v slurmd && command -v sbatch && command -v munged && return 0
  command -v apt-get || missing "slurm is not installed and there is no apt-get"
  export DEBIAN_FRONTEND=noninteractive
  local pkgs=(slurm-wlm munge) log
  log=$(mktemp)
  echo "slurm_cluster: installing ${pkgs[*]}" >&2
  # apt-get update only when the package lists are missing or stale (the install fails).
  if ! apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >"$log" 2>&1; then
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${pkgs[@]}"; } >"$log" 2>&1 ||
      missing "apt-get install ${pkgs[*]} failed (no network?): $(tail -3 "$log")"
  fi
  rm -f "$log"
} >/dev/null

write_conf() {
  if [ -f "$conf" ] && ! grep -qF "$marker" "$conf"; then
    skip "$conf exists and was not written by this script; not touching a real cluster"
  fi
  # "NodeName=host CPUs=2 Boards=1 ... RealMemory=24105": keep the hardware, name the node localhost.
  local hw
  hw=$(slurmd -C | head -1 | sed 's/^NodeName=[^ ]* //')
  mkdir -p /etc/slurm "$state/ctld" "$logs"
  for n in "${nodes[@]}"; do mkdir -p "$state/d-$n"; done
  local ctld=localhost node_lines="" n
  if [ "${nodes[*]}" = localhost ]; then
    node_lines="NodeName=localhost $hw State=UNKNOWN"
  else
    ctld="localhost($("$hosts_sh" addr "${nodes[0]}" | sed 's/\.[0-9]*$/.1/'))"  # the bridge
    for n in "${nodes[@]}"; do
      node_lines+="NodeName=$n NodeAddr=$("$hosts_sh" addr "$n") $hw State=UNKNOWN"$'\n'
    done
  fi
  cat >"$conf.new" <<EOF
$marker
ClusterName=tern-test
SlurmctldHost=$ctld
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/d-%n
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd-%n.pid
SlurmctldLogFile=$logs/slurmctld.log
SlurmdLogFile=$logs/slurmd-%n.log
# A node silent this long is DOWN (its jobs requeued).
SlurmdTimeout=10
# No cgroups in containers: track processes by parent id, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
# A node that went down by not responding comes back by itself when its slurmd registers; one
# an administrator set DOWN stays down until resumed (2 would bring even that back at once).
ReturnToService=1
# Batch jobs may be requeued (sbatch --requeue, scontrol requeue).
JobRequeue=1
# Finished jobs stay visible to scontrol for 5 minutes (there is no accounting database).
MinJobAge=300
$node_lines
PartitionName=debug Nodes=$(IFS=,; echo "${nodes[*]}") Default=YES MaxTime=INFINITE State=UP
EOF
  mv "$conf.new" "$conf"
}

munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
  munge_ok && return 0  # already running (ours, or a system service's)
  if [ ! -s /etc/munge/munge.key ]; then
    install -d -o munge -g munge -m 0700 /etc/munge
    mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null ||
      dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
  fi
  install -d -o munge -g munge -m 0755 /run/munge
  runuser -u munge -- /usr/sbin/munged
  touch "$state/munged.ours"
  wait_for 10 munge_ok || { echo "slurm_cluster: munged did not start" >&2; exit 1; }
}

node_idle() {  # node_idle NODE
  local s
  s=$(sinfo -h -n "$1" -o %t 2>/dev/null) || return 1
  case $s in
    idle) return 0 ;;
    down* | drain* | drng*) scontrol update nodename="$1" state=resume >/dev/null 2>&1 ;;
  esac
  return 1
}
nodes_idle() {
  local n
  for n in "${nodes[@]}"; do node_idle "$n" || return 1; done
}
slurmds_alive() {
  local n
  for n in "${nodes[@]}"; do alive "$state/slurmd-$n.pid" slurmd || return 1; done
}
start_slurmd() {  # start_slurmd NODE: here, or inside the test host's namespace
  alive "$state/slurmd-$1.pid" slurmd && return 0
  if [ "$1" = localhost ]; then
    slurmd -N localhost
  else
    "$hosts_sh" exec "$1" slurmd -N "$1"
  fi
}

start() {
  install_slurm
  if alive "$state/slurmctld.pid" slurmctld && slurmds_alive &&
    grep -q "^PartitionName=debug Nodes=$(IFS=,; echo "${nodes[*]}") " "$conf"; then
    wait_for 60 nodes_idle || true   # up already; a running job may keep the node busy
    sinfo
    return 0
  fi
  # Up with other nodes (the one-node cluster, or other test hosts): start over.
  alive "$state/slurmctld.pid" slurmctld && stop
  write_conf
  start_munge
  alive "$state/slurmctld.pid" slurmctld || slurmctld
  wait_for 30 scontrol ping || { echo "slurm_cluster: slurmctld did not come up" >&2; tail -20 "$logs/slurmctld.log" >&2; exit 1; }
  local n
  for n in "${nodes[@]}"; do start_slurmd "$n"; done
  if ! wait_for 60 nodes_idle; then
    echo "slurm_cluster: node did not become idle" >&2
    sinfo -N -l >&2 || true
    tail -20 "$logs/slurmctld.log" "$logs"/slurmd-*.log >&2 || true
    exit 1
  fi
  sinfo
}

no_jobs() { [ -z "$(squeue -h -o %A 2>/dev/null)" ]; }
gone() { [ "$(cat "/proc/$1/comm" 2>/dev/null)" != "$2" ]; }

stop_daemon() {  # stop_daemon PIDFILE NAME: SIGTERM, then wait up to 30 s for it to exit
  alive "$1" "$2" || return 0
  local pid
  pid=$(cat "$1")
  kill -TERM "$pid"
  wait_for 30 gone "$pid" "$2" || echo "slurm_cluster: $2 ($pid) still running after 30 s" >&2
}

stop() {
  # Never touch a cluster this script did not configure.
  [ -f "$conf" ] && ! grep -qF "$marker" "$conf" && return 0
  if alive "$state/slurmctld.pid" slurmctld; then
    # Jobs first: their processes (slurmstepd, tern-train) would outlive the daemons.
    squeue -h -o %A 2>/dev/null | xargs -r scancel 2>/dev/null || true
    wait_for 60 no_jobs || echo "slurm_cluster: jobs still listed after 60 s" >&2
  fi
  local pidfile
  for pidfile in "$state"/slurmd-*.pid "$state/slurmd.pid"; do stop_daemon "$pidfile" slurmd; done
  stop_daemon "$state/slurmctld.pid" slurmctld
  [ -f "$state/munged.ours" ] && stop_daemon /run/munge/munged.pid munged
  rm -f "$state/munged.ours"
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  status) sinfo && squeue ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
