#!/usr/bin/env python3
"""Writes the fuzz target's seed corpus: valid frames and log records, so the
fuzzer starts from inputs that reach deep into the decoders."""
import os
import struct
import sys

out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus")
os.makedirs(out, exist_ok=True)

MAGIC_FRAME = 0x574D
MAGIC_LOG = 0x474C574D


def frame(kind, sequence, payload):
    return struct.pack("<HHIQ", MAGIC_FRAME, kind, sequence, len(payload)) + payload


def archive_string(text):
    # Boost binary archive (no header) of std::string: 8-byte length, then bytes.
    return struct.pack("<Q", len(text)) + text


def failure(kind, type_name, message):
    return struct.pack("<I", kind) + archive_string(type_name) + archive_string(message)


def log_record(level, name, text):
    return struct.pack("<IIqII", MAGIC_LOG, level, 1_700_000_000_000_000_000, len(name), len(text)) + name + text


def plain_sequences():
    # A vector<pair<int, string>> of one element, a vector<vector<string>> of one of one,
    # then an optional<set<int>> holding one number.
    pairs = struct.pack("<Q", 1) + struct.pack("<i", 7) + archive_string(b"hi")
    nested = struct.pack("<QQ", 1, 1) + archive_string(b"x")
    maybe_set = struct.pack("<BQi", 1, 1, 42)
    return pairs + nested + maybe_set


# A result frame's sequence number picks the type the fuzz target decodes it as (sequence % 6).
seeds = {
    "frames_string": b"\x00\x07" + frame(2, 6, archive_string(b"hello")),
    "frames_two": b"\x00\x01" + frame(2, 0, archive_string(b"a")) + frame(2, 5, struct.pack("<id", 3, 1.5)),
    "frames_sequences": b"\x00\x09" + frame(2, 4, plain_sequences()),
    "frames_failure": b"\x00\x20" + frame(3, 1, failure(0, b"std::runtime_error", b"boom")),
    "frames_vector": b"\x00\x03" + frame(2, 1, struct.pack("<QI", 3, 0) + struct.pack("<3i", 1, 2, 3)),
    "ring_frame": b"\x01\x00" + struct.pack("<QQ", 0, 29) + frame(2, 6, archive_string(b"hello")),
    "log_records": b"\x02\x05" + log_record(2, b"", b"task 1 done") + log_record(3, b"named", b"careful"),
}
for name, data in seeds.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
print(f"wrote {len(seeds)} seeds to {out}")
