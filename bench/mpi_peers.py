#!/usr/bin/python3
"""mpi4py.futures, the peer of bench_mpi: the same three workloads, printed as
JSON lines. Run as `mpirun.openmpi -np 3 /usr/bin/python3 -m mpi4py.futures
bench/mpi_peers.py [--quick]`: rank 0 runs this, ranks 1 and 2 are workers."""
import json
import statistics
import sys
import time

from mpi4py import MPI
from mpi4py.futures import MPIPoolExecutor


def inc(x, text):
    return x + 1, len(text)


def report(workload, value):
    print(json.dumps({"peer": "mpi4py.futures", "workload": workload, "value": value}), flush=True)


def nap(x):
    time.sleep(0.010)
    return x


def sleep_efficiency():
    """40 tasks a worker of a 10 ms sleep, on every worker rank of the job."""
    with MPIPoolExecutor() as pool:
        workers = MPI.COMM_WORLD.Get_size() - 1  # mpi4py.futures: every rank but this one
        tasks = 40 * workers
        start = time.perf_counter()
        for f in [pool.submit(nap, i) for i in range(tasks)]:
            f.result()
        elapsed = time.perf_counter() - start
    report(f"sleep_efficiency_{workers}", (tasks * 0.010 / workers) / elapsed)


def main():
    if "--sleep-efficiency" in sys.argv:
        sleep_efficiency()
        return
    quick = "--quick" in sys.argv
    with MPIPoolExecutor() as pool:
        trips = 200 if quick else 2000
        times = []
        for i in range(trips + 100):
            start = time.perf_counter()
            pool.submit(inc, i, "").result()
            if i >= 100:
                times.append((time.perf_counter() - start) * 1e6)
        report("round_trip_us", statistics.median(times))

        tasks = 2000 if quick else 20000
        start = time.perf_counter()
        futures = [pool.submit(inc, i, "") for i in range(tasks)]
        for f in futures:
            f.result()
        report("throughput_us", (time.perf_counter() - start) * 1e6 / tasks)

        large = 10 if quick else 50
        mebibyte = "x" * (1 << 20)
        start = time.perf_counter()
        futures = [pool.submit(inc, i, mebibyte) for i in range(large)]
        for f in futures:
            f.result()
        report("large_ms", (time.perf_counter() - start) * 1e3 / large)


if __name__ == "__main__":
    main()
