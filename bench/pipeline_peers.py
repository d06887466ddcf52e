#!/usr/bin/python3
"""Python peers of a multiworker Pipeline benchmark (standard library only).

Workload: items 0..N-1, a stage computing x + 1 on 2 worker processes, a
consumer summing the outputs; the sum must equal N*(N+1)/2 (exit 1 if not).

  queue_pipeline                   the classic producer/consumer design: a producer
                                   process puts the items on a multiprocessing.Queue,
                                   2 worker processes take them and put x + 1 on a
                                   second Queue, a consumer process sums. End of
                                   stream by None sentinels: one per worker from the
                                   producer, each worker forwards one, the consumer
                                   stops after 2. The sum reaches the parent on a Queue.
  pool_imap_unordered_chunksize1   multiprocessing.Pool(2).imap_unordered(f, range(N),
                                   chunksize=1), summed in the parent.

Each repetition is timed from before anything is started (queues, processes,
pool) to the moment the parent has the sum, so process start-up is included;
tearing the processes down afterwards is not. Reported: microseconds per item
and items per second, median over R repetitions.

Usage: bench/pipeline_peers.py [--items N] [--repetitions R] [--json]
"""
import argparse
import json
import multiprocessing
import statistics
import sys
import time

WORKERS = 2
ctx = multiprocessing.get_context("fork")  # Linux's default before Python 3.14; pinned for comparability


def f(x):
    return x + 1


def producer(n, out_q):
    for i in range(n):
        out_q.put(i)
    for _ in range(WORKERS):
        out_q.put(None)


def worker(in_q, out_q):
    while (x := in_q.get()) is not None:
        out_q.put(f(x))
    out_q.put(None)


def consumer(in_q, result_q):
    total, ends = 0, 0
    while ends < WORKERS:
        y = in_q.get()
        if y is None:
            ends += 1
        else:
            total += y
    result_q.put(total)


def queue_pipeline(n):
    """Seconds from creating the queues to the parent holding the sum."""
    start = time.perf_counter()
    items, outputs, result = ctx.Queue(), ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=producer, args=(n, items))]
    procs += [ctx.Process(target=worker, args=(items, outputs)) for _ in range(WORKERS)]
    procs.append(ctx.Process(target=consumer, args=(outputs, result)))
    for p in procs:
        p.start()
    total = result.get()
    elapsed = time.perf_counter() - start
    for p in procs:
        p.join()
    return elapsed, total


def pool_imap_unordered(n):
    """Seconds from creating the pool to the parent holding the sum."""
    start = time.perf_counter()
    with ctx.Pool(WORKERS) as pool:
        total = sum(pool.imap_unordered(f, range(n), chunksize=1))
        elapsed = time.perf_counter() - start
    return elapsed, total


def measure(run, n, repetitions):
    expected = n * (n + 1) // 2
    samples = []
    for _ in range(repetitions):
        elapsed, total = run(n)
        if total != expected:
            sys.exit(f"pipeline_peers: {run.__name__}: sum {total} != expected {expected}")
        samples.append(elapsed / n * 1e6)
    median = statistics.median(samples)
    return {"median_us_per_item": median, "items_per_s": 1e6 / median, "samples_us_per_item": samples}


def positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=positive, default=100_000, help="N, items per repetition (100000)")
    parser.add_argument("--repetitions", type=positive, default=5, help="R, repetitions, median reported (5)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args()

    results = {
        "queue_pipeline": measure(queue_pipeline, args.items, args.repetitions),
        "pool_imap_unordered_chunksize1": measure(pool_imap_unordered, args.items, args.repetitions),
    }
    if args.json:
        print(json.dumps(results))
        return
    print(f"N = {args.items}, median of {args.repetitions}, {WORKERS} workers, process start-up included")
    print(f"{'peer':<34}{'us/item':>10}{'items/s':>14}")
    for name, r in results.items():
        print(f"{name:<34}{r['median_us_per_item']:>10.2f}{r['items_per_s']:>14,.0f}")


if __name__ == "__main__":
    main()
