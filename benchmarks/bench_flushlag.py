"""The event loop's lag while a flush of a big buffer runs, in-process.

Run: ``python3 benchmarks/bench_flushlag.py [KEYS] [SWITCH_INTERVAL]`` (from the repo root;
default 300,000 keys and Python's GIL switch interval; the daemon sets 0.001).

An engine (everysec, no automatic flush) buffers KEYS random 200-byte SETs in runs of
16, then flushes them to SQLite in its worker thread while a coroutine ticks every 5 ms
on the loop: how late the ticks come is how long the flush held the loop up (GIL-holding
C calls in the flush thread: sorting the rows, reading them into C, freeing them).
Printed: the flush's seconds, the largest and the 99th-percentile tick lateness.
"""

from __future__ import annotations

import asyncio
import gc
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from memd.engine.engine import Engine  # noqa: E402

BIG = 1 << 40
TICK = 0.005


async def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300_000
    if len(sys.argv) > 2:
        sys.setswitchinterval(float(sys.argv[2]))
    d = tempfile.mkdtemp(prefix="memd-flushlag-")
    try:
        async with Engine(d, fsync="everysec", flush_max_records=BIG, flush_max_bytes=BIG, flush_max_age=3600,
                          buffer_max_bytes=BIG) as engine:
            ks = engine.keyspace
            rng = random.Random(1)
            value = b"x" * 200
            for _ in range(0, n, 16):
                ks.mset([(b"key:%012d" % rng.randrange(10**9), value) for _ in range(16)])
            gc.collect()
            gc.freeze()  # as the daemon's GC policy leaves the buffer: the collector is not measured here
            lags: list[float] = []
            done = False

            async def tick() -> None:
                while not done:
                    t = time.perf_counter()
                    await asyncio.sleep(TICK)
                    lags.append(time.perf_counter() - t - TICK)
            t0 = time.perf_counter()
            ticker = asyncio.create_task(tick())
            await engine.flush()
            seconds = time.perf_counter() - t0
            await asyncio.sleep(0.2)  # what follows the flush: freeing the flushed table
            done = True
            await ticker
            lags.sort()
            print(f"{n:,} keys, switch interval {sys.getswitchinterval() * 1000:g} ms: flush {seconds:.2f} s, "
                  f"loop lag max {lags[-1] * 1000:.0f} ms, p99 {lags[int(len(lags) * 0.99)] * 1000:.0f} ms")
        gc.unfreeze()
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
