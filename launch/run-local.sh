#!/usr/bin/env bash
# Runs tern-train on this host with N ranks: launch/run-local.sh N --config FILE [--key=value ...]
#
# The mpirun wrapper for preemptible runs: SIGTERM or SIGUSR1 sent to this script reaches every
# rank as SIGUSR1 (mpirun forwards SIGUSR1 and SIGUSR2), so the ranks checkpoint at the next step
# boundary and exit 75; the script then exits 75 too ("requeue me"). mpirun given SIGTERM itself
# would also stop the ranks cleanly, but reports its own exit status instead of theirs.
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/common.sh
if [ $# -lt 1 ] || ! [[ $1 =~ ^[0-9]+$ ]]; then
  echo "usage: launch/run-local.sh NRANKS --config FILE [--section.key=value ...]" >&2
  exit 2
fi
np=$1
shift
# More ranks than cores is allowed (slower, but correct): useful for trying a W-rank run.
mpirun -np "$np" --oversubscribe --bind-to none build/bin/tern-train "$@" &
launcher=$!
forward() { kill -USR1 "$launcher" 2>/dev/null || true; }
trap forward TERM USR1
# wait returns early when a trapped signal arrives: keep waiting until mpirun is gone, then
# collect its exit status.
set +e
while kill -0 "$launcher" 2>/dev/null; do wait "$launcher"; done
wait "$launcher"
exit $?
