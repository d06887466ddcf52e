#!/usr/bin/python3
"""Backend::mpi beside mpi4py.futures: bench_mpi and bench/mpi_peers.py, each
under `mpirun.openmpi -np 3` (rank 0 and two one-worker ranks), rounds
alternating, over TCP on loopback (as between hosts) or shared memory.
Prints a Markdown table of medians over the rounds and mpi4py's time over
multiworker's, and the transport's own round trip (bench_mpi
--transport-floor: MPI_Send/MPI_Recv alone), the floor under both. Exits 1
if a run fails.

Usage: bench/compare_mpi.py BUILD_DIR [--rounds N] [--quick] [--shared-memory]
"""
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

EFFICIENCY_WORKERS = (2, 4, 8, 16)
WORKLOADS = [
    ("round_trip_us", "one-by-one round trip (median, us)"),
    ("throughput_us", "20,000 trivial tasks at once (us a task)"),
    ("large_ms", "1 MiB of arguments a task (ms a task)"),
] + [(f"sleep_efficiency_{w}", f"10 ms sleeps on {w} workers (efficiency)") for w in EFFICIENCY_WORKERS]


def mpirun(program, shared_memory, ranks=3):
    transport = [] if shared_memory else ["--mca", "btl", "tcp,self", "--mca", "btl_tcp_if_include", "lo"]
    return ["mpirun.openmpi", "--enable-recovery", "--oversubscribe", "--bind-to", "none", "-np", str(ranks),
            *transport, *program]


def run(command):
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_btl_vader_single_copy_mechanism="none")
    out = subprocess.run(command, check=True, capture_output=True, text=True, env=env, timeout=600).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def main():
    build = Path(sys.argv[1])
    rounds = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else 3
    extra = ["--quick"] if "--quick" in sys.argv else []
    shared = "--shared-memory" in sys.argv
    ours = [str(build / "bench" / "bench_mpi"), *extra]
    peer = ["/usr/bin/python3", "-m", "mpi4py.futures", str(Path(__file__).with_name("mpi_peers.py")), *extra]
    samples = {}
    for _ in range(rounds):
        for program in (ours, peer):
            for r in run(mpirun(program, shared)):
                samples.setdefault((r["peer"], r["workload"]), []).append(r["value"])
        for r in run(mpirun([ours[0], "--transport-floor"], shared)):
            samples.setdefault((r["peer"], r["workload"]), []).append(r["value"])
        # 10 ms sleeps on 2 to 16 workers: multiworker's on 2 agents, mpi4py's one a rank.
        for workers in EFFICIENCY_WORKERS:
            jobs = [mpirun([ours[0], "--sleep-efficiency", str(workers // 2)], shared),
                    mpirun([*peer[:-len(extra) or None], "--sleep-efficiency"], shared, ranks=1 + workers)]
            for job in jobs:
                for r in run(job):
                    samples.setdefault((r["peer"], r["workload"]), []).append(r["value"])
    print(f"transport: {'shared memory' if shared else 'TCP on loopback'}, {rounds} rounds, medians")
    print("| workload | multiworker | mpi4py.futures | mpi4py / multiworker |")
    print("|---|---|---|---|")
    for workload, label in WORKLOADS:
        mw = statistics.median(samples[("multiworker", workload)])
        py = statistics.median(samples[("mpi4py.futures", workload)])
        ratio = f"{py / mw:.1f}x" if not workload.startswith("sleep") else ""
        print(f"| {label} | {mw:.3g} | {py:.3g} | {ratio} |")
    floor = statistics.median(samples[("multiworker", "transport_round_trip_us")])
    print(f"\ntransport floor: MPI_Send/MPI_Recv round trip of 16 bytes, median {floor:.3g} us")


if __name__ == "__main__":
    main()
