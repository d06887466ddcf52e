#!/usr/bin/env python3
"""Plots BM_PayloadThroughput from a Google Benchmark JSON file as a PNG: tasks per
second (log y) against the argument's payload size in bytes (log x), drawn by gnuplot.

Usage: python3 bench/plot.py results.json out.png

results.json comes from `bench_overhead --benchmark_out=results.json
--benchmark_out_format=json` (scripts/bench writes build-bench/bench_results.json).
With repetitions, the `_median` aggregates are plotted; without, the plain runs
(the median of them if one size has several). Needs the `gnuplot` binary (Debian:
gnuplot-nox); Python's standard library otherwise.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

FAMILY = "BM_PayloadThroughput"


def payload_points(benchmarks):
    """[(bytes, items_per_second, bytes_per_second)] sorted by bytes, and a note on their source."""
    ours = [b for b in benchmarks if b.get("run_name", b.get("name", "")).split("/")[0] == FAMILY]
    for b in ours:
        if b.get("error_occurred"):
            print(f"plot.py: skipping {b.get('name')}: {b.get('error_message', 'error')}", file=sys.stderr)
    ours = [b for b in ours if not b.get("error_occurred") and "items_per_second" in b]
    medians = [b for b in ours if b.get("run_type") == "aggregate" and b.get("aggregate_name") == "median"]
    if medians:
        chosen = medians
        repetitions = max(int(b.get("repetitions", 0)) for b in medians)
        source = f"median of {repetitions} repetitions" if repetitions else "medians"
    else:
        chosen = [b for b in ours if b.get("run_type", "iteration") == "iteration"]
        source = "one run"
    by_size = {}
    for b in chosen:
        size = int(b.get("run_name", b["name"]).split("/")[1])
        by_size.setdefault(size, []).append(b)
    if any(len(runs) > 1 for runs in by_size.values()):
        source = "median of the runs"
    points = [(size, statistics.median(r["items_per_second"] for r in runs),
               statistics.median(r.get("bytes_per_second", 0.0) for r in runs))
              for size, runs in sorted(by_size.items())]
    return points, source


def human(value, unit, space=""):
    """1234567, "tasks/s", " " -> "1.23 M tasks/s" (decimal prefixes)."""
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= factor:
            return f"{value / factor:.3g} {prefix}{space}{unit}"
    return f"{value:.3g} {unit}"


def gnuplot_string(text):
    """A gnuplot single-quoted string literal (no escapes inside, '' stands for ')."""
    return "'" + text.replace("'", "''") + "'"


def png_terminal(gnuplot):
    listing = subprocess.run([gnuplot], input="set terminal\n", capture_output=True, text=True)
    terminals = listing.stdout + listing.stderr
    if "pngcairo" in terminals:
        return "pngcairo size 1000,650 font 'sans,11'"
    return "png size 1000,650"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", help="Google Benchmark JSON output (--benchmark_out_format=json)")
    parser.add_argument("png", help="PNG file to write")
    args = parser.parse_args()

    gnuplot = shutil.which("gnuplot")
    if gnuplot is None:
        sys.exit("plot.py: gnuplot not found (Debian: apt-get install gnuplot-nox)")
    with open(args.results, encoding="utf-8") as f:
        results = json.load(f)
    points, source = payload_points(results.get("benchmarks", []))
    if not points:
        sys.exit(f"plot.py: no successful {FAMILY} results in {args.results} "
                 f"(run bench_overhead with --benchmark_filter={FAMILY[3:]})")

    context = results.get("context", {})
    subtitle = f"2 workers, {source}"
    if context.get("num_cpus"):
        subtitle += f", {context['num_cpus']} CPUs"
    if context.get("date"):
        subtitle += f", {context['date'][:10]}"

    with tempfile.TemporaryDirectory(prefix="multiworker-plot-") as tmp:
        data = os.path.join(tmp, "payload.dat")
        with open(data, "w", encoding="utf-8") as f:
            f.write("# bytes items_per_second label\n")
            for size, items, byte_rate in points:
                label = human(items, "tasks/s", " ") + (f"\\n{human(byte_rate, 'B/s')}" if byte_rate else "")
                f.write(f'{size} {items!r} "{label}"\n')
        sizes = [p[0] for p in points]
        rates = [p[1] for p in points]
        script = "\n".join([
            f"set terminal {png_terminal(gnuplot)}",
            f"set output {gnuplot_string(os.path.abspath(args.png))}",
            # A double-quoted gnuplot string, so that \n breaks the line.
            f'set title "multiworker: task throughput vs. argument payload size\\n'
            f'{FAMILY}: f(const std::string&) returns its size; {subtitle}" noenhanced',
            "set xlabel 'payload per task (bytes, log scale)'",
            "set ylabel 'tasks per second (log scale)'",
            "set logscale xy",
            "set xtics (" + ", ".join(f"'{s}' {s}" for s in sizes) + ")",
            "set format y '%.0s%c'",
            f"set xrange [{sizes[0] / 2}:{sizes[-1] * 2}]",
            f"set yrange [{min(rates) / 3}:{max(rates) * 3}]",
            "set grid xtics ytics mytics",
            "set key off",
            f"plot {gnuplot_string(data)} using 1:2 with linespoints lw 2 pt 7 ps 1.3 lc rgb '#1f77b4', \\",
            f"     {gnuplot_string(data)} using 1:2:3 with labels offset 0,2.2 font ',9' noenhanced",
            "",
        ])
        script_path = os.path.join(tmp, "payload.gp")
        with open(script_path, "w", encoding="utf-8") as f:
            f.write(script)
        run = subprocess.run([gnuplot, script_path], capture_output=True, text=True)
        if run.returncode != 0:
            sys.exit(f"plot.py: gnuplot failed ({run.returncode}):\n{run.stderr}\nscript:\n{script}")
    print(f"plot.py: wrote {args.png} ({len(points)} payload sizes, {source})")


if __name__ == "__main__":
    main()
