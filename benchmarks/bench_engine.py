"""Engine benchmark: one command, ratios against baselines measured in the same run.

    python benchmarks/bench_engine.py            # 1,000,000 keys (a few minutes)
    python benchmarks/bench_engine.py --keys 200000   # quicker

What it measures (200-byte values, distinct keys):
- burst writes/s under each fsync policy (one writer awaiting each ack), and
  ``always`` with 50 concurrent writers (group commit) vs one;
- a naive writer: aiosqlite, synchronous=FULL, one row per transaction;
- sustained writes of N distinct keys until all are flushed to SQLite, against
  raw ``sqlite3`` executemany of the same rows into the same schema;
- recovery time for N WAL records;
- RSS growth per buffered MB (buffered = key + value bytes).
Targets from issue #2 are printed beside each ratio.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sqlite3
import sys
import tempfile
import time

import aiosqlite
import anyio
import psutil

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from memd.engine.engine import Engine  # noqa: E402
from memd.engine.records import OP_SET, T_STRING  # noqa: E402
from memd.store.schema import migrate  # noqa: E402
from memd.store.statements import UPSERT_KEY  # noqa: E402
from memd.engine.wal import WAL  # noqa: E402

VALUE = b"v" * 200
BIG = 1 << 40


def key(i: int) -> bytes:
    return b"key:%012d" % i


async def burst(tmp: str, fsync: str, n: int, writers: int = 1, per_ack: int = 1) -> float:
    """Writes/s with ``writers`` tasks each awaiting an ack every ``per_ack`` writes (1: every write;
    64: what the server does for a pipelined batch), all within the buffer."""
    d = tempfile.mkdtemp(dir=tmp)
    async with Engine(d, fsync=fsync, flush_max_records=BIG, flush_max_bytes=BIG, flush_max_age=3600,
                      buffer_max_bytes=BIG) as engine:
        ks = engine.keyspace
        per = n // writers

        async def one(w: int) -> None:
            base = w * per
            for i in range(base, base + per):
                ks.set(key(i), VALUE)
                if i % per_ack == 0:
                    await engine.wait_durable()
            await engine.wait_durable()

        t0 = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for w in range(writers):
                tg.start_soon(one, w)
        elapsed = time.perf_counter() - t0
    shutil.rmtree(d)
    return per * writers / elapsed


async def naive(tmp: str, seconds: float) -> float:
    path = os.path.join(tempfile.mkdtemp(dir=tmp), "naive.db")
    async with aiosqlite.connect(path, isolation_level=None) as db:
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=FULL")
        await db.execute("CREATE TABLE kv (key BLOB PRIMARY KEY, value BLOB)")
        t0 = time.perf_counter()
        i = 0
        while time.perf_counter() - t0 < seconds:
            await db.execute("BEGIN IMMEDIATE")
            await db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (key(i), VALUE))
            await db.execute("COMMIT")
            i += 1
        return i / (time.perf_counter() - t0)


def raw_executemany(tmp: str, n: int, batch: int) -> float:
    """Rows/s of plain sqlite3 executemany of the same rows into memd's own schema."""
    path = os.path.join(tempfile.mkdtemp(dir=tmp), "raw.db")
    migrate(path)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=FULL")
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(UPSERT_KEY, ((key(i), T_STRING, VALUE, None, 0, 0, 0, 1)
                                       for i in range(start, min(n, start + batch))))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    conn.close()
    return n / elapsed


async def sustained(tmp: str, n: int, flush_records: int) -> float:
    """Distinct-key writes/s until every one of them is in SQLite (flush-bound)."""
    d = tempfile.mkdtemp(dir=tmp)
    async with Engine(d, fsync="everysec", flush_max_records=flush_records) as engine:
        ks = engine.keyspace
        t0 = time.perf_counter()
        for i in range(n):
            if i % 1000 == 0:
                await engine.admit()
            ks.set(key(i), VALUE)
            if i % 64 == 0:
                await engine.wait_durable()
        await engine.flush()
        elapsed = time.perf_counter() - t0
    shutil.rmtree(d)
    return n / elapsed


