#!/usr/bin/python3
"""Python peers of a multiworker message-passing benchmark (standard library only).

Peers, both between processes forked by multiprocessing's "fork" context:

  python_pipe    multiprocessing.Pipe() (duplex), 16-byte messages with
                 send_bytes/recv_bytes: the message already is bytes, so this
                 is the Pipe's cheapest path (no pickling), the strongest
                 Python peer. One Pipe per receiver for the broadcast.
  python_queue   multiprocessing.Queue, which always pickles and writes from
                 a feeder thread. Two queues per child, one each way (the
                 way back carries the replies, the ready and the completion
                 messages); for the broadcast, a pair per receiver.

Workloads (a message is a 16-byte bytes object):

  pingpong   a message bounced between two processes. pingpong_busy: the
             median round trip over 20,000 back-to-back round trips (after
             1,000 untimed). pingpong_sleep: the initiator sleeps 2 ms before
             each of 300 round trips (the receiver is asleep in recv by then,
             so its wake-up is in the figure); the median of those.
  stream     2,000,000 messages one way; the receiver counts them and sends
             the count back. Timed in the sender from the first send to the
             count's arrival: us per message and messages/s.
  broadcast  each of 100,000 messages sent to 8 receiver processes (8 sends,
             one per receiver, as neither peer has a broadcast primitive);
             timed until all 8 have counted all and said so: us per
             broadcast message and broadcast messages/s.
  reqrep     ping-pong framed as a request: an 8-byte id (little endian)
             and 8 bytes of payload; the reply carries the request's id,
             which the initiator checks. 20,000 timed, median round trip.

Processes are started, and have said they are ready, before any timing
starts: start-up is never part of a figure. --quick runs 10x fewer
iterations of everything (the sleeping ping-pong too).

Output: a table, or with --json one JSON object per line and per
(peer, workload), such as (on one line)
  {"peer": "python_pipe", "workload": "pingpong_busy", "median_us": 21.3,
   "per_message_us": null, "messages_per_s": null}
median_us is set for the round-trip workloads (pingpong_busy, pingpong_sleep,
reqrep), per_message_us and messages_per_s for the one-way ones (stream,
broadcast); the others are null. bench/zmq_messages.cpp prints the same.

Usage: bench/message_peers.py [--json] [--quick] [--workloads pingpong,stream,broadcast,reqrep]
"""
import argparse
import ctypes
import json
import multiprocessing
import multiprocessing.connection
import os
import signal
import statistics
import struct
import sys
import threading
import time

ctx = multiprocessing.get_context("fork")  # Linux's default before Python 3.14; pinned for comparability

MESSAGE = b"0123456789abcdef"
assert len(MESSAGE) == 16
REQUEST = struct.Struct("<Q8s")  # id, payload: 16 bytes, as MESSAGE
READY = b"ready"
RECEIVERS = 8
SLEEP_S = 0.002
WORKLOADS = ("pingpong", "stream", "broadcast", "reqrep")


class Sizes:
    def __init__(self, quick):
        scale = 10 if quick else 1
        self.warmup = 1_000 // scale
        self.pingpong = 20_000 // scale
        self.sleeping = 300 // scale
        self.stream = 2_000_000 // scale
        self.broadcast = 100_000 // scale
        self.reqrep = 20_000 // scale


# --------------------------------------------------------------------------------------------------
# Two-sided message channels. The round trip and one-way loops below are written once over these,
# so both peers run the very same loop and differ only in the transport.
# --------------------------------------------------------------------------------------------------
class PipeEnd:
    """One end of a duplex Pipe. Each side closes the other's end once the child is started, so
    (with a single child) a vanished peer is an EOFError rather than a recv blocked for ever."""

    def __init__(self, mine, other):
        self.mine, self.other = mine, other

    def in_child(self):
        self.other.close()
        return self

    def started(self):
        self.other.close()

    def abandon(self):
        pass

    def send(self, data):
        self.mine.send_bytes(data)

    def recv(self):
        return self.mine.recv_bytes()


class QueuePair:
    """Two Queues, one per direction, seen from one side."""

    def __init__(self, out_q, in_q):
        self.out_q, self.in_q = out_q, in_q

    def in_child(self):
        return self

    def started(self):
        pass

    def abandon(self):
        # The feeder thread would otherwise be joined at exit, blocked for ever writing to a pipe
        # no process reads any more.
        self.out_q.cancel_join_thread()

    def send(self, data):
        self.out_q.put(data)

    def recv(self):
        return self.in_q.get()


