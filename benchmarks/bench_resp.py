"""Micro-benchmark for memd.resp: request parsing and reply encoding.

Run: ``python benchmarks/bench_resp.py`` (from the repo root). Prints µs per
command, best of many short runs (this box is noisy: min filters out steal).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import hiredis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from memd.resp import ReplyEncoder, RequestParser, bulk, integer  # noqa: E402

SET = b"*3\r\n$3\r\nSET\r\n$16\r\nkey:000000000001\r\n$3\r\nxxx\r\n"
GET = b"*2\r\n$3\r\nGET\r\n$16\r\nkey:000000000001\r\n"
BIG = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5000\r\n" + b"v" * 5000 + b"\r\n"
LIMITS = (512 * 1024 * 1024, 1024 * 1024, 64 * 1024)


def best(fn: Callable[[], object], ops: int, reps: int = 60, loops: int = 40) -> float:
    """Minimum over ``reps`` runs of µs per op (``fn`` does ``ops`` ops per call)."""
    result = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        for _ in range(loops):
            fn()
        result = min(result, (time.perf_counter() - start) / loops / ops * 1e6)
    return result


def feeder(parser: RequestParser, data: bytes) -> Callable[[], object]:
    def run() -> object:
        parser.feed(data)
        return parser.commands()
    return run


def bare_hiredis(data: bytes) -> Callable[[], object]:
    need = object()
    reader = hiredis.Reader(notEnoughData=need)

    def run() -> object:
        reader.feed(data)
        return list(iter(reader.gets, need))
    return run


def bench_parsers() -> None:
    for name, cmd, per in (("SET", SET, 100), ("GET", GET, 100), ("SET 5KB", BIG, 10), ("SET", SET, 1)):
        data = cmd * per
        hybrid = feeder(RequestParser(*LIMITS), data)
        python = feeder(RequestParser(*LIMITS, accelerate=False), data)
        bare = bare_hiredis(data)
        assert hybrid() == python() == bare()
        print(f"{name:<8} x{per:<3} per feed: RequestParser {best(hybrid, per):.3f}   "
              f"accelerate=False {best(python, per):.3f}   bare hiredis.Reader {best(bare, per):.3f}  µs/cmd")
    # A pipeline cut mid-frame on every read (4000-byte reads).
    stream = SET * 2000
    reads = [stream[i:i + 4000] for i in range(0, len(stream), 4000)]
    for accelerate in (True, False):
        parser = RequestParser(*LIMITS, accelerate=accelerate)

        def split(parser: RequestParser = parser) -> object:
            for chunk in reads:
                parser.feed(chunk)
                parser.commands()
            return None
        print(f"SET stream in 4000-byte reads, accelerate={accelerate}: {best(split, 2000, reps=10, loops=3):.3f} µs/cmd")


def bench_encoder() -> None:
    enc = ReplyEncoder(3)
    value = b"x" * 32
    nested = {b"field%d" % i: b"value%d" % i for i in range(10)}
    print(f"reply    bulk() {best(lambda: bulk(value), 1):.3f}   integer(5000) {best(lambda: integer(5000), 1):.3f}   "
          f"encode(bytes) {best(lambda: enc.encode(value), 1):.3f}   encode(None) {best(lambda: enc.encode(None), 1):.3f}   "
          f"encode(10-field dict, RESP3) {best(lambda: enc.encode(nested), 1):.3f}  µs")


if __name__ == "__main__":
    import argparse

    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()  # --help; no options
    bench_parsers()
    bench_encoder()
