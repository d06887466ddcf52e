#!/usr/bin/env python3
"""Runs the pipeline benchmark and its peers side by side, in one run, and prints
one table: multiworker (bench_pipeline), oneTBB's parallel_pipeline on 2 threads
(tbb_pipeline), and Python's seed design and Pool.imap_unordered
(pipeline_peers.py). Workload everywhere: items 0..N-1 -> x + 1 on 2 workers ->
a sum. Ratios are of medians measured in this run. With --plot, draws items/s
against the number of stages (1 to 4) with gnuplot.

Usage: python3 bench/compare_pipeline.py BUILD_BENCH_DIR [--items N]
       [--repetitions R] [--plot out.png]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


def run_json(command):
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def plot(results, path):
    if shutil.which("gnuplot") is None:
        print("compare_pipeline.py: gnuplot missing, no plot", file=sys.stderr)
        return
    with tempfile.NamedTemporaryFile("w", suffix=".dat", delete=False) as data:
        for depth in range(1, 5):
            data.write(f"{depth} {results[f'multiworker_stages_{depth}']['items_per_s'] / 1e6}\n")
    script = (
        f"set terminal pngcairo size 640,400; set output '{path}';"
        "set xlabel 'stages (2 workers each) between a source process and a sink process';"
        "set ylabel 'million items/s'; set xtics 1; set yrange [0:*]; set grid;"
        f"plot '{data.name}' with linespoints title 'multiworker Pipeline'"
    )
    subprocess.run(["gnuplot", "-e", script], check=True)
    os.unlink(data.name)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("build_bench_dir")
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--plot")
    args = parser.parse_args()
    common = ["--items", str(args.items), "--repetitions", str(args.repetitions), "--json"]
    results = {}
    results.update(run_json([os.path.join(args.build_bench_dir, "bench", "bench_pipeline"), *common]))
    tbb = os.path.join(args.build_bench_dir, "bench", "tbb_pipeline")
    if os.path.exists(tbb):
        results.update(run_json([tbb, *common]))
    results.update(run_json([PYTHON, os.path.join(HERE, "pipeline_peers.py"), *common]))

    print(f"| {args.items:,} items, 2 workers, median of {args.repetitions} | us/item | M items/s |")
    print("|---|---|---|")
    for name, figures in results.items():
        print(f"| {name} | {figures['median_us_per_item']:.3f} | {figures['items_per_s'] / 1e6:.2f} |")
    ours = results["multiworker_source_process"]["median_us_per_item"]
    for peer in ("queue_pipeline", "pool_imap_unordered_chunksize1", "tbb_parallel_pipeline"):
        if peer in results:
            print(f"multiworker (source process) vs {peer}: {results[peer]['median_us_per_item'] / ours:.2f}x")
    if args.plot:
        plot(results, args.plot)


if __name__ == "__main__":
    main()
