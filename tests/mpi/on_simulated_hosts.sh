#!/usr/bin/env bash
# on_simulated_hosts.sh COMMAND [ARGS...]
#
# Runs COMMAND with two simulated hosts up: network namespaces "h1" and "h2" (each with a hostname
# of its own, by a UTS namespace), joined to this machine by a private bridge on a test subnet.
# COMMAND learns how to reach them from the environment:
#   MULTIWORKER_SIM_NET         the test subnet, e.g. 10.213.4.0/24
#   MULTIWORKER_SIM_HOSTS       this machine's, h1's and h2's addresses on it, space-separated
#   MULTIWORKER_SIM_RSH_AGENT   an rsh agent for mpirun (--mca plm_rsh_agent): `agent HOST CMD...`
#                               runs CMD inside HOST's namespace, under its hostname
#   MULTIWORKER_TEST_CUT_HOST   a command that cuts h1 off the network; ..._MEND_HOST mends it
#   MULTIWORKER_TEST_SLOW_LINKS a command that slows both hosts' links to 200 Mbit/s each way
#                               (tc's token bucket); ..._FAST_LINKS takes the limit off again
# Needs root, iproute2 and unshare. Everything it creates (namespaces, links, the agent script) is
# removed on exit, any process still inside a namespace killed, and COMMAND's exit status is its
# own. A run killed outright (SIGKILL, as by a test timeout) cannot clean up: the next run removes
# what it left.
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
    echo "on_simulated_hosts.sh: needs root (ip netns)" >&2
    exit 1
fi

tag="mw$$"                       # unique per run: concurrent runs do not collide
net="10.$((200 + $$ % 50)).$(($$ / 50 % 250)).0"
prefix="${net%.0}"
scratch="$(mktemp -d)"

# The pid in a name like mw123-h1, mw123-v1 or mw123-br.
run_of() {
    local pid="${1#mw}"
    echo "${pid%%-*}"
}

# A namespace's processes, then the namespace (deleting it alone would leave them running).
remove_namespace() {
    ip netns pids "$1" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$1" 2>/dev/null || true
}

# What runs that no longer exist left behind. Their subnets may be this run's.
sweep_dead_runs() {
    local name
    for name in $(ip netns list | awk '{print $1}' | grep -E '^mw[0-9]+-h[12]$' || true); do
        kill -0 "$(run_of "$name")" 2>/dev/null || remove_namespace "$name"
    done
    for name in $(ip -o link show | grep -oE 'mw[0-9]+-(br|v[12])' | sort -u || true); do
        kill -0 "$(run_of "$name")" 2>/dev/null || ip link del "$name" 2>/dev/null || true
    done
}

# shellcheck disable=SC2317 # run by the EXIT trap
teardown() {
    for i in 1 2; do
        remove_namespace "$tag-h$i"
        ip link del "$tag-v$i" 2>/dev/null || true
    done
    ip link del "$tag-br" 2>/dev/null || true
    rm -rf "$scratch"
}
trap teardown EXIT  # bash runs it on SIGTERM and SIGINT as well
sweep_dead_runs

ip link add "$tag-br" type bridge
ip addr add "$prefix.1/24" dev "$tag-br"
ip link set "$tag-br" up
for i in 1 2; do
    ip netns add "$tag-h$i"
    ip link add "$tag-v$i" type veth peer name eth0 netns "$tag-h$i"
    ip link set "$tag-v$i" master "$tag-br" up
    ip -n "$tag-h$i" addr add "$prefix.$((i + 1))/24" dev eth0
    ip -n "$tag-h$i" link set eth0 up
    ip -n "$tag-h$i" link set lo up
done

cat >"$scratch/agent" <<AGENT
#!/bin/sh
case "\$1" in
    $prefix.2) ns=$tag-h1 name=h1 ;;
    $prefix.3) ns=$tag-h2 name=h2 ;;
    *) echo "simulated host agent: unknown host \$1" >&2; exit 1 ;;
esac
shift
exec ip netns exec "\$ns" unshare --uts /bin/sh -c 'hostname "\$0" && exec /bin/sh -c "\$*"' "\$name" "\$@"
AGENT
chmod +x "$scratch/agent"

export MULTIWORKER_SIM_NET="$net/24"
export MULTIWORKER_SIM_HOSTS="$prefix.1 $prefix.2 $prefix.3"
export MULTIWORKER_SIM_RSH_AGENT="$scratch/agent"
export MULTIWORKER_TEST_CUT_HOST="ip link set $tag-v1 down"
export MULTIWORKER_TEST_MEND_HOST="ip link set $tag-v1 up"
slow=""
fast=""
for i in 1 2; do  # both ends of each host's link: the bridge's port, and the host's eth0
    for end in "tc qdisc %s dev $tag-v$i root" "tc -n $tag-h$i qdisc %s dev eth0 root"; do
        # shellcheck disable=SC2059 # the format is ours
        slow="$slow $(printf "$end" replace) tbf rate 200mbit burst 64kb latency 20ms &&"
        # shellcheck disable=SC2059
        fast="$fast $(printf "$end" del) &&"
    done
done
export MULTIWORKER_TEST_SLOW_LINKS="${slow% &&}"
export MULTIWORKER_TEST_FAST_LINKS="${fast% &&}"
status=0
"$@" || status=$?
exit "$status"
