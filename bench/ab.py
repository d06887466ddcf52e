#!/usr/bin/env python3
"""Compares two or more builds of bench_overhead on the same benchmarks, alternating
between them so that the machine's drift over minutes falls on all of them alike.

    python3 bench/ab.py [--rounds N] [--repetitions R] [--counter NAME]... FILTER BINARY BINARY...

Each round runs every binary once, in turn, with --benchmark_filter=FILTER and
--benchmark_repetitions=R. For each binary and benchmark it prints the median
and the best of all rounds' repetitions, of the benchmark's main figure:
items_per_second (M/s) if it reports one, else p50_us, else bytes_per_second
(GiB/s). On this project's 2-core virtual machine one run moves by +-10 %
from the next, so a change worth keeping shows in both the median and the
best, over at least 3 rounds.

Typical use: copy build-bench/bench/bench_overhead aside before a change,
rebuild, and compare:

    cp build-bench/bench/bench_overhead /tmp/before
    cmake --build build-bench --target bench_overhead
    python3 bench/ab.py 'TrivialThroughputSteady/2' /tmp/before build-bench/bench/bench_overhead
"""
import argparse
import json
import statistics
import subprocess
import sys

# (counter, divisor, unit); the first one a benchmark reports is its main figure. The
# latency benchmarks report p50_us besides a (less telling) items_per_second.
FIGURES = [("p50_us", 1, "us p50"), ("items_per_second", 1e6, "M/s"), ("bytes_per_second", 2**30, "GiB/s")]


def run_once(binary, benchmark_filter, repetitions, counters):
    output = subprocess.run(
        [binary, f"--benchmark_filter={benchmark_filter}", f"--benchmark_repetitions={repetitions}",
         "--benchmark_format=json"],
        capture_output=True, text=True, check=True).stdout
    for entry in json.loads(output)["benchmarks"]:
        if entry.get("run_type") != "iteration" or entry.get("error_occurred"):
            continue
        for counter, divisor, unit in FIGURES:
            if counter in entry:
                yield entry["run_name"], entry[counter] / divisor, unit
                break
        for counter in counters:
            if counter in entry:
                yield f"{entry['run_name']} {counter}", entry[counter], "(lower is better)"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--counter", action="append", default=[], help="a further counter to compare")
    parser.add_argument("filter")
    parser.add_argument("binaries", nargs="+")
    args = parser.parse_args()

    samples = [{} for _ in args.binaries]  # per binary (the same one may be given twice): name -> (unit, [values])
    for round_number in range(args.rounds):
        print(f"round {round_number + 1} of {args.rounds}", file=sys.stderr)
        for binary, results in zip(args.binaries, samples):
            for name, value, unit in run_once(binary, args.filter, args.repetitions, args.counter):
                results.setdefault(name, (unit, []))[1].append(value)

    for binary, results in zip(args.binaries, samples):
        for name, (unit, values) in results.items():
            lower_is_better = unit.endswith("p50") or unit == "(lower is better)"
            best = min(values) if lower_is_better else max(values)
            print(f"{binary}  {name}  median {statistics.median(values):.3f}  best {best:.3f} {unit}"
                  f"  (n={len(values)})")


if __name__ == "__main__":
    main()
