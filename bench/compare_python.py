#!/usr/bin/env python3
"""Side by side: the same workloads in multiworker (bench_overhead) and in the
process pools Python users reach for today, run one after the other on this
machine, with the ratios. Usage: bench/compare_python.py path/to/bench_overhead

Workloads (2 workers): a trivial f(x) = x + 1 over N tasks submitted one by one;
the same with a 20-character string argument and result; the round trip of one
task with the workers hot; the time from creating the pool to the first result.
"""
import concurrent.futures
import json
import multiprocessing
import statistics
import subprocess
import sys
import time

N = 20_000  # ProcessPoolExecutor needs ~190 us a task: keep its run short


def inc(x):
    return x + 1


def same(s):
    return s


def per_task_us(run, n=N, repeat=3):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run(n)
        times.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(times)


def python_figures():
    ctx = multiprocessing.get_context("fork")
    figures = {}
    with ctx.Pool(2) as pool:
        figures["Pool.map chunksize=1, trivial"] = per_task_us(lambda n: pool.map(inc, range(n), chunksize=1))
        figures["Pool.map default chunksize, trivial"] = per_task_us(lambda n: pool.map(inc, range(n)), n=200_000)
        figures["Pool.apply_async one by one, trivial"] = per_task_us(
            lambda n: [r.get() for r in [pool.apply_async(inc, (i,)) for i in range(n)]])
        text = "x" * 20
        figures["Pool.map chunksize=1, 20-char string"] = per_task_us(
            lambda n: pool.map(same, [text] * n, chunksize=1))
        hot = []
        for i in range(2000):
            start = time.perf_counter()
            pool.apply_async(inc, (i,)).get()
            hot.append((time.perf_counter() - start) * 1e6)
        figures["Pool round trip, hot (median)"] = statistics.median(hot)
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx) as executor:
        figures["ProcessPoolExecutor.submit one by one, trivial"] = per_task_us(
            lambda n: [f.result() for f in [executor.submit(inc, i) for i in range(n)]], n=5_000)
    firsts = []
    for _ in range(10):
        start = time.perf_counter()
        with ctx.Pool(2) as pool:
            pool.apply_async(inc, (1,)).get()
            firsts.append((time.perf_counter() - start) * 1e3)
    figures["Pool(2) creation to first result, ms (median)"] = statistics.median(firsts)
    return figures


def multiworker_figures(binary):
    out = subprocess.run([binary, "--benchmark_format=json", "--benchmark_repetitions=3",
                          "--benchmark_report_aggregates_only=true",
                          "--benchmark_filter=TrivialThroughputSteady/2|StringThroughput|RoundTripHot|StartToFirstResultFreshProcess"],
                         check=True, capture_output=True, text=True).stdout
    # Keyed by the benchmark's name without its "/iterations:N/real_time" suffix.
    medians = {b["run_name"].split("/iterations:")[0]: b for b in json.loads(out)["benchmarks"]
               if b.get("aggregate_name") == "median"}

    def us_per_item(name):
        return 1e6 / medians[name]["items_per_second"]
    return {
        "trivial, one by one": us_per_item("BM_TrivialThroughputSteady/2"),
        "20-char string": us_per_item("BM_StringThroughputSteady"),
        "20-char string, whole job": us_per_item("BM_StringThroughput"),
        "round trip, hot (median)": medians["BM_RoundTripHot"]["p50_us"],
        # In a fresh small process, as Python's pool is created in a small interpreter.
        "creation to first result, ms": medians["BM_StartToFirstResultFreshProcess"]["p50_ms"],
    }


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    ours = multiworker_figures(sys.argv[1])
    theirs = python_figures()
    rows = [
        ("trivial task, one by one (us/task)", ours["trivial, one by one"], [
            "Pool.map chunksize=1, trivial", "Pool.apply_async one by one, trivial",
            "ProcessPoolExecutor.submit one by one, trivial", "Pool.map default chunksize, trivial"]),
        ("20-char string task (us/task)", ours["20-char string"], ["Pool.map chunksize=1, 20-char string"]),
        ("20-char string, incl. fork+teardown", ours["20-char string, whole job"],
         ["Pool.map chunksize=1, 20-char string"]),
        ("round trip of one task, hot (us)", ours["round trip, hot (median)"], ["Pool round trip, hot (median)"]),
        ("pool creation to first result (ms)", ours["creation to first result, ms"],
         ["Pool(2) creation to first result, ms (median)"]),
    ]
    print(f"{'figure':40} {'multiworker':>12}   {'python':>10}  ratio  (python system)")
    for label, mine, names in rows:
        for name in names:
            print(f"{label:40} {mine:12.3f}   {theirs[name]:10.3f}  {theirs[name] / mine:5.1f}x  ({name})")


if __name__ == "__main__":
    main()
