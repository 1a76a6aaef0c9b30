"""The read cache: its byte count against tracemalloc, scan resistance, what each flush row does to it,
the snapshot bypass, races with the flush's thread, and its configuration."""

from __future__ import annotations

import os
import random
import threading
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from memd import config as cfg
from memd.commands import Context, load_all
from memd.commands.connection import execute
from memd.engine.engine import Engine
from memd.engine.records import T_HASH, T_LIST, T_STRING
from memd.errors import ConfigError
from memd.store.base import list_sub
from memd.store.readcache import ELEMS_MAX, MISSING, ReadCache
from memd.store.rows import FlushRows

pytestmark = pytest.mark.anyio
load_all()


def _rows(**kinds: list[tuple[Any, ...]]) -> FlushRows:
    return FlushRows(*([] for _ in FlushRows._fields))._replace(**kinds)


def _row(value: bytes, exp: int | None = None) -> tuple[Any, ...]:
    return (T_STRING, value, exp, 0, 0, 0)


# ---- what it counts ------------------------------------------------------------------------------

def _measure(fill: Any, max_bytes: int) -> tuple[int, int, ReadCache]:
    cache = ReadCache(max_bytes)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        fill(cache)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return after - before, cache.bytes, cache


def _fill_mixed(n: int) -> Any:
    rng = random.Random(7)

    def fill(cache: ReadCache) -> None:
        for i in range(n):
            epoch = cache.epoch
            kind = i % 4
            if kind == 3:  # a memory
                row = (f'{{"note": "{"x" * rng.randrange(20, 300)}"}}', i, 1_700_000_000_000 + i,
                       1_700_000_000_000 + i, None, None)
                cache.fill((f"agent/{i % 50}", f"item-{i}"), row, epoch, 4)
                continue
            key = (i % 16, b"key:%09d" % i)
            if kind == 2:  # a small hash, read whole
                cache.fill(key, (T_HASH, None, None, 5, 0, 0), epoch, 2)
                cache.fill_elems(key, [(b"field%d" % j, os.urandom(rng.randrange(1, 64))) for j in range(5)],
                                 cache.epoch)
            else:
                exp = 4_000_000_000_000 + i if kind else None
                cache.fill(key, _row(os.urandom(rng.randrange(1, 400)), exp), epoch, 2)
    return fill


@pytest.mark.parametrize(("n", "max_bytes"), [(20_000, 1 << 30), (60_000, 4 << 20)], ids=["filling", "evicting"])
def test_counted_bytes_match_tracemalloc(n: int, max_bytes: int) -> None:
    traced, counted, cache = _measure(_fill_mixed(n), max_bytes)
    assert counted <= max_bytes
    if max_bytes < 1 << 30:
        assert cache.evictions > 0 and len(cache._ghost) > 0
    assert 0.75 <= counted / traced <= 1.25, (counted, traced, len(cache.map))


# ---- scan resistance -------------------------------------------------------------------------------

async def test_a_full_scan_and_get_sweep_leaves_the_hot_set_hitting(tmp_path: Path) -> None:
    """After SCAN over the whole keyspace and a GET of every key, the hot keys hit nearly as before."""
    async with Engine(str(tmp_path / "data"), flush_max_age=3600.0) as engine:
        ks = engine.keyspace
        total, hot = 20_000, 800
        for i in range(total):
            ks.set(b"key:%06d" % i, b"v" * 100)
        await engine.flush()
        engine.store.configure_readcache(1 << 20)  # ~2,500 rows of these: the hot set fits, the keyspace does not
        cache = engine.store.readcache
        ctx = Context(engine=engine)
        rng = random.Random(1)

        def hot_rate(gets: int) -> float:
            h0, m0 = cache.hits, cache.misses
            for _ in range(gets):
                assert execute(ctx, [b"GET", b"key:%06d" % rng.randrange(hot)]) == b"v" * 100
            return (cache.hits - h0) / (cache.hits + cache.misses - h0 - m0)

        hot_rate(20_000)  # warm up
        before = hot_rate(5_000)
        cursor = b"0"
        swept = 0
        while True:
            cursor, keys = execute(ctx, [b"SCAN", cursor, b"COUNT", b"200"])
            for key in keys:
                assert execute(ctx, [b"GET", key]) == b"v" * 100
                swept += 1
            if cursor == b"0":
                break
        assert swept == total and cache.evictions > total // 2  # the sweep went through the cache
        after = hot_rate(5_000)
        assert before > 0.95 and after >= 0.9 * before, (before, after, cache.stats())


# ---- what a flush does to it ------------------------------------------------------------------------

