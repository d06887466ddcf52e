#!/usr/bin/python3
"""Messages side by side: multiworker's Supervisor (bench_messages), ZeroMQ over
ipc:// (zmq_messages) and Python's multiprocessing Pipe and Queue
(message_peers.py), one after the other in one run, each printing JSON lines.

Prints a Markdown table of every workload and peer, with multiworker's ratio
to each peer (how many times faster multiworker is), and the idle processes'
CPU use. Exits 1 if a program fails.

--rounds N runs every program N times, in turn (all three, then all three
again), and each cell is the median of its N figures: a machine shared with
others slows a single run now and then, two or three times over.

Usage: bench/compare_messages.py BUILD_DIR [--quick] [--rounds N]
"""
import json
import statistics
import subprocess
import sys
from pathlib import Path

# (workload, field, label[, the peers' workload]): the peers send 16 bytes in every stream, so
# multiworker's two ways of sending 16 bytes are both set beside the peers' one stream.
WORKLOADS = [
    ("pingpong_busy", "median_us", "ping-pong round trip, busy (median, us)"),
    ("pingpong_sleep", "median_us", "ping-pong round trip after a 2 ms sleep (median, us)"),
    ("reqrep", "median_us", "request/reply round trip (median, us)"),
    ("stream", "per_message_us", "one-way stream, a 16-character std::string (us a message)"),
    ("stream_array", "per_message_us", "one-way stream, a std::array<char, 16> (us a message)", "stream"),
    ("broadcast", "per_message_us", "broadcast to 8 (us a message)"),
    ("eight_sends", "per_message_us", "8 sends to 8 (us a message)"),
]


def run(command):
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def one_round(build, extra):
    results = run([str(build / "bench" / "bench_messages"), "--json", *extra])
    zmq = build / "bench" / "zmq_messages"
    if zmq.exists():
        results += run([str(zmq), "--json", *extra])
    else:
        print("compare_messages: no zmq_messages (libzmq3-dev missing); ZeroMQ left out", file=sys.stderr)
    results += run(["/usr/bin/python3", str(Path(__file__).with_name("message_peers.py")), "--json", *extra])
    return results


def medians(results):
    """One result per (peer, workload), each number field the median of the rounds' figures."""
    rounds = {}
    for r in results:
        rounds.setdefault((r["peer"], r["workload"]), []).append(r)
    table = {}
    for key, runs in rounds.items():
        merged = dict(runs[0])
        for field, value in runs[0].items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                merged[field] = statistics.median(r[field] for r in runs if r[field] is not None)
        table[key] = merged
    return table


def main():
    build = Path(sys.argv[1])
    extra = ["--quick"] if "--quick" in sys.argv else []
    count = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else 1
    results = []
    for _ in range(count):
        results += one_round(build, extra)

    peers = []
    for r in results:
        if r["peer"] not in peers:
            peers.append(r["peer"])
    table = medians(results)
    if count > 1:
        print(f"Medians of {count} rounds.\n")
    others = [p for p in peers if p != "multiworker"]
    print("| workload | " + " | ".join(peers) + " | " + " | ".join(f"vs {p}" for p in others) + " |")
    print("|---" * (1 + len(peers) + len(others)) + "|")
    for workload, field, label, *peer_workload in WORKLOADS:
        theirs = peer_workload[0] if peer_workload else workload
        values = {p: table.get((p, workload if p == "multiworker" else theirs), {}).get(field) for p in peers}
        if all(v is None for v in values.values()):
            continue
        ours = values.get("multiworker")
        cells = [f"{values[p]:.3g}" if values[p] is not None else "" for p in peers]
        ratios = [f"{values[p] / ours:.1f}x" if ours and values[p] else "" for p in others]
        print(f"| {label} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    idle = table.get(("multiworker", "idle_cpu"))
    if idle:
        print(f"\nIdle multiworker process (waiting 2 s in receive()): {idle['percent_of_core']:.3f} % of a core.")


if __name__ == "__main__":
    main()
