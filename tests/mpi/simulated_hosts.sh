#!/usr/bin/env bash
# simulated_hosts.sh TEST_MPI CASE...
#
# Runs each Catch2 test case of TEST_MPI in an `mpirun.openmpi` job spread over simulated hosts:
# rank 0 on this machine, ranks 1 and 2 in network namespaces "h1" and "h2" (each with a hostname
# of its own, by a UTS namespace), joined to this machine by a private bridge on a test subnet.
# Open MPI starts its daemons there through an rsh agent that enters the namespace; all MPI
# traffic stays on the test subnet. The cases learn how to cut h1 off the network, and mend it,
# from MULTIWORKER_TEST_CUT_HOST and MULTIWORKER_TEST_MEND_HOST. Needs root, iproute2, unshare;
# the hosts are brought up, and removed afterwards, by on_simulated_hosts.sh.
set -euo pipefail

binary="$1"
shift
# The first run: bring the hosts up and run this script again inside them.
if [[ -z "${MULTIWORKER_SIM_RSH_AGENT:-}" ]]; then
    exec "$(dirname "$0")/on_simulated_hosts.sh" "$0" "$binary" "$@"
fi
read -r _ h1 h2 <<<"$MULTIWORKER_SIM_HOSTS"

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none ASAN_OPTIONS=detect_leaks=0

# Under --enable-recovery mpirun exits 0 whatever its ranks returned: each rank's command is a
# shell that records rank 0's status (rank 0 runs here, so the file is on this machine).
MULTIWORKER_RANK0_STATUS="$(mktemp)"
export MULTIWORKER_RANK0_STATUS
trap 'rm -f "$MULTIWORKER_RANK0_STATUS"' EXIT
status=0
for case in "$@"; do
    echo "==> $case"
    rm -f "$MULTIWORKER_RANK0_STATUS"
    # shellcheck disable=SC2016 # expanded by the ranks' shells
    timeout -k 10 100 mpirun.openmpi --enable-recovery --oversubscribe --bind-to none -np 3 \
        --host "localhost:1,$h1:1,$h2:1" \
        --mca plm_rsh_agent "$MULTIWORKER_SIM_RSH_AGENT" --mca plm_rsh_no_tree_spawn 1 \
        --mca oob_tcp_if_include "$MULTIWORKER_SIM_NET" --mca btl tcp,self --mca btl_tcp_if_include "$MULTIWORKER_SIM_NET" \
        -x ASAN_OPTIONS -x MULTIWORKER_RANK0_STATUS \
        /bin/sh -c '"$@"; s=$?; if [ "$OMPI_COMM_WORLD_RANK" = 0 ]; then echo "$s" >"$MULTIWORKER_RANK0_STATUS"; fi; exit "$s"' \
        rank "$binary" "$case" --warn NoTests || true
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