def test_flush_rows_update_drop_and_fill() -> None:
    cache = ReadCache(1 << 20)
    e0 = cache.epoch
    cache.fill((0, b"s"), _row(b"old"), e0, 2)
    cache.fill((0, b"h"), (T_HASH, None, None, 3, 0, 0), e0, 2)
    cache.fill_elems((0, b"h"), [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")], e0)
    cache.fill((0, b"p"), (T_HASH, None, None, 100, 0, 0), e0, 2)  # not read whole: elements cached one by one
    cache.fill((0, b"big"), (T_HASH, None, None, ELEMS_MAX + 1, 0, 0), e0, 2)
    cache.fill_elem((0, b"big"), b"x", b"X", e0)  # (past ELEMS_MAX elements: none cached)
    assert cache.elem((0, b"big"), b"x") is MISSING
    cache.fill_elem((0, b"p"), b"x", b"X", e0)
    cache.fill_elem((0, b"p"), b"y", None, e0)
    cache.fill((0, b"l"), (T_LIST, None, None, 3, 0, 3), e0, 2)
    cache.fill_elems((0, b"l"), [(list_sub(i), b"%d" % i) for i in range(3)], e0)
    cache.fill((1, b"s"), _row(b"db1"), e0, 2)
    cache.fill(("ns", "m"), ("{}", 1, 1, 1, None, None), e0, 4)
    assert cache.elem((0, b"p"), b"y") is None and cache.elem((0, b"p"), b"z") is MISSING
    cache.apply_flush(_rows(
        upserts=[(0, b"s", T_STRING, b"new", None, 0, 0, 0, 1), (0, b"fresh", T_STRING, b"f", None, 0, 0, 0, 1)],
        metas=[(0, b"h", None, 2, 0, 0), (0, b"l", None, 1, 2, 3), (0, b"p", 5_000_000_000_000, 100, 0, 0)],
        elem_deletes=[(0, b"h", b"a"), (0, b"p", b"x")],
        elems=[(0, b"h", b"d", b"4", None), (0, b"p", b"y", b"Y", None)],
        trims=[(0, b"l", list_sub(2), list_sub(3))],
        mems=[("ns", "m", '{"a":1}', 2, 1, 5, None, None, None)],
    ))
    assert cache.row((0, b"s"), 2) == _row(b"new") and cache.row((0, b"fresh"), 2) == _row(b"f")
    assert cache.all_elems((0, b"h")) == {b"b": b"2", b"c": b"3", b"d": b"4"}
    assert cache.row((0, b"h"), 2) == (T_HASH, None, None, 2, 0, 0)
    assert cache.elem((0, b"p"), b"x") is None and cache.elem((0, b"p"), b"y") == b"Y"
    assert cache.row((0, b"p"), 2) == (T_HASH, None, 5_000_000_000_000, 100, 0, 0)
    cache.apply_flush(_rows(metas=[(0, b"p", None, ELEMS_MAX + 1, 0, 0)]))  # grown past ELEMS_MAX: elements go
    assert cache.elem((0, b"p"), b"y") is MISSING and cache.map[(0, b"p")].elems is None
    assert cache.all_elems((0, b"l")) == {list_sub(2): b"2"}
    assert cache.row(("ns", "m"), 4) == ('{"a":1}', 2, 1, 5, None, None)
    cache.apply_flush(_rows(deletes=[(0, b"s")], wipe_keys=[(1,)], wipe_elems=[(1,)]))
    assert cache.row((0, b"s"), 2) is None and cache.row((1, b"s"), 2) is None
    assert cache.row((0, b"fresh"), 2) is not None  # another database's rows stay
    cache.apply_flush(_rows(upserts=[(0, b"h", T_HASH, None, None, 1, 0, 0, 1)], elems=[(0, b"h", b"z", b"9", None)]))
    assert cache.all_elems((0, b"h")) == {b"z": b"9"}  # recreated whole: the old elements are gone


def test_an_expired_row_is_never_served_and_never_filled() -> None:
    cache = ReadCache(1 << 20)
    now = [1_000]
    cache.now_ms = lambda: now[0]
    cache.fill((0, b"k"), _row(b"v", 2_000), cache.epoch, 2)
    cache.fill((0, b"gone"), _row(b"v", 500), cache.epoch, 2)
    assert (0, b"gone") not in cache.map
    assert cache.row((0, b"k"), 2) == _row(b"v", 2_000)
    now[0] = 2_000
    assert cache.row((0, b"k"), 2) is None


def test_a_fill_that_read_before_a_writer_committed_is_refused() -> None:
    """The epoch: a read of SQLite that began before a writer's post-commit update must not install its row."""
    cache = ReadCache(1 << 20)
    epoch = cache.epoch  # the loop is about to read SQLite...
    cache.apply_flush(_rows(deletes=[(0, b"k")]))  # ... a flush commits a delete of the key meanwhile
    cache.fill((0, b"k"), _row(b"stale"), epoch, 2)
    assert (0, b"k") not in cache.map
    with cache.lock:  # the flush's thread holds the lock: the loop's fill is skipped, it does not wait
        cache.fill((0, b"k"), _row(b"v"), cache.epoch, 2)
    assert (0, b"k") not in cache.map


def test_concurrent_flush_updates_and_loop_reads_keep_it_consistent() -> None:
    """A thread applying flushes while another reads and fills: the bookkeeping stays exact."""
    cache = ReadCache(256 << 10)
    stop = threading.Event()

    def flusher() -> None:
        rng = random.Random(2)
        while not stop.is_set():
            keys = [(0, b"k%d" % rng.randrange(3000)) for _ in range(200)]
            cache.apply_flush(_rows(upserts=[(db, k, T_STRING, b"x" * rng.randrange(50), None, 0, 0, 0, 1)
                                             for db, k in keys[:150]], deletes=keys[150:]))

    t = threading.Thread(target=flusher)
    t.start()
    try:
        rng = random.Random(3)
        for _ in range(100_000):
            key = (0, b"k%d" % rng.randrange(3000))
            if cache.row(key, 2) is None:
                cache.fill(key, _row(b"y"), cache.epoch, 2)
    finally:
        stop.set()
        t.join()
    live = [e for e in cache.map.values()]
    assert all(e.live for e in live)
    assert cache.bytes == sum(e.cost for e in live) + len(cache._ghost) * 104
    assert cache.bytes <= cache.limit


# ---- the store: snapshots, disabling -----------------------------------------------------------

@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    async with Engine(str(tmp_path / "data"), flush_max_age=3600.0) as e:
        yield e


async def test_a_snapshot_reads_sqlite_not_the_cache(engine: Engine) -> None:
    """Between a flush's commit and its update of the cache, DBSIZE (a snapshot) must count SQLite's rows.

    The window is made explicit: the flush commits with the cache update held back, the frozen
    layer still in place, as it is until the flush returns.
    """
    ks = engine.keyspace
    ks.set(b"k", b"v")
    ks.set(b"other", b"v")
    await engine.flush()
    assert ks.get(b"k") == b"v" and (0, b"k") in engine.store.readcache.map
    ks.delete([b"k"])
    table = engine._freeze()
    held = engine.store.readcache.apply_flush
    engine.store.readcache.apply_flush = lambda rows: None  # type: ignore[method-assign]
    try:
        await engine.store.flush(table)  # committed: SQLite no longer holds k; the cache still does
    finally:
        engine.store.readcache.apply_flush = held  # type: ignore[method-assign]
    assert ks.dbsize() == 1
    assert ks.get(b"k") is None  # (the frozen layer answers meanwhile)


async def test_zero_disables_and_reads_stay_right(engine: Engine) -> None:
    ks = engine.keyspace
    ks.set(b"k", b"v")
    ks.hset(b"h", [(b"f", b"1")])
    await engine.flush()
    engine.store.configure_readcache(0)
    cache = engine.store.readcache
    assert not cache.map and cache.bytes == 0
    assert ks.get(b"k") == b"v" and ks.elems(b"h") == {b"f": b"1"}
    ks.set(b"k2", b"v2")
    await engine.flush()
    assert ks.get(b"k2") == b"v2"
    assert not cache.map and cache.hits == 0 and engine.stats()["readcache_entries"] == 0
    engine.store.configure_readcache(1 << 20)  # on again, live
    assert ks.get(b"k2") == b"v2" and ks.get(b"k2") == b"v2" and cache.hits >= 1


async def test_info_shows_the_cache(engine: Engine) -> None:
    engine.keyspace.set(b"k", b"v")
    await engine.flush()
    assert engine.keyspace.get(b"k") == b"v"
    text = execute(Context(engine=engine), [b"INFO", b"persistence"]).decode()
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    assert int(fields["memd_readcache_entries"]) == 1 and int(fields["memd_readcache_hits"]) >= 1
    for name in ("bytes", "max_bytes", "misses", "evictions", "hit_rate"):
        assert f"memd_readcache_{name}" in fields
    assert "memd_keyfilter_false_positive_rate" in fields and "memd_keyfilter_bytes" in fields


# ---- configuration ------------------------------------------------------------------------------

def test_config_default_zero_and_invalid(tmp_path: Path) -> None:
    assert cfg.load(None).cache.max_bytes == 64 << 20
    path = tmp_path / "memd.toml"
    path.write_text('[cache]\nmax_bytes = "0"\n')
    assert cfg.load(path).cache.max_bytes == 0
    path.write_text('[cache]\nmax_bytes = "128MiB"\n')
    assert cfg.load(path).cache.max_bytes == 128 << 20
    for bad in ('"lots"', "-1", "1.5", '"12 parsecs"'):
        path.write_text(f"[cache]\nmax_bytes = {bad}\n")
        with pytest.raises(ConfigError) as info:
            cfg.load(path)
        assert info.value.key == "cache.max_bytes" and str(info.value).startswith(f"{path}: cache.max_bytes: ")
    assert "cache.max_bytes" in cfg.RELOADABLE  # applied live by the daemon's reload


def test_elems_max_is_what_the_model_test_straddles() -> None:
    assert 16 <= ELEMS_MAX <= 1024
