#!/usr/bin/python3
"""Backend::mpi beside mpi4py.futures: bench_mpi and bench/mpi_peers.py, each
under `mpirun.openmpi -np 3` (rank 0 and two one-worker ranks), rounds
alternating, over TCP on loopback (as between hosts) or shared memory, or
across two simulated hosts (--simulated-hosts, as root: rank 0 on this
machine, the others in network namespaces h1 and h2, brought up by
tests/mpi/on_simulated_hosts.sh; the 10 ms sleeps' workers are split
between h1 and h2 for both).
Prints a Markdown table of medians over the rounds and mpi4py's time over
multiworker's, and the transport's own round trip (bench_mpi
--transport-floor: MPI_Send/MPI_Recv alone), the floor under both. Exits 1
if a run fails.

Usage: bench/compare_mpi.py BUILD_DIR [--rounds N] [--quick] [--shared-memory | --simulated-hosts]
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


def simulated_hosts(ranks):
    """mpirun's arguments that put rank 0 here and the other ranks on h1 and h2, half each."""
    _, h1, h2 = os.environ["MULTIWORKER_SIM_HOSTS"].split()
    net = os.environ["MULTIWORKER_SIM_NET"]
    others = ranks - 1
    return ["--host", f"localhost:1,{h1}:{(others + 1) // 2},{h2}:{others // 2}",
            "--mca", "plm_rsh_agent", os.environ["MULTIWORKER_SIM_RSH_AGENT"], "--mca", "plm_rsh_no_tree_spawn", "1",
            "--mca", "oob_tcp_if_include", net, "--mca", "btl", "tcp,self", "--mca", "btl_tcp_if_include", net]


def mpirun(program, transport, ranks=3):
    places = {"shared memory": [], "TCP on loopback": ["--mca", "btl", "tcp,self", "--mca", "btl_tcp_if_include", "lo"]}
    where = places[transport] if transport in places else simulated_hosts(ranks)
    return ["mpirun.openmpi", "--enable-recovery", "--oversubscribe", "--bind-to", "none", "-np", str(ranks),
            *where, *program]


def run(command):
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_btl_vader_single_copy_mechanism="none")
    out = subprocess.run(command, check=True, capture_output=True, text=True, env=env, timeout=600).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def main():
    if "--simulated-hosts" in sys.argv and "MULTIWORKER_SIM_RSH_AGENT" not in os.environ:
        hosts = Path(__file__).resolve().parent.parent / "tests" / "mpi" / "on_simulated_hosts.sh"
        os.execv(str(hosts), [str(hosts), sys.executable, *sys.argv])
    build = Path(sys.argv[1])
    rounds = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else 3
    extra = ["--quick"] if "--quick" in sys.argv else []
    transport = "TCP on loopback"
    if "--shared-memory" in sys.argv:
        transport = "shared memory"
    if "--simulated-hosts" in sys.argv:
        transport = "TCP across simulated hosts h1 and h2"
    ours = [str(build / "bench" / "bench_mpi"), *extra]
    peer = ["/usr/bin/python3", "-m", "mpi4py.futures", str(Path(__file__).with_name("mpi_peers.py")), *extra]
    samples = {}
    for _ in range(rounds):
        for program in (ours, peer):
            for r in run(mpirun(program, transport)):
                samples.setdefault((r["peer"], r["workload"]), []).append(r["value"])
        for r in run(mpirun([ours[0], "--transport-floor"], transport)):
            samples.setdefault((r["peer"], r["workload"]), []).append(r["value"])
        # 10 ms sleeps on 2 to 16 workers: multiworker's on 2 agents, mpi4py's one a rank.
        for workers in EFFICIENCY_WORKERS:
            jobs = [mpirun([ours[0], "--sleep-efficiency", str(workers // 2)], transport),
                    mpirun([*peer[:-len(extra) or None], "--sleep-efficiency"], transport, ranks=1 + workers)]
            for job in jobs:
                for r in run(job):
                    samples.setdefault((r["peer"], r["workload"]), []).append(r["value"])
    print(f"transport: {transport}, {rounds} rounds, medians")
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
