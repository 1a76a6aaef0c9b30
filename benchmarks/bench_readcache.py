"""The read cache: event-loop CPU per GET of flushed keys, cache on vs off, and hit rates.

Run: ``python3 benchmarks/bench_readcache.py`` (from the repo root; ``--keys``, ``--zipf-keys``...).

1. **GET after a SET pass, flushed.** ``--keys`` keys of 200-byte values are SET and flushed
   to SQLite, so every GET reads below the buffer. Then pipelined GETs (50 connections x 16
   commands per read, the server's real batch loop over a fake transport, as
   ``bench_loop.py``) over uniformly random keys, with the cache off (``cache.max_bytes = 0``:
   a point read of SQLite per GET) and on (64 MiB, warmed by an untimed GET of every key). Measured:
   ``time.thread_time`` of the event-loop thread per GET (no worker thread runs meanwhile), best
   of ``--rounds`` alternating runs, and the cache's hit rate over the timed part.
2. **The store's point read alone**: ``store.get_key`` of the same keys, a cache hit vs SQLite
   (cache off), µs per call.
3. **What the flush's fill costs**: a flush of ``--keys`` overwritten keys (all cached) and as many
   new ones, the CPU of ``ReadCache.apply_flush_steps`` (on the event loop, in steps after the
   commit) against the flush's wall time, cache on; and the same flush with the cache off.
4. **Zipf 0.99 over many keys**: ``--zipf-keys`` keys SET and flushed, then GETs drawn with
   probability ~ 1/rank^0.99 (ranks shuffled over the keys), a 64 MiB cache: its hit rate
   after a warm-up as long as the measured part, and µs per GET (``Keyspace.get`` called
   directly, thread_time).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import memd.server as server_mod  # noqa: E402
from benchmarks.bench_loop import CONNECTIONS, PIPELINE, feed, frame  # noqa: E402
from benchmarks.benchutil import timed_steps  # noqa: E402
from memd.engine.engine import Engine  # noqa: E402
from memd.server import Connection, Server  # noqa: E402
from tests.fake_transport import FakeTransport  # noqa: E402

VALUE = b"v" * 200
BIG = 1 << 40
CACHE_BYTES = 64 << 20


def _key(i: int) -> bytes:
    return b"key:%012d" % i


async def _fill(engine: Engine, n: int) -> None:
    ks = engine.keyspace
    for i in range(n):
        ks.set(_key(i), VALUE)
        if i % 100_000 == 99_999:
            await engine.flush()
    await engine.flush()
    await engine.store.maintain_keyfilter()


def _gets(n: int, keys: int, rng: random.Random) -> list[bytes]:
    return [b"".join(frame(b"GET", _key(rng.randrange(keys))) for _ in range(PIPELINE)) for _ in range(n // PIPELINE)]


async def _timed_gets(server: Server, conns: list[Connection], batches: list[bytes]) -> tuple[float, float]:
    """(µs of event-loop CPU per GET, the cache's hit rate meanwhile)."""
    cache = server.engine.store.readcache
    h0, m0 = cache.hits, cache.misses
    done = server.stats_commands
    t0 = time.thread_time()
    await feed(server, conns, batches)
    cpu = time.thread_time() - t0
    looked = cache.hits + cache.misses - h0 - m0
    return cpu / (server.stats_commands - done) * 1e6, (cache.hits - h0) / looked if looked else 0.0


async def get_after_set(keys: int, n: int, rounds: int) -> None:
    d = tempfile.mkdtemp(prefix="memd-rc-")
    try:
        async with Engine(d, fsync="everysec", flush_max_records=BIG, flush_max_bytes=BIG, flush_max_age=3600,
                          buffer_max_bytes=BIG) as engine:
            await _fill(engine, keys)
            server = Server(engine, os.path.join(d, "unused.sock"))
            conns = []
            for _ in range(CONNECTIONS):
                conn = Connection(server)
                conn.connection_made(FakeTransport())  # type: ignore[arg-type]
                conns.append(conn)
            batches = _gets(n, keys, random.Random(1))
            store = engine.store
            best = {"off": (float("inf"), 0.0), "on": (float("inf"), 0.0)}
            for _ in range(rounds):
                for mode in ("off", "on"):
                    store.configure_readcache(0 if mode == "off" else CACHE_BYTES)
                    if mode == "on":  # warm (untimed): every key once
                        await feed(server, conns, [b"".join(frame(b"GET", _key(i)) for i in range(j, j + PIPELINE))
                                                   for j in range(0, keys - PIPELINE + 1, PIPELINE)])
                    us, rate = await _timed_gets(server, conns, batches)
                    best[mode] = min(best[mode], (us, rate))
            print(f"GET of {keys:,} flushed keys, {n:,} pipelined GETs per run, best of {rounds}")
            for mode, (us, rate) in best.items():
                print(f"  cache {mode:<3}  {us:7.2f} µs event-loop CPU per GET   hit rate {rate:6.1%}")
            print(f"  ratio on/off: {best['on'][0] / best['off'][0]:.2f}x   cache: "
                  f"{store.readcache.bytes / 2**20:.1f} MiB for {len(store.readcache.map):,} rows")

            sample = [_key(random.Random(3).randrange(keys)) for _ in range(50_000)]
            point = {}
            for mode in ("off", "on"):
                store.configure_readcache(0 if mode == "off" else CACHE_BYTES)
                for k in sample:  # fill (on) / warm SQLite's page cache (off)
                    store.get_key(0, k)
                t = float("inf")
                for _ in range(rounds):
                    t0 = time.thread_time()
                    for k in sample:
                        store.get_key(0, k)
                    t = min(t, (time.thread_time() - t0) / len(sample) * 1e6)
                point[mode] = t
            print(f"  store.get_key alone: SQLite {point['off']:.2f} µs, cache hit {point['on']:.2f} µs "
                  f"({point['off'] / point['on']:.1f}x)")
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _zipf_cum(n: int, s: float) -> list[float]:
    return list(itertools.accumulate(1.0 / (i ** s) for i in range(1, n + 1)))


async def zipf(keys: int, n: int) -> None:
    d = tempfile.mkdtemp(prefix="memd-rcz-")
    try:
        async with Engine(d, fsync="everysec", flush_max_records=BIG, flush_max_bytes=BIG, flush_max_age=3600,
                          buffer_max_bytes=BIG) as engine:
            await _fill(engine, keys)
            engine.store.configure_readcache(CACHE_BYTES)
            rng = random.Random(4)
            ranks = list(range(keys))
            rng.shuffle(ranks)  # the hot keys are spread over the key space
            cum = _zipf_cum(keys, 0.99)
            draws = [_key(ranks[r]) for r in rng.choices(range(keys), cum_weights=cum, k=2 * n)]
            ks = engine.keyspace
            cache = engine.store.readcache
            for k in draws[:n]:  # warm-up
                ks.get(k)
            h0, m0 = cache.hits, cache.misses
            t0 = time.thread_time()
            for k in draws[n:]:
                ks.get(k)
            us = (time.thread_time() - t0) / n * 1e6
            rate = (cache.hits - h0) / (cache.hits + cache.misses - h0 - m0)
            distinct = len(set(draws[n:]))
            print(f"Zipf 0.99 over {keys:,} flushed keys, {n:,} GETs after as many to warm up "
                  f"({distinct:,} distinct keys read), 64 MiB cache")
            print(f"  hit rate {rate:.1%}   {us:.2f} µs per GET (Keyspace.get)   cache: "
                  f"{cache.bytes / 2**20:.1f} MiB for {len(cache.map):,} rows, {cache.evictions:,} evictions")
    finally:
        shutil.rmtree(d, ignore_errors=True)


async def flush_cost(keys: int) -> None:
    d = tempfile.mkdtemp(prefix="memd-rcf-")
    try:
        async with Engine(d, fsync="everysec", flush_max_records=BIG, flush_max_bytes=BIG, flush_max_age=3600,
                          buffer_max_bytes=BIG) as engine:
            await _fill(engine, keys)
            store, ks = engine.store, engine.keyspace
            cache = store.readcache
            spent = [0.0]
            apply = cache.apply_flush_steps

            def timed(rows: Any) -> Any:  # (its steps on the loop, each timed)
                return timed_steps(apply(rows), lambda s: spent.__setitem__(0, spent[0] + s))
            cache.apply_flush_steps = timed  # type: ignore[method-assign]
            print(f"A flush of {keys:,} overwritten keys and {keys:,} new ones (200-byte values)")
            for mode, n in (("on", 0), ("off", 1), ("on", 2)):
                store.configure_readcache(CACHE_BYTES if mode == "on" else 0)
                for i in range(keys):
                    if mode == "on":
                        ks.get(_key(i))  # cached: the flush updates these rows in place
                    ks.set(_key(i), VALUE)
                    ks.set(_key((n + 1) * keys + i), VALUE)
                spent[0] = 0.0
                t0 = time.perf_counter()
                await engine.flush()
                wall = time.perf_counter() - t0
                print(f"  cache {mode:<3}  flush {wall * 1e3:7.1f} ms   apply_flush {spent[0] * 1e3:6.1f} ms loop CPU "
                      f"({spent[0] / wall:.1%} of the flush)")
    finally:
        shutil.rmtree(d, ignore_errors=True)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=100_000, help="keys for the GET-after-SET runs (default 100,000)")
    ap.add_argument("-n", type=int, default=200_000, help="GETs per timed run (default 200,000)")
    ap.add_argument("--rounds", type=int, default=3, help="runs per mode, alternating; the best counts")
    ap.add_argument("--zipf-keys", type=int, default=500_000, help="keys for the Zipf run (default 500,000)")
    ap.add_argument("--zipf-n", type=int, default=300_000, help="GETs measured in the Zipf run (default 300,000)")
    args = ap.parse_args()
    server_mod.peer_credentials = lambda sock: (os.getpid(), os.geteuid(), os.getegid(), [])
    await get_after_set(args.keys, args.n, args.rounds)
    await flush_cost(args.keys)
    if args.zipf_keys:
        await zipf(args.zipf_keys, args.zipf_n)


if __name__ == "__main__":
    asyncio.run(main())