async def recovery(tmp: str, n: int) -> float:
    d = tempfile.mkdtemp(dir=tmp)
    os.makedirs(os.path.join(d, "wal"))
    wal = WAL(os.path.join(d, "wal"), fsync="no")
    wal.start(1)
    async with anyio.create_task_group() as tg:
        await tg.start(wal.run_syncer)  # it creates each new segment after fsyncing the older ones
        for i in range(1, n + 1):
            wal.append(i, [(OP_SET, key(i), VALUE, None)])
            if i % 10000 == 0:
                await wal.wait(i)
        await wal.close()
        tg.cancel_scope.cancel()
    t0 = time.perf_counter()
    async with Engine(d, flush_max_records=BIG, flush_max_bytes=BIG, buffer_max_bytes=BIG) as engine:
        elapsed = time.perf_counter() - t0
        assert engine.recovery_report.records == n, engine.recovery_report
        engine.flush_max_age = 3600
    shutil.rmtree(d)
    return elapsed


async def rss_per_mb(tmp: str, n: int) -> tuple[float, float, float]:
    d = tempfile.mkdtemp(dir=tmp)
    proc = psutil.Process()
    async with Engine(d, fsync="no", flush_max_records=BIG, flush_max_bytes=BIG, flush_max_age=3600,
                      buffer_max_bytes=BIG) as engine:
        gc.collect()
        before = proc.memory_info().rss
        ks = engine.keyspace
        for i in range(n):
            ks.set(key(i), VALUE)
            if i % 10000 == 0:
                await engine.wait_durable()
        await engine.wait_durable()
        gc.collect()
        grown = proc.memory_info().rss - before
        buffered = engine.buffered_bytes()
        total_rss = proc.memory_info().rss
    shutil.rmtree(d)
    return grown / buffered, buffered / 2**20, total_rss / 2**20


def line(name: str, value: str, ratio: str = "", target: str = "") -> None:
    print(f"{name:<46} {value:>16} {ratio:>10} {target}")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=1_000_000, help="distinct keys for the flush/recovery runs")
    ap.add_argument("--burst", type=int, default=100_000, help="writes per burst run")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="memd-bench-")
    try:
        print(f"memd engine benchmark: {args.keys} keys, 200-byte values, {os.cpu_count()} cpus")
        naive_rate = await naive(tmp, 3.0)
        line("naive aiosqlite, 1 row/txn, sync=FULL", f"{naive_rate:,.0f}/s", "1.00x", "(baseline)")
        rates = {}
        for policy in ("everysec", "no", "always"):
            n = args.burst if policy != "always" else min(args.burst, 5000)
            rates[policy] = await burst(tmp, policy, n)
            target = "(target >= 50x)" if policy == "everysec" else ""
            line(f"burst, 1 writer, fsync={policy}", f"{rates[policy]:,.0f}/s", f"{rates[policy] / naive_rate:.1f}x",
                 target)
        piped = await burst(tmp, "everysec", args.burst, per_ack=64)
        line("burst, 1 writer, everysec, ack per 64 writes", f"{piped:,.0f}/s", f"{piped / naive_rate:.1f}x",
             "(the server's batch-per-read)")
        group = await burst(tmp, "always", min(args.burst, 50_000), writers=50)
        line("burst, 50 writers, fsync=always", f"{group:,.0f}/s", f"{group / rates['always']:.1f}x",
             "vs 1 writer (target >= 10x)")
        raw = raw_executemany(tmp, args.keys, 100_000)
        line("raw sqlite3 executemany (same schema)", f"{raw:,.0f}/s", "1.00x", "(baseline)")
        sus = await sustained(tmp, args.keys, 100_000)
        line("sustained distinct-key writes until flushed", f"{sus:,.0f}/s", f"{sus / raw:.2f}x", "(target >= 0.8x)")
        secs = await recovery(tmp, args.keys)
        line(f"recovery of {args.keys:,} WAL records", f"{secs:.2f} s", "", "(target < 10 s, stretch 5 s)")
        per_mb, mb, total = await rss_per_mb(tmp, min(args.keys, 500_000))
        line(f"RSS growth per buffered MB ({mb:.0f} MB buffered)", f"{per_mb:.2f} MB", "",
             f"(target: RSS {total:.0f} MB <= 3x{mb:.0f}+60 = {3 * mb + 60:.0f} MB)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    anyio.run(main)