def pipe_channel():
    """(parent side, child side) of a Pipe."""
    a, b = ctx.Pipe(duplex=True)
    return PipeEnd(a, b), PipeEnd(b, a)


def queue_channel():
    to_child, to_parent = ctx.Queue(), ctx.Queue()
    return QueuePair(to_child, to_parent), QueuePair(to_parent, to_child)


PEERS = {"python_pipe": pipe_channel, "python_queue": queue_channel}


# --------------------------------------------------------------------------------------------------
# The child processes' sides
# --------------------------------------------------------------------------------------------------
PR_SET_PDEATHSIG = 1


def child_setup(channel):
    """A Queue child never sees its parent go (it holds both ends of the queue's pipe itself), so
    the kernel kills it when the parent dies. Ctrl-C reaches the whole process group: only the
    parent acts on it, terminating its children without a traceback from each."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != multiprocessing.parent_process().pid:  # died before prctl
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    return channel.in_child()


def echo(channel, count):
    channel = child_setup(channel)
    channel.send(READY)
    for _ in range(count):
        channel.send(channel.recv())


def serve(channel, count):
    """Replies to `count` requests, each reply carrying its request's id."""
    channel = child_setup(channel)
    channel.send(READY)
    for _ in range(count):
        request_id, _payload = REQUEST.unpack(channel.recv())
        channel.send(REQUEST.pack(request_id, b"reply..."))


def count_messages(channel, count):
    """Counts `count` messages, then sends back how many were 16 bytes (all, unless broken)."""
    channel = child_setup(channel)
    channel.send(READY)
    good = 0
    for _ in range(count):
        good += len(channel.recv()) == 16
    channel.send(struct.pack("<Q", good))


# --------------------------------------------------------------------------------------------------
# The parent's side
# --------------------------------------------------------------------------------------------------
class ChildDied(Exception):
    pass


def on_child_died(signum, frame):
    raise ChildDied


class Children:
    """Started child processes, each with the parent's side of its channel. Leaving the block
    joins them all; on an error they are terminated first, so no process outlives the run.

    A child that dies before the parent is done would leave the parent blocked for ever (a Queue's
    get never sees it go, nor does a Pipe whose other end a sibling inherited), so a watchdog
    thread, asleep until a child exits, then interrupts the parent's main thread with SIGUSR1
    (main() makes that raise ChildDied) unless the child exited with 0."""

    def __init__(self, make_channel, target, count, how_many=1):
        self.channels, self.procs = [], []
        for _ in range(how_many):
            parent_side, child_side = make_channel()
            self.channels.append(parent_side)
            self.procs.append(ctx.Process(target=target, args=(child_side, count), daemon=True))
        self.closing = False
        self.watchdog = threading.Thread(target=self.watch, daemon=True)

    def watch(self):
        waiting = {p.sentinel: p for p in self.procs}
        while waiting:
            for sentinel in multiprocessing.connection.wait(list(waiting)):
                pid = waiting.pop(sentinel).pid
                try:
                    # WNOWAIT reads the status and leaves the child for multiprocessing to reap.
                    status = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
                except ChildProcessError:
                    continue  # already reaped: the parent is joining, so done
                failed = status.si_code != os.CLD_EXITED or status.si_status != 0
                if failed and not self.closing:
                    signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)
                    return

    def __enter__(self):
        for p in self.procs:
            p.start()
        for c in self.channels:
            c.started()
        self.watchdog.start()
        try:
            for c in self.channels:
                if c.recv() != READY:
                    raise RuntimeError("child: no ready message")
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return self.channels

    def __exit__(self, exc_type, exc, tb):
        self.closing = True
        if exc_type is not None:
            for c in self.channels:
                c.abandon()
            for p in self.procs:
                p.terminate()
        for p in self.procs:
            p.join()
        self.watchdog.join()
        codes = [p.exitcode for p in self.procs]
        if exc_type is ChildDied or (exc_type is None and any(codes)):
            raise RuntimeError(f"a child failed: exit codes {codes}") from None
        return False


def round_trips(channel, count, message=MESSAGE, pause_s=0.0):
    """Microseconds of each of `count` round trips."""
    samples = []
    clock = time.perf_counter_ns
    for _ in range(count):
        if pause_s:
            time.sleep(pause_s)
        start = clock()
        channel.send(message)
        channel.recv()
        samples.append((clock() - start) / 1e3)
    return samples


