#!/usr/bin/env python3
"""The first run of a fresh Processor beside Python's multiprocessing.Pool, each
repetition in a fresh process, side by side in one run; then how the cost per
task and the memory per result grow with the number of tasks (first run and
steady), written as a table and plotted.

    /usr/bin/python3 bench/compare_first_run.py BUILD_DIR [--repetitions R] [--plot out.png] [--quick]

BUILD_DIR holds bench/bench_first_run (a Release build). Figures are medians
over the repetitions. The plot needs gnuplot (Debian: gnuplot-nox); without it
the table is still printed.
"""
import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def inc(x):
    return x + 1


def python_pool_map(n):
    """In a fresh process (this script run with --python-pool N): Pool(2).map over
    range(n) with its default chunksize, timed without and with creating the pool."""
    ctx = multiprocessing.get_context("fork")
    created = time.perf_counter()
    with ctx.Pool(2) as pool:
        pool.apply_async(inc, (0,)).get()  # the workers are up
        start = time.perf_counter()
        results = pool.map(inc, range(n))
        end = time.perf_counter()
    assert sum(results) == n * (n + 1) // 2
    print(json.dumps({"map_us": (end - start) / n * 1e6, "with_pool_us": (end - created) / n * 1e6}))


def run_json(command):
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def medians(runs, key):
    return statistics.median(run[key] for run in runs)


def cpu_rows(runs):
    """Each thread's CPU a task, first batch against later ones (medians): on 2 cores their sum,
    not any one of them, bounds the rate."""
    rows = []
    for index, thread in enumerate(("caller", "event loop", "workers together")):
        first = statistics.median(run["first_cpu_ns"][index] for run in runs)
        later = statistics.median(cpu[index] for run in runs for cpu in run["later_cpu_ns"])
        rows.append((f"  CPU a task, {thread}: first batch", first, "ns"))
        rows.append((f"  CPU a task, {thread}: later batches", later, "ns"))
    return rows


def first_run_table(binary, repetitions, tasks):
    rows = []
    python = [run_json([sys.executable, __file__, "--python-pool", str(tasks)]) for _ in range(repetitions)]
    py_map = medians(python, "map_us")
    rows.append((f"Python Pool(2).map, {tasks:,} tasks, default chunksize (pool already up)", py_map, "us/task"))
    rows.append((f"Python Pool(2).map, pool creation included", medians(python, "with_pool_us"), "us/task"))
    for order in ("add-then-start", "start-then-add"):
        runs = [run_json([binary, "batch", order, str(tasks), "3"]) for _ in range(repetitions)]
        first = medians(runs, "first_us")
        later = statistics.median(value for run in runs for value in run["later_us"])
        rows.append((f"multiworker first batch, {order} (start() included)", first, "us/task"))
        rows.append((f"multiworker later batches, same Processor", later, "us/task"))
        rows.append((f"  first / later", first / later, "ratio"))
        rows.append((f"  Python Pool.map / multiworker first batch", py_map / first, "ratio"))
        rows.extend(cpu_rows(runs))
    trips = [run_json([binary, "round-trip", "2000"]) for _ in range(repetitions)]
    rows.append(("round trip from the first after start(), median of 2,000", medians(trips, "p50_us"), "us"))
    rows.append(("round trip from the first after start(), 99th percentile", medians(trips, "p99_us"), "us"))
    rows.append(("the very first round trip", medians(trips, "first_us"), "us"))
    serial = [run_json([binary, "cpu-bound", "serial", "400"]) for _ in range(repetitions)]
    parallel = [run_json([binary, "cpu-bound", "parallel", "400"]) for _ in range(repetitions)]
    rows.append(("400 tasks of 1 ms CPU, serial loop", medians(serial, "seconds") * 1e3, "ms"))
    rows.append(("400 tasks of 1 ms CPU, 2 workers, start() included", medians(parallel, "seconds") * 1e3, "ms"))
    rows.append(("  speed-up", medians(serial, "seconds") / medians(parallel, "seconds"), "x"))
    rows.append(("  of which the Processor's teardown (stop, every process reaped)", medians(parallel, "teardown_ms"),
                 "ms"))
    memory = [run_json([binary, "memory", "5000000"]) for _ in range(repetitions)]
    rows.append(("RSS per queued trivial task (5,000,000 added, not started)", medians(memory, "queued_bytes_per_task"),
                 "bytes"))
    rows.append(("RSS growth per held Result<int> after get_results() (5,000,000)",
                 medians(memory, "held_bytes_per_result"), "bytes"))
    rows.append(("RSS growth left once the results are dropped", medians(memory, "growth_after_release_mib"), "MiB"))
    return rows


def scaling_table(binary, repetitions, sizes):
    points = []
    for n in sizes:
        runs = [run_json([binary, "batch", "add-then-start", str(n), "3"]) for _ in range(repetitions)]
        later = statistics.median(value for run in runs for value in run["later_us"])
        points.append((n, medians(runs, "first_us"), later, medians(runs, "rss_bytes_per_result")))
    return points


def plot(points, out):
    gnuplot = shutil.which("gnuplot")
    if gnuplot is None:
        print("compare_first_run.py: gnuplot not found (Debian: gnuplot-nox): no plot", file=sys.stderr)
        return
    with tempfile.NamedTemporaryFile("w", suffix=".dat", delete=False) as data:
        for n, first, later, rss in points:
            data.write(f"{n} {first} {later} {rss}\n")
    script = f"""
set terminal pngcairo size 900,500
set output '{out}'
set logscale x
set xlabel 'tasks in the batch (int f(int), 2 workers)'
set ylabel 'us a task'
set y2label 'RSS bytes per held result (first run)'
set y2tics
set ytics nomirror
set yrange [0:*]
set y2range [0:*]
set key top right
set title 'Cost per task as the batch grows: first run on a fresh Processor, and later batches'
plot '{data.name}' using 1:2 with linespoints title 'first batch, start() included', \\
     '{data.name}' using 1:3 with linespoints title 'later batches (steady)', \\
     '{data.name}' using 1:4 axes x1y2 with linespoints dashtype 2 title 'RSS bytes per result'
"""
    subprocess.run([gnuplot], input=script, text=True, check=True)
    os.unlink(data.name)
    print(f"plotted: {out}")


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--python-pool":
        python_pool_map(int(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("build_dir")
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--plot", default=os.path.join(HERE, "first_run.png"))
    parser.add_argument("--quick", action="store_true", help="fewer sizes, for a smoke run")
    args = parser.parse_args()
    binary = os.path.join(args.build_dir, "bench", "bench_first_run")

    print(f"# First run (medians of {args.repetitions}, each in a fresh process)")
    for name, value, unit in first_run_table(binary, args.repetitions, 1_000_000):
        print(f"{name:78s} {value:10.3f} {unit}")
    sizes = [10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000, 10_000_000]
    points = scaling_table(binary, args.repetitions, sizes)
    print("\n# Scaling (add-then-start): tasks, first-run us/task, steady us/task, RSS bytes/result")
    for n, first, later, rss in points:
        print(f"{n:>12,} {first:10.4f} {later:10.4f} {rss:10.1f}")
    if args.plot:
        plot(points, args.plot)


if __name__ == "__main__":
    main()
