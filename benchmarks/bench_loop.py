"""Server batch loop in-process: event-loop CPU per pipelined command, no sockets.

Run: ``python3 benchmarks/bench_loop.py`` (from the repo root; ``-n`` commands per run).

What redis-benchmark ``-c 50 -P 16`` makes the daemon's event-loop thread do,
minus the kernel: 50 connections each deliver reads of 16 commands to
``Connection.data_received`` (a real engine, everysec, nothing flushed;
the tests' fake transport collects the replies) and the group ack runs once per
pass over them. Printed per workload: µs per command on the fast path, and
on the per-command path (runs of plain SET disabled) in the same process, so
the ratio survives this machine's noise (CPU time of the loop's thread; the hit workloads read what an untimed
SET pass over the same keys buffered first); then plain SETs again under
CPython's default GC thresholds instead of the daemon's (the buffer grows to
~450,000 keys: the cost of the default thresholds grows with it). Best of
``--rounds`` runs.

Then bulk memory ingest: MEM.PUTs of ~1 KB JSON values (``--mem-n`` of them), whose fast
path is the run handler (one batch per read); and the same puts while a flush of as many
memories already buffered runs in its worker thread: what the flush (FTS5 indexing, row
building under the GIL) costs the event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import memd.server as server_mod  # noqa: E402
from memd.daemon import GC_THRESHOLDS  # noqa: E402
from memd.engine.engine import Engine  # noqa: E402
from memd.server import Connection, Server  # noqa: E402
from tests.fake_transport import FakeTransport  # noqa: E402

CONNECTIONS = 50
PIPELINE = 16
VALUE = b"v" * 200
BIG = 1 << 40
PYTHON_GC = (700, 10, 10)  # CPython's defaults


class PerCommand(Connection):
    """The same loop with runs disabled (plain SETs, MEM.PUTs): every command is dispatched on its own."""

    def _run_ok(self) -> bool:
        return False

    def _read_ok(self) -> bool:
        return False


def frame(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in args)


# Each workload turns the 16 keys of one read into that read's commands.
WORKLOADS: dict[str, Callable[[list[bytes]], list[bytes]]] = {
    "SET k v": lambda keys: [frame(b"SET", k, VALUE) for k in keys],
    "SET k v, GET k alternating": lambda keys: [  # runs of one SET
        frame(b"SET", k, VALUE) if i % 2 == 0 else frame(b"GET", keys[i - 1]) for i, k in enumerate(keys)],
    "GET k (miss)": lambda keys: [frame(b"GET", k) for k in keys],
    "GET k (hit, buffered)": lambda keys: [frame(b"GET", k) for k in keys],
    "MGET k1..k4 (hit, buffered)": lambda keys: [frame(b"MGET", *keys[i:i + 4]) for i in range(0, len(keys), 4)],
}
# workloads that read keys a SET pass over the same keys wrote first (untimed)
PRELOADED = {"GET k (hit, buffered)", "MGET k1..k4 (hit, buffered)"}


WORDS = [f"w{i}" for i in range(3000)]


def mem_put(i: int, rng: random.Random) -> bytes:
    text = " ".join(rng.choice(WORDS) for _ in range(180))[:1000]
    value = json.dumps({"text": text, "kind": "fact", "stars": i % 5 + 1, "topic": f"t{i % 12}"})
    return frame(b"MEM.PUT", b"user-%d.memories" % (i % 10), b"m%09d" % i, value.encode())


def mem_reads(first: int, n: int, rng: random.Random) -> list[bytes]:
    puts = [mem_put(first + i, rng) for i in range(n)]
    return [b"".join(puts[i:i + PIPELINE]) for i in range(0, n, PIPELINE)]


def reads(workload: str, n: int, rng: random.Random) -> list[bytes]:
    make = WORKLOADS[workload]
    return [b"".join(make([b"key:%012d" % rng.randrange(1_000_000) for _ in range(PIPELINE)]))
            for _ in range(n // PIPELINE)]


async def run(kind: type[Connection], batches: list[bytes], flushing: list[bytes] | None = None,
              preload: list[bytes] | None = None) -> float:
    """µs of event loop per command; ``flushing``: reads buffered first, then flushed during the timed part;
    ``preload``: reads run first, untimed (the SETs a read workload's hits find)."""
    d = tempfile.mkdtemp(prefix="memd-loop-")
    try:
        async with Engine(d, fsync="everysec", flush_max_records=BIG, flush_max_bytes=BIG, flush_max_age=3600,
                          buffer_max_bytes=BIG) as engine:
            server = Server(engine, os.path.join(d, "unused.sock"))
            conns = []
            for _ in range(CONNECTIONS):
                conn = kind(server)
                conn.connection_made(FakeTransport())  # type: ignore[arg-type]
                conns.append(conn)
            flush = None
            if preload:
                await feed(server, conns, preload)
            if flushing:
                await feed(server, conns, flushing)
                flush = asyncio.create_task(engine.flush())
                await asyncio.sleep(0)  # the flush's thread starts
            done = server.stats_commands
            # the loop thread's CPU time, not the wall clock: another process on this shared box then
            # costs nothing; with a flush running, the wall clock, which the GIL's waits count in
            clock = time.perf_counter if flushing else time.thread_time
            t0 = clock()
            await feed(server, conns, batches)
            elapsed = clock() - t0
            if flush is not None:
                assert not flush.done(), "the flush ended before the timed part did: raise --mem-n"
                await flush
            return elapsed / (server.stats_commands - done) * 1e6
    finally:
        shutil.rmtree(d, ignore_errors=True)


async def feed(server: Server, conns: list[Connection], batches: list[bytes]) -> None:
    """Deliver each read to the next connection, one event-loop pass per round of them; wait for every reply."""
    want = server.stats_commands + sum(b.count(b"\r\n*") + 1 for b in batches)
    for i, data in enumerate(batches):
        conns[i % CONNECTIONS].data_received(data)
        if i % CONNECTIONS == CONNECTIONS - 1:
            await asyncio.sleep(0)  # one event-loop pass: the group ack answers every connection
    deadline = time.monotonic() + 120
    while server.stats_commands < want or any(c.busy for c in conns):
        # a batch whose ack waits (the syncer creating a new WAL segment) keeps later reads buffered
        assert time.monotonic() < deadline, "the connections did not drain"
        await asyncio.sleep(0.0005)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=600_000, help="commands per run (default 600,000)")
    ap.add_argument("--rounds", type=int, default=3, help="runs per variant, alternating; the best counts")
    ap.add_argument("--mem-n", type=int, default=40_000, help="MEM.PUTs per run (default 40,000)")
    ap.add_argument("--only-mem", action="store_true", help="the MEM.PUT rows only")
    ap.add_argument("--only", action="append", default=[], metavar="WORKLOAD",
                    help="run only the workloads whose name starts with this (repeatable; MEM.PUT rows skipped)")
    args = ap.parse_args()
    # the fake transport has no socket to ask for peer credentials: this process's own
    server_mod.peer_credentials = lambda sock: (os.getpid(), os.geteuid(), os.getegid(), [])
    print(f"{CONNECTIONS} connections x {PIPELINE} pipelined commands per read, 200-byte values over 1M keys, "
          f"{args.n:,} commands per run, best of {args.rounds}; GC thresholds as the daemon sets them "
          f"{GC_THRESHOLDS} unless said")
    print(f"{'workload':<44} {'fast path':>12} {'per command':>12} {'ratio':>8}")
    variants: list[tuple[str, str, tuple[int, int, int]]] = [
        (w, w, GC_THRESHOLDS) for w in WORKLOADS] + [("SET k v", "SET k v, Python's default GC thresholds",
                                                       PYTHON_GC)]
    if args.only:
        variants = [v for v in variants if any(v[1].startswith(o) for o in args.only)]
    for workload, label, thresholds in [] if args.only_mem else variants:
        batches = reads(workload, args.n, random.Random(1))
        preload = reads("SET k v", args.n, random.Random(1)) if workload in PRELOADED else None
        gc.set_threshold(*thresholds)
        fast, slow = float("inf"), float("inf")
        for _ in range(args.rounds):
            fast = min(fast, await run(Connection, batches, preload=preload))
            slow = min(slow, await run(PerCommand, batches, preload=preload))
        print(f"{label:<44} {fast:>9.2f} µs {slow:>9.2f} µs {fast / slow:>7.2f}x")
    gc.set_threshold(*GC_THRESHOLDS)
    if args.only:
        return
    puts = mem_reads(0, args.mem_n, random.Random(2))
    buffered = mem_reads(args.mem_n, args.mem_n, random.Random(3))
    for label, flushing in ((f"MEM.PUT ~1 KB JSON ({args.mem_n:,})", None),
                            (f"MEM.PUT, {args.mem_n:,} more flushing meanwhile", buffered)):
        fast, slow = float("inf"), float("inf")
        for _ in range(args.rounds):
            fast = min(fast, await run(Connection, puts, flushing))
            slow = min(slow, await run(PerCommand, puts, flushing))
        print(f"{label:<44} {fast:>9.2f} µs {slow:>9.2f} µs {fast / slow:>7.2f}x")


if __name__ == "__main__":
    asyncio.run(main())
