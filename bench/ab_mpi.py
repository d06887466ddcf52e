#!/usr/bin/python3
"""Compares two or more builds of bench_mpi, alternating between them so that
the machine's drift over minutes falls on all of them alike.

    python3 bench/ab_mpi.py [--rounds N] [--quick] BINARY BINARY...

Each round runs every binary once, in turn, under `mpirun.openmpi -np 3` over
TCP on loopback (rank 0 and two one-worker agent ranks, as compare_mpi.py
runs it), and reads the figures it prints. For each workload it prints every
binary's median over the rounds and its ratio to the first binary's. On this
project's 2-core virtual machine a 21-round comparison of a binary with
itself reads anywhere from 0.85 to 1.15: use 41 rounds or more for a change
under 10 %.

Typical use: build bench_mpi of the commit before a change in a worktree,
then compare:

    git worktree add /tmp/before HEAD~1
    cmake -S /tmp/before -B /tmp/before/build -DCMAKE_BUILD_TYPE=Release -DMULTIWORKER_BUILD_BENCH=ON
    cmake --build /tmp/before/build --target bench_mpi
    python3 bench/ab_mpi.py --rounds 41 /tmp/before/build/bench/bench_mpi build-bench/bench/bench_mpi
"""
import argparse
import json
import os
import statistics
import subprocess
import sys


def mpirun(binary, quick):
    command = ["mpirun.openmpi", "--enable-recovery", "--oversubscribe", "--bind-to", "none", "-np", "3",
               "--mca", "btl", "tcp,self", "--mca", "btl_tcp_if_include", "lo", binary]
    return command + (["--quick"] if quick else [])


def run_once(binary, quick):
    environment = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    output = subprocess.run(mpirun(binary, quick), capture_output=True, text=True, check=True,
                            env=environment).stdout
    for line in output.splitlines():
        if line.startswith("{"):
            figure = json.loads(line)
            yield figure["workload"], figure["value"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--quick", action="store_true", help="bench_mpi's --quick (fewer tasks a workload)")
    parser.add_argument("binaries", nargs="+")
    args = parser.parse_args()

    samples = [{} for _ in args.binaries]  # per binary: workload -> [values]
    for _ in range(args.rounds):
        for index, binary in enumerate(args.binaries):
            for workload, value in run_once(binary, args.quick):
                samples[index].setdefault(workload, []).append(value)

    print(f"medians of {args.rounds} alternating rounds; ratio: to the first binary (lower is faster)")
    for workload, first_values in samples[0].items():
        first = statistics.median(first_values)
        cells = []
        for binary, figures in zip(args.binaries, samples):
            median = statistics.median(figures.get(workload, [float("nan")]))
            cells.append(f"{binary}: {median:.4g} ({median / first:.2f})")
        print(f"{workload}: " + "; ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
