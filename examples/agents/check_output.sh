#!/usr/bin/env bash
# check_output.sh [--allow-stderr] EXPECTED PROGRAM [ARGS...]
#
# The test of an examples/agents program: runs PROGRAM with a fresh, empty TMPDIR and checks that
#   - it exits 0,
#   - its stdout is exactly the file EXPECTED,
#   - its stderr is empty (the library's records go there: a dead letter or a failure shows up),
#     unless --allow-stderr,
#   - no process of it is left afterwards (its forked processes share its command line),
#   - and it left no file in TMPDIR.
set -u
allow_stderr=0
if [ "${1-}" = --allow-stderr ]; then
    allow_stderr=1
    shift
fi
if [ $# -lt 2 ]; then
    echo "usage: $0 [--allow-stderr] EXPECTED PROGRAM [ARGS...]" >&2
    exit 2
fi
expected=$1
shift
program=$1

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir "$scratch/tmp"
TMPDIR="$scratch/tmp" "$@" >"$scratch/stdout" 2>"$scratch/stderr"
status=$?
cat "$scratch/stdout"
cat "$scratch/stderr" >&2

failed=0
if [ $status -ne 0 ]; then
    echo "FAIL: $* exited with status $status" >&2
    failed=1
fi
if ! diff -u "$expected" "$scratch/stdout" >&2; then
    echo "FAIL: the output differs from $expected (diff above)" >&2
    failed=1
fi
if [ $allow_stderr -eq 0 ] && [ -s "$scratch/stderr" ]; then
    echo "FAIL: something was written to stderr (above)" >&2
    failed=1
fi
pattern="^$(printf '%s' "$program" | sed 's/[][\.*^$+?(){}|]/\\&/g')( |\$)"
left=1
for _ in $(seq 20); do
    if ! pgrep -f "$pattern" >/dev/null; then
        left=0
        break
    fi
    sleep 0.1
done
if [ $left -ne 0 ]; then
    echo "FAIL: processes of $program are left:" >&2
    pgrep -af "$pattern" >&2
    failed=1
fi
if [ -n "$(ls -A "$scratch/tmp")" ]; then
    echo "FAIL: files left in TMPDIR:" >&2
    ls -lA "$scratch/tmp" >&2
    failed=1
fi
if [ $failed -eq 0 ]; then
    echo "PASS"
fi
exit $failed
