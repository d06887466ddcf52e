#!/usr/bin/env bash
# simulated_hosts.sh TEST_MPI CASE...
#
# Runs each Catch2 test case of TEST_MPI in an `mpirun.openmpi` job spread over simulated hosts:
# rank 0 on this machine, ranks 1 and 2 in network namespaces "h1" and "h2" (each with a hostname
# of its own, by a UTS namespace), joined to this machine by a private bridge on a test subnet.
# Open MPI starts its daemons there through an rsh agent that enters the namespace; all MPI
# traffic stays on the test subnet. The cases learn how to cut h1 off the network, and mend it,
# from MULTIWORKER_TEST_CUT_HOST and MULTIWORKER_TEST_MEND_HOST. Needs root, iproute2, unshare.
# Everything it creates (namespaces, links, the agent script) is removed on exit.
set -euo pipefail

binary="$1"
shift
if [[ $(id -u) -ne 0 ]]; then
    echo "simulated_hosts.sh: needs root (ip netns)" >&2
    exit 1
fi

tag="mw$$"                       # unique per run: concurrent runs do not collide
net="10.$((200 + $$ % 50)).$(($$ / 50 % 250)).0"
prefix="${net%.0}"
scratch="$(mktemp -d)"

teardown() {
    for i in 1 2; do
        ip netns del "$tag-h$i" 2>/dev/null || true
        ip link del "$tag-v$i" 2>/dev/null || true
    done
    ip link del "$tag-br" 2>/dev/null || true
    rm -rf "$scratch"
}
trap teardown EXIT

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

# The rsh agent: `agent HOST COMMAND...` runs COMMAND in HOST's namespace, under its hostname.
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

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none ASAN_OPTIONS=detect_leaks=0
export MULTIWORKER_TEST_CUT_HOST="ip link set $tag-v1 down"
export MULTIWORKER_TEST_MEND_HOST="ip link set $tag-v1 up"

# Under --enable-recovery mpirun exits 0 whatever its ranks returned: each rank's command is a
# shell that records rank 0's status (rank 0 runs here, so the file is on this machine).
export MULTIWORKER_RANK0_STATUS="$scratch/status"
status=0
for case in "$@"; do
    echo "==> $case"
    rm -f "$MULTIWORKER_RANK0_STATUS"
    # shellcheck disable=SC2016 # expanded by the ranks' shells
    timeout -k 10 100 mpirun.openmpi --enable-recovery --oversubscribe --bind-to none -np 3 \
        --host "localhost:1,$prefix.2:1,$prefix.3:1" \
        --mca plm_rsh_agent "$scratch/agent" --mca plm_rsh_no_tree_spawn 1 \
        --mca oob_tcp_if_include "$net/24" --mca btl tcp,self --mca btl_tcp_if_include "$net/24" \
        -x ASAN_OPTIONS -x MULTIWORKER_RANK0_STATUS \
        /bin/sh -c '"$@"; s=$?; if [ "$OMPI_COMM_WORLD_RANK" = 0 ]; then echo "$s" >"$MULTIWORKER_RANK0_STATUS"; fi; exit "$s"' \
        rank "$binary" "$case" || true
    if [ "$(cat "$MULTIWORKER_RANK0_STATUS" 2>/dev/null)" != 0 ]; then
        echo "FAIL: $case (rank 0 status: $(cat "$MULTIWORKER_RANK0_STATUS" 2>/dev/null || echo none))" >&2
        status=1
    fi
    # Nothing of the job may be left on any host (the hosts share this machine's process table).
    sleep 0.5
    if pgrep -f "^$binary" >/dev/null; then
        echo "FAIL: $case left processes behind:" >&2
        pgrep -af "^$binary" >&2
        pkill -9 -f "^$binary" || true
        status=1
    fi
done
exit "$status"
