#!/usr/bin/env bash
# Runs tern-train on this host with N ranks: launch/run-local.sh N --config FILE [--key=value ...]
# One BLAS thread per core share is chosen by tern-train itself (run.threads=0).
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
exec mpirun -np "$np" --oversubscribe --bind-to none build/bin/tern-train "$@"
