#!/bin/sh
# run_test.sh PROGRAM [ARGS...]
#
# The launcher of the MPI tests, and of the Processor suites' test binaries (their
# CROSSCOMPILING_EMULATOR): runs PROGRAM as it is, or, when MULTIWORKER_BACKEND=mpi, in an
# `mpirun.openmpi -np 3` job (rank 0 runs PROGRAM's main, ranks 1 and 2 are its agents), over TCP
# on loopback, and exits with rank 0's status. (Under --enable-recovery, mpirun exits 0 whatever
# its ranks returned: so each rank's command is a shell that records rank 0's status.) Test
# listing (test discovery at build time) always runs PROGRAM directly.
if [ "${MULTIWORKER_BACKEND:-}" != mpi ]; then exec "$@"; fi
for argument in "$@"; do
    case "$argument" in --list-*) exec "$@" ;; esac
done
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none
export ASAN_OPTIONS=detect_leaks=0  # Open MPI does not free all it allocates
status_file="$(mktemp)"
trap 'rm -f "$status_file"' EXIT
export MULTIWORKER_RANK0_STATUS="$status_file"
# shellcheck disable=SC2016 # expanded by the ranks' shells
mpirun.openmpi --enable-recovery --oversubscribe --bind-to none -np 3 \
    --mca btl tcp,self --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo \
    /bin/sh -c '"$@"; status=$?; if [ "$OMPI_COMM_WORLD_RANK" = 0 ]; then echo "$status" >"$MULTIWORKER_RANK0_STATUS"; fi; exit "$status"' \
    rank "$@"
mpirun_status=$?
status="$(cat "$status_file")"
if [ -z "$status" ]; then
    echo "run_test.sh: rank 0 left no exit status (mpirun exited with $mpirun_status)" >&2
    exit 1
fi
exit "$status"
