#!/usr/bin/env bash
# Test hosts on one machine: network namespaces joined by veth pairs and a bridge, each with its
# own address, reached by Open MPI over TCP. For the multi-host tests and benchmarks.
#
#   tests/net/hosts.sh up N        hosts h1..hN (10.77.0.11..) and the store host (10.77.0.2);
#                                  this machine is the head (10.77.0.1 on the bridge tern-br0)
#   tests/net/hosts.sh down        kills every process in the namespaces, removes them
#   tests/net/hosts.sh exec HOST CMD...   runs CMD on HOST (its namespace, its own hostname)
#   tests/net/hosts.sh addr HOST   prints HOST's address
#   tests/net/hosts.sh link HOST up|down   sets HOST's link up or down (at the bridge)
#   tests/net/hosts.sh shape HOST [--rate R] [--loss PCT] [--delay D] | --clear
#                                  rate and delay both ways, loss on what HOST sends (as netem
#                                  on HOST's interface): by netem where the kernel has it;
#                                  without netem, rate by tbf, loss by an nftables random drop,
#                                  delay refused
#   tests/net/hosts.sh probe HOST  exit 0 when HOST answers one of 3 pings from the head
#   tests/net/hosts.sh hostfile SLOTS HOST...   an Open MPI hostfile (addresses, SLOTS each)
#   tests/net/hosts.sh mpi-env     prints the OMPI_MCA_* settings that make mpirun start its
#                                  daemons through tests/net/netns-rsh and use only these links
#
# Processes reach the hosts through tests/net/netns-rsh, an rsh agent that enters the namespace
# (not sshd): nothing to configure (keys, host keys, a daemon per host), and the same process
# tree as ssh gives mpirun. The data path is real: ranks on different hosts talk TCP over the
# veth links; only the launch itself does not cross the network, which is why reachability is
# probed with a ping over the links (probe), not with the agent.
# Needs root (namespaces, links, qdiscs), iproute2, iputils-ping and, for loss without netem,
# nftables: tests/require.sh names what is missing.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
state=/run/tern-hosts
bridge=tern-br0
prefix=10.77.0

die() { echo "hosts.sh: $*" >&2; exit 1; }
ns_of() {  # HOST (h1, store, or an address) -> namespace name
  local h=$1
  case $h in
    "$prefix".2 | store) echo tern-store ;;
    "$prefix".*) echo "tern-h$((${h##*.} - 10))" ;;
    h[0-9]*) echo "tern-$h" ;;
    *) die "unknown host '$h' (h1..hN, store, or a $prefix.x address)" ;;
  esac
}
name_of() { local ns; ns=$(ns_of "$1"); echo "${ns#tern-}"; }
addr_of() {
  case $(name_of "$1") in
    store) echo "$prefix.2" ;;
    h*) local n; n=$(name_of "$1"); echo "$prefix.$((${n#h} + 10))" ;;
  esac
}
veth_of() { echo "tv-$(name_of "$1")"; }  # the bridge end of HOST's link

add_host() {  # add_host NAME ADDRESS
  local name=$1 addr=$2 ns=tern-$1 veth=tv-$1
  ip netns add "$ns"
  ip link add "$veth" type veth peer name eth0 netns "$ns"
  ip link set "$veth" master "$bridge" up
  ip -n "$ns" addr add "$addr/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
  ip -n "$ns" route add default via "$prefix.1"
  echo "$name $addr" >>"$state/hosts"
}

up() {
  local n=${1:?usage: hosts.sh up N}
  [ "$(id -u)" = 0 ] || die "needs root"
  down >/dev/null 2>&1 || true
  mkdir -p "$state"
  : >"$state/hosts"
  ip link add "$bridge" type bridge
  ip addr add "$prefix.1/24" dev "$bridge"
  ip link set "$bridge" up
  add_host store "$prefix.2"
  for i in $(seq 1 "$n"); do add_host "h$i" "$prefix.$((i + 10))"; done
  for i in $(seq 1 "$n"); do probe "h$i" || die "h$i does not answer a ping after setup"; done
  echo "hosts.sh: up: head $prefix.1, store $prefix.2, h1..h$n $prefix.11..$prefix.$((n + 10))"
}

down() {
  local ns
  for ns in $(ip netns list 2>/dev/null | awk '/^tern-(h[0-9]+|store)( |$)/ {print $1}'); do
    # SIGKILL reaches stopped processes too; nothing started on a host outlives it.
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$ns"
  done
  # Leftovers of a setup cut short: a namespace file not listed, a bridge end without its peer.
  for ns in /run/netns/tern-h* /run/netns/tern-store; do
    [ -e "$ns" ] && ip netns del "$(basename "$ns")" 2>/dev/null
  done
  for veth in $(ip -o link show 2>/dev/null | sed -n 's/^[0-9]*: \(tv-[a-z0-9]*\)@.*/\1/p'); do
    ip link del "$veth" 2>/dev/null || true
  done
  ip link del "$bridge" 2>/dev/null || true
  rm -rf "$state"
}