def pingpong(make_channel, sizes):
    total = sizes.warmup + sizes.pingpong + sizes.sleeping
    with Children(make_channel, echo, total) as (channel,):
        round_trips(channel, sizes.warmup)
        busy = round_trips(channel, sizes.pingpong)
        sleeping = round_trips(channel, sizes.sleeping, pause_s=SLEEP_S)
    return [("pingpong_busy", round_trip_result(busy)), ("pingpong_sleep", round_trip_result(sleeping))]


def reqrep(make_channel, sizes):
    total = sizes.warmup + sizes.reqrep
    samples = []
    clock = time.perf_counter_ns
    with Children(make_channel, serve, total) as (channel,):
        for request_id in range(total):
            start = clock()
            channel.send(REQUEST.pack(request_id, b"request."))
            reply_id, _payload = REQUEST.unpack(channel.recv())
            elapsed = clock() - start
            if reply_id != request_id:
                raise RuntimeError(f"reply to request {request_id} carries id {reply_id}")
            if request_id >= sizes.warmup:
                samples.append(elapsed / 1e3)
    return [("reqrep", round_trip_result(samples))]


def one_way(make_channel, count, receivers):
    """Seconds from the first send until every receiver has counted all `count` messages."""
    with Children(make_channel, count_messages, count, receivers) as channels:
        start = time.perf_counter()
        for _ in range(count):
            for channel in channels:
                channel.send(MESSAGE)
        counts = [struct.unpack("<Q", channel.recv())[0] for channel in channels]
        elapsed = time.perf_counter() - start
    if counts != [count] * receivers:
        raise RuntimeError(f"receivers counted {counts} of {count} messages")
    return elapsed


def stream(make_channel, sizes):
    return [("stream", one_way_result(one_way(make_channel, sizes.stream, 1), sizes.stream))]


def broadcast(make_channel, sizes):
    elapsed = one_way(make_channel, sizes.broadcast, RECEIVERS)
    return [("broadcast", one_way_result(elapsed, sizes.broadcast))]


RUNS = {"pingpong": pingpong, "stream": stream, "broadcast": broadcast, "reqrep": reqrep}


def round_trip_result(samples_us):
    return {"median_us": statistics.median(samples_us), "per_message_us": None, "messages_per_s": None}


def one_way_result(elapsed_s, count):
    return {"median_us": None, "per_message_us": elapsed_s / count * 1e6, "messages_per_s": count / elapsed_s}


def workload_list(text):
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in WORKLOADS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown workload(s) {unknown}; choose from {','.join(WORKLOADS)}")
    return names


def number(value, digits):
    return "-" if value is None else f"{value:,.{digits}f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    parser.add_argument("--quick", action="store_true", help="10x fewer iterations")
    parser.add_argument("--workloads", type=workload_list, default=list(WORKLOADS),
                        help=f"comma-separated, of {','.join(WORKLOADS)} (all)")
    args = parser.parse_args()
    sizes = Sizes(args.quick)
    # SIGTERM and SIGHUP unwind as Ctrl-C does, so the children are terminated and joined.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGHUP, signal.default_int_handler)
    signal.signal(signal.SIGUSR1, on_child_died)

    if not args.json:
        print(f"{'peer':<16}{'workload':<18}{'median us':>12}{'us/msg':>10}{'msgs/s':>14}")
    for peer, make_channel in PEERS.items():
        for workload in args.workloads:
            try:
                results = RUNS[workload](make_channel, sizes)
            except (RuntimeError, EOFError, OSError) as error:
                sys.exit(f"message_peers: {peer} {workload}: {error}")
            except KeyboardInterrupt:
                sys.exit(f"message_peers: {peer} {workload}: interrupted")
            for name, r in results:
                if args.json:
                    # 9 significant digits, as bench/zmq_messages.cpp prints them (%.9g)
                    rounded = {key: None if v is None else float(f"{v:.9g}") for key, v in r.items()}
                    print(json.dumps({"peer": peer, "workload": name, **rounded}), flush=True)
                else:
                    print(f"{peer:<16}{name:<18}{number(r['median_us'], 2):>12}"
                          f"{number(r['per_message_us'], 3):>10}{number(r['messages_per_s'], 0):>14}", flush=True)


if __name__ == "__main__":
    main()
