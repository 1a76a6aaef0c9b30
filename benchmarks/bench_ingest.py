"""Where bulk memory ingest spends its CPU: the client, the daemon's event loop, its flush.

Run: ``python3 benchmarks/bench_ingest.py`` (from the repo root; ``-n`` memories, default 60,000).

bench_memory.py gives puts/s against LangGraph's SqliteStore; on this shared 2-core box those
figures swing with everyone else's load. This script gives the per-put CPU behind them, from
thread CPU clocks, which the load skews far less:

1. a fresh ``memd serve --fsync everysec``, bench_memory's corpus put with redis-py pipelines
   of ``--pipeline`` MEM.PUTs (orjson values, as bench_memory sends them), then MEMD.FLUSH:
   the client's own CPU per put (``time.thread_time``), each daemon thread's CPU per put
   during the puts and during the final flush (psutil), and the flushes the daemon logged;
2. in this process, an engine with the same memories in its buffer flushed in one piece: each
   flush statement's thread CPU per memory, and the Python that builds the rows (on the loop, in steps).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench_memory as bm  # noqa: E402
from benchutil import Cleanup, timed_steps, wait_ready  # noqa: E402

import memd.store.sqlite as sqlite_store  # noqa: E402
from memd.engine.engine import Engine  # noqa: E402
from memd.store import statements  # noqa: E402

BIG = 1 << 40


def over_socket(c: bm.Corpus, depth: int) -> None:
    import psutil  # noqa: PLC0415
    import redis  # noqa: PLC0415

    cleanup = Cleanup()
    try:
        proc, d, sock, log, _ = bm.start_memd(cleanup, "ming-")
        wait_ready(sock, proc, log, 30)
        r = redis.Redis(unix_socket_path=sock, socket_timeout=600)
        daemon = psutil.Process(proc.pid)

        def threads() -> dict[int, float]:
            return {t.id: t.user_time + t.system_time for t in daemon.threads()}

        n = len(c)
        before, client0 = threads(), time.thread_time()
        secs, bad = bm.pipelined_puts(r, range(n), depth,
                                      lambda i: ("MEM.PUT", c.ns(i), c.key(i), bm.client_dumps(c.value(i))))
        client, puts = time.thread_time() - client0, threads()
        t0 = time.perf_counter()
        r.execute_command("MEMD.FLUSH")
        flush_s, after = time.perf_counter() - t0, threads()
        r.close()
        print(f"over the socket, {n:,} memories in pipelines of {depth}: {n / secs:,.0f} puts/s acknowledged, "
              f"MEMD.FLUSH {flush_s:.2f} s after, {n / (secs + flush_s):,.0f}/s including it"
              + (f" ({bad} replies were not 1)" if bad else ""))
        print(f"  client (redis-py + orjson)      {client / n * 1e6:6.1f} µs CPU per put")
        for tid in sorted(puts, key=lambda t: puts[t] - before.get(t, 0), reverse=True):
            during, final = puts[tid] - before.get(tid, 0), after.get(tid, puts[tid]) - puts[tid]
            if during + final > 0.01:
                print(f"  daemon thread {tid:<8}          {during / n * 1e6:6.1f} µs CPU per put during the puts, "
                      f"{final / n * 1e6:5.1f} during the final flush")
        with open(log) as f:
            sizes = [line.split("rows=")[1].split()[0] for line in f if "flush_done" in line]
        print(f"  flushes (memories each): {', '.join(sizes)}")
    finally:
        cleanup.all()


async def in_process(c: bm.Corpus, depth: int) -> None:
    n = len(c)
    spent: dict[str, float] = {}
    names = {id(v): k for k, v in vars(statements).items() if isinstance(v, str)}

    def timed(self: Any, writer: Any, groups: Any) -> None:
        writer.execute("BEGIN IMMEDIATE")
        for sql, rows in groups:
            if rows:
                t0 = time.thread_time()
                if self._bulk is not None and len(rows) > 1:
                    sqlite_store.csqlite.ext.executemany(writer, self._bulk, sql, rows)
                else:
                    writer.executemany(sql, rows)
                name = names.get(id(sql), sql[:24])
                spent[name] = spent.get(name, 0.0) + time.thread_time() - t0
        t0 = time.thread_time()
        writer.execute("COMMIT")
        spent["COMMIT"] = time.thread_time() - t0

    build = sqlite_store.flush_row_steps

    def rows(*args: Any) -> Any:  # (the flush's steps on the loop, each timed)
        name = "rows built in Python (flush_row_steps)"
        return timed_steps(build(*args), lambda s: spent.__setitem__(name, spent.get(name, 0.0) + s))

    sqlite_store.SqliteStore._transaction = timed  # type: ignore[method-assign]
    sqlite_store.flush_row_steps = rows  # type: ignore[assignment]
    with tempfile.TemporaryDirectory(prefix="ming-") as d:
        async with Engine(d, fsync="everysec", flush_max_records=BIG, flush_max_bytes=BIG, flush_max_age=3600,
                          buffer_max_bytes=BIG) as engine:
            engine.flush_max_memories = BIG
            puts = [(c.ns(i), c.key(i), bm.client_dumps(c.value(i)).decode(), None, ()) for i in range(n)]
            t0 = time.thread_time()
            for i in range(0, n, depth):
                engine.memories.put_many(puts[i:i + depth])  # type: ignore[arg-type]
            put_cpu = time.thread_time() - t0
            t0 = time.perf_counter()
            await engine.flush()
            wall = time.perf_counter() - t0
    print(f"in process, {n:,} memories: put_many {put_cpu / n * 1e6:.1f} µs CPU per put; one flush of them all "
          f"{wall:.2f} s ({wall / n * 1e6:.1f} µs per memory), of which (thread CPU per memory):")
    for name, s in spent.items():
        print(f"  {name:<34} {s / n * 1e6:6.1f} µs")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=60_000, help="memories (default 60,000)")
    ap.add_argument("--pipeline", type=int, default=500, help="MEM.PUTs per pipeline / put_many (default 500)")
    args = ap.parse_args()
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    c = bm.make_corpus(args.n, 1)
    over_socket(c, args.pipeline)
    asyncio.run(in_process(c, args.pipeline))
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