run_on() {  # run_on HOST CMD...: CMD inside HOST's namespace with HOST's name as its hostname
  local host=$1 ns
  shift
  ns=$(ns_of "$host")
  [ -e "/run/netns/$ns" ] || die "host $host is not up (tests/net/hosts.sh up N)"
  # ip netns exec mounts a sysfs of the namespace's own, without the cgroup filesystems that
  # daemons such as slurmd expect under it: bind the machine's there (this mount namespace only).
  exec ip netns exec "$ns" unshare --uts sh -c '
    hostname "$0" || exit 1
    if [ -d /sys/fs/cgroup ] && ! grep -q " /sys/fs/cgroup " /proc/self/mounts; then
      # The same hierarchies as the machine (mounting one again shows the same cgroups).
      while read -r _ dir type opts _; do
        case $dir in /sys/fs/cgroup | /sys/fs/cgroup/*) ;; *) continue ;; esac
        [ "$dir" = /sys/fs/cgroup ] || mkdir -p "$dir"
        mount -t "$type" -o "$opts" "$type" "$dir" 2>/dev/null || true
      done </proc/1/mounts
    fi
    exec "$@"' "$(name_of "$host")" "$@"
}

link() {
  local host=$1 updown=${2:?usage: hosts.sh link HOST up|down}
  ip link set "$(veth_of "$host")" "$updown"
}

have_netem() {
  ip netns exec "$(ns_of "$1")" tc qdisc add dev lo root netem delay 0ms 2>/dev/null &&
    ip netns exec "$(ns_of "$1")" tc qdisc del dev lo root
}

shape() {
  local host=$1 rate="" loss="" delay=""
  shift
  local ns veth
  ns=$(ns_of "$host")
  veth=$(veth_of "$host")
  # Both ends of the link: HOST's eth0 (what it sends) and the bridge's veth (what it receives).
  ip netns exec "$ns" tc qdisc del dev eth0 root 2>/dev/null || true
  tc qdisc del dev "$veth" root 2>/dev/null || true
  ip netns exec "$ns" nft delete table inet tern-loss 2>/dev/null || true
  [ "${1:-}" = --clear ] && return 0
  while [ $# -gt 0 ]; do
    case $1 in
      --rate) rate=$2 ;;
      --loss) loss=$2 ;;
      --delay) delay=$2 ;;
      *) die "shape: unknown option '$1'" ;;
    esac
    shift 2
  done
  if have_netem "$host"; then
    local args=()
    [ -n "$delay" ] && args+=(delay "$delay")
    [ -n "$rate" ] && args+=(rate "$rate")
    [ -n "$delay$rate" ] && tc qdisc add dev "$veth" root netem "${args[@]}"
    [ -n "$loss" ] && args+=(loss "$loss%")
    [ ${#args[@]} -gt 0 ] && ip netns exec "$ns" tc qdisc add dev eth0 root netem "${args[@]}"
    return 0
  fi
  [ -z "$delay" ] || die "shape --delay needs the kernel's netem qdisc (sch_netem), which this kernel lacks"
  if [ -n "$rate" ]; then
    # A burst of 2 ms at 1 Gbit/s (256 kB; the timer ticks at 1 ms) and a queue of 50 ms: a
    # link, not a policer (a smaller burst holds TCP well below the rate).
    local tbf=(rate "$rate" burst 256kb latency 50ms)
    ip netns exec "$ns" tc qdisc add dev eth0 root tbf "${tbf[@]}"
    tc qdisc add dev "$veth" root tbf "${tbf[@]}"
  fi
  if [ -n "$loss" ]; then
    command -v nft >/dev/null || die "shape --loss without netem needs nftables (apt-get install nftables)"
    # Drops PCT% of the packets HOST sends, at random.
    ip netns exec "$ns" nft -f - <<EOF
table inet tern-loss {
  chain out { type filter hook output priority 0; oifname "eth0" numgen random mod 100 < $loss drop; }
}
EOF
  fi
}

# Three pings 0.2 s apart, 1 s for the last answer: one reply is enough (a lossy link is a link).
probe() { ping -c 3 -i 0.2 -W 1 "$(addr_of "$1")" >/dev/null 2>&1; }

hostfile() {
  local slots=$1
  shift
  for h in "$@"; do echo "$(addr_of "$h") slots=$slots"; done
}

mpi_env() {
  # Daemons start through the agent; the out-of-band channel and the TCP transport use the
  # test network only (the head also has other interfaces); shared memory between the ranks of
  # one host, TCP between hosts.
  cat <<EOF
export OMPI_MCA_plm_rsh_agent=$here/netns-rsh
export OMPI_MCA_oob_tcp_if_include=$prefix.0/24
export OMPI_MCA_btl_tcp_if_include=$prefix.0/24
export OMPI_MCA_btl=self,vader,tcp
EOF
}

cmd=${1:-}
shift || true
case $cmd in
  up) up "$@" ;;
  down) down ;;
  exec) host=${1:?usage: hosts.sh exec HOST CMD...}; shift; run_on "$host" "$@" ;;
  addr) addr_of "${1:?usage: hosts.sh addr HOST}" ;;
  link) link "$@" ;;
  shape) shape "$@" ;;
  probe) probe "${1:?usage: hosts.sh probe HOST}" ;;
  hostfile) hostfile "$@" ;;
  mpi-env) mpi_env ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
