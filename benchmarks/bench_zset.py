"""Sorted-set range benchmark: score-ordered reads on one big sorted set, memd against redis-server.

One command (``python3 benchmarks/bench_zset.py``): a fresh ``memd serve`` and a
fresh ``redis-server`` (no persistence: only reads are timed) each get the same
sorted set of ``--members`` members (default 1,000,000; scores random, seeded),
loaded with pipelined ZADDs of 1,000 pairs. memd's buffer is then flushed, so
the set is in SQLite and a read goes through the store's score index; a second
round repeats the reads after ``--changes`` random ZADD/ZREM over the flushed
members are left in memd's buffer, so each read also merges the buffer.

Timed, one request in flight over the Unix socket (round trip, client included),
``--queries`` of each with random bounds, p50 and p99 in microseconds:

- ``ZRANGEBYSCORE key min +inf LIMIT 0 10`` (the target: under 1 ms at 1,000,000 members)
- ``ZREVRANGEBYSCORE key max -inf LIMIT 0 10``
- ``ZRANGE key min +inf BYSCORE LIMIT 0 10``
- ``ZCOUNT key min max`` over about 1,000 members
- ``ZRANK key member``: memd counts the members before it in SQLite's index (O(rank)), Redis's
  skiplist is O(log n): the row shows the difference

``--members 2000 --queries 50`` is the quick form the test suite runs.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import redis
from benchutil import REPO, Cleanup, Interrupted, machine_line, memd_build, raise_interrupted, wait_ready

REDIS_SERVER = "/usr/bin/redis-server"
START_DEADLINE = 60.0
BATCH = 1000  # members per ZADD while loading
TARGET_US = 1000.0  # ZRANGEBYSCORE ... LIMIT 0 10 at 1,000,000 members
SCORE_RANGE = 1_000_000.0


def start(kind: str, cleanup: Cleanup) -> tuple[subprocess.Popen[bytes], str]:
    d = cleanup.mkdtemp(f"bz-{kind[0]}-")
    sock = os.path.join(d, "s.sock")
    log = os.path.join(d, "server.log")
    if kind == "redis":
        cmd = [REDIS_SERVER, "--port", "0", "--unixsocket", sock, "--unixsocketperm", "700", "--dir", d,
               "--appendonly", "no", "--save", "", "--daemonize", "no", "--logfile", ""]
    else:
        cmd = [sys.executable, "-m", "memd", "serve", "--socket", sock, "--data-dir", os.path.join(d, "data"),
               "--fsync", "no"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                                start_new_session=True)
    cleanup.procs.append(proc)
    wait_ready(sock, proc, log, START_DEADLINE)
    return proc, sock


def load(r: redis.Redis, members: int, seed: int) -> float:
    """The set ``big``: member ``m<n>`` with a random score; returns the seconds it took."""
    rng = random.Random(seed)
    t0 = time.perf_counter()
    pipe = r.pipeline(transaction=False)
    for start in range(0, members, BATCH):
        pairs: list[bytes | float] = []
        for n in range(start, min(members, start + BATCH)):
            pairs += (rng.uniform(0, SCORE_RANGE), b"m%d" % n)
        pipe.execute_command("ZADD", "big", *pairs)
        if len(pipe) >= 20:
            pipe.execute()
    pipe.execute()
    return time.perf_counter() - t0


def change(r: redis.Redis, members: int, changes: int, seed: int) -> None:
    """Random rescoring, removals and additions over the loaded members (memd keeps them buffered)."""
    rng = random.Random(seed)
    pipe = r.pipeline(transaction=False)
    for _ in range(changes):
        n = rng.randrange(members + members // 10)
        if rng.random() < 0.2:
            pipe.execute_command("ZREM", "big", b"m%d" % n)
        else:
            pipe.execute_command("ZADD", "big", rng.uniform(0, SCORE_RANGE), b"m%d" % n)
        if len(pipe) >= 500:
            pipe.execute()
    pipe.execute()


Query = Callable[[random.Random], list[bytes | str | float]]


def queries(members: int) -> dict[str, Query]:
    width = SCORE_RANGE * 1000 / members  # about 1,000 members between min and max
    return {
        "ZRANGEBYSCORE min +inf LIMIT 0 10":
            lambda g: ["ZRANGEBYSCORE", "big", g.uniform(0, SCORE_RANGE), "+inf", "LIMIT", 0, 10],
        "ZREVRANGEBYSCORE max -inf LIMIT 0 10":
            lambda g: ["ZREVRANGEBYSCORE", "big", g.uniform(0, SCORE_RANGE), "-inf", "LIMIT", 0, 10],
        "ZRANGE min +inf BYSCORE LIMIT 0 10":
            lambda g: ["ZRANGE", "big", g.uniform(0, SCORE_RANGE), "+inf", "BYSCORE", "LIMIT", 0, 10],
        "ZCOUNT over ~1,000 members":
            lambda g: (lambda lo: ["ZCOUNT", "big", lo, lo + width])(g.uniform(0, SCORE_RANGE)),
        "ZRANK random member": lambda g: ["ZRANK", "big", b"m%d" % g.randrange(members)],
    }


def measure(r: redis.Redis, query: Query, n: int, seed: int) -> tuple[float, float]:
    """p50 and p99 of n round trips, in microseconds (the same seeded arguments on each side)."""
    rng = random.Random(seed)
    times = []
    for _ in range(n):
        args = query(rng)
        t0 = time.perf_counter()
        r.execute_command(*args)
        times.append((time.perf_counter() - t0) * 1e6)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.99))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--members", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--changes", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, raise_interrupted)
    cleanup = Cleanup()
    print(machine_line())
    print(f"memd: {memd_build()}")
    print(f"redis: {subprocess.run([REDIS_SERVER, '--version'], capture_output=True, text=True).stdout.strip()}")
    print(f"{args.members:,} members, {args.queries:,} queries per row, one request in flight; "
          f"round trip in microseconds (client included)")
    qs = queries(args.members)
    results: dict[tuple[str, str], tuple[float, float]] = {}
    try:
        for kind in ("redis", "memd"):
            _, sock = start(kind, cleanup)
            r = redis.Redis(unix_socket_path=sock, socket_timeout=600)
            secs = load(r, args.members, args.seed)
            assert r.zcard("big") == args.members, f"{kind}: the set has {r.zcard('big')} members"
            flush = ""
            if kind == "memd":
                t0 = time.perf_counter()
                r.execute_command("MEMD.FLUSH")
                flush = f", flushed to SQLite in {time.perf_counter() - t0:.1f} s"
            print(f"{kind}: loaded in {secs:.1f} s{flush}")
            for stage in ("flushed", "buffered"):
                if stage == "buffered":
                    change(r, args.members, args.changes, args.seed + 1)
                for name, query in qs.items():
                    results[(kind, stage, name)] = measure(r, query, args.queries, args.seed + 2)  # type: ignore[index]
            r.close()
            cleanup.stop(cleanup.procs[-1])
    except (KeyboardInterrupt, Interrupted):
        print("interrupted", file=sys.stderr)
        return 1
    finally:
        cleanup.all()
    print()
    print(f"{'query':<38} {'set in':<9} {'redis p50':>10} {'p99':>8} {'memd p50':>10} {'p99':>8}  target")
    failed = False
    for stage in ("flushed", "buffered"):
        label = "SQLite" if stage == "flushed" else f"+{args.changes:,} buf"
        for name in qs:
            rp50, rp99 = results[("redis", stage, name)]  # type: ignore[index]
            mp50, mp99 = results[("memd", stage, name)]  # type: ignore[index]
            target = ""
            if name.startswith("ZRANGEBYSCORE"):
                ok = mp99 < TARGET_US
                failed |= not ok and args.members >= 1_000_000
                target = f"p99 < {TARGET_US:.0f} us: {'met' if ok else 'NOT met'}"
            print(f"{name:<38} {label:<9} {rp50:>10.0f} {rp99:>8.0f} {mp50:>10.0f} {mp99:>8.0f}  {target}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
