"""The filter of stored keys: reads of absent keys skip SQLite, and no stored key is ever filtered out.

The second half is a race between a flush (add its keys, commit, say committed) and a build in
another thread (start, take its snapshot, swap its filters in): each interleaving is played
step by step, the build held at its snapshot and at its swap, and the key must be found after.
"""

from __future__ import annotations

import itertools
import sqlite3
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest

from memd.engine.engine import Engine
from memd.store.keyfilter import ADD_BATCH, BUILD_BATCH, MIN_CAPACITY, SWAP_MAX, KeyFilter, count_keys
from memd.store.schema import migrate

pytestmark = pytest.mark.anyio


async def test_reads_of_absent_keys_skip_sqlite(tmp_path: Path) -> None:
    async with Engine(str(tmp_path / "data"), flush_max_age=3600.0) as engine:
        ks = engine.keyspace
        ks.mset([(b"here:%d" % i, b"v") for i in range(5000)])
        await engine.flush()  # 5,000 keys into a filter built for none (unless the first build came after)...
        kf = engine.store.keyfilter
        for _ in range(3000):  # ... which has it rebuilt, in a worker thread: on a loaded box, seconds
            if kf.ready and not kf.needs_rebuild() and not engine.store._keyfilter_building:
                break
            await anyio.sleep(0.01)
        assert kf.ready and not kf.needs_rebuild()
        statements: list[str] = []
        engine.store.reader.set_trace_callback(statements.append)
        assert all(ks.get(b"absent:%d" % i) is None for i in range(1000))
        assert len(statements) <= 30, "about 1% of absent keys may reach SQLite, not more"
        assert all(ks.get(b"here:%d" % i) == b"v" for i in range(0, 5000, 7))
        engine.store.reader.set_trace_callback(None)
        stats = engine.stats()
        assert stats["keyfilter_ready"] == 1 and stats["keyfilter_reads_saved"] >= 970
        assert stats["keyfilter_bytes"] <= 2 * 5000 * 1.5  # (sized for the keys found, with headroom)


class Held:
    """A connection whose build pauses at its snapshot (first SELECT) and before its swap (COMMIT)."""

    def __init__(self, path: str) -> None:
        self.conn = sqlite3.connect(path, check_same_thread=False)
        self.at_snapshot, self.go_snapshot = threading.Event(), threading.Event()
        self.at_swap, self.go_swap = threading.Event(), threading.Event()

    def execute(self, sql: str, *args: Any) -> Any:
        if sql.startswith("SELECT db, count"):
            self.at_snapshot.set()
            assert self.go_snapshot.wait(10)
        if sql == "COMMIT":
            self.at_swap.set()
            assert self.go_swap.wait(10)
        return self.conn.execute(sql, *args)


FLUSH = ("add", "commit", "committed")
BUILD = ("start", "snapshot", "swap")


def interleavings() -> list[tuple[str, ...]]:
    """Every order of the flush's three steps among the build's three (each side keeps its own order)."""
    out = []
    for slots in itertools.combinations(range(6), 3):
        f, b = iter(FLUSH), iter(BUILD)
        out.append(tuple(next(f) if i in slots else next(b) for i in range(6)))
    return out


@pytest.mark.parametrize("order", interleavings(), ids="-".join)
def test_a_flush_racing_a_build_never_loses_a_key(tmp_path: Path, order: tuple[str, ...]) -> None:
    path = str(tmp_path / "store.sqlite3")
    migrate(path)
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("INSERT INTO keys (db, key, type, value) VALUES (0, x'6f6c64', 1, x'00')")  # b"old"
    kf = KeyFilter()
    held = Held(path)
    keys = [(0, b"new"), (3, b"other")]
    thread: threading.Thread | None = None
    for step in order:
        if step == "start":
            thread = threading.Thread(target=kf.build, args=(held,))
            thread.start()
            assert held.at_snapshot.wait(10)  # started: the flushes' keys are being collected
        elif step == "snapshot":
            held.go_snapshot.set()
            assert held.at_swap.wait(10)  # the snapshot is read
        elif step == "swap":
            held.go_swap.set()
            assert thread is not None
            thread.join(10)
            assert kf.ready
        elif step == "add":
            kf.add(keys)
        elif step == "commit":
            writer.executemany("INSERT INTO keys (db, key, type, value) VALUES (?, ?, 1, x'00')", keys)
        elif step == "committed":
            kf.committed(keys)
    assert kf.ready
    assert kf.might_hold(0, b"old") and kf.might_hold(0, b"new") and kf.might_hold(3, b"other")
    writer.close()
    held.conn.close()


def test_keys_a_build_takes_from_flushes_count_toward_its_capacity(tmp_path: Path) -> None:
    """A flush of many keys racing the first build: the filter it swaps in is over capacity, so rebuilt."""
    path = str(tmp_path / "store.sqlite3")
    migrate(path)
    kf, held = KeyFilter(), Held(path)
    thread = threading.Thread(target=kf.build, args=(held,))
    thread.start()
    assert held.at_snapshot.wait(10)
    keys = [(0, b"k%d" % i) for i in range(5000)]
    kf.add(keys)  # (never committed: the build's snapshot holds none of them)
    kf.committed(keys)
    held.go_snapshot.set()
    held.go_swap.set()
    thread.join(10)
    assert kf.ready and kf.might_hold(0, b"k4999")
    assert kf.needs_rebuild(), "5,000 keys in a filter sized for none"
    held.conn.close()


def test_a_build_runs_in_steps_of_a_batch(tmp_path: Path) -> None:
    """The engine runs a build on the event loop between its other work: each step takes at most one
    batch of keys (a build in one step would stall every client for the whole table)."""
    path = str(tmp_path / "store.sqlite3")
    migrate(path)
    writer = sqlite3.connect(path, isolation_level=None)
    n = 5 * BUILD_BATCH + 3
    with writer:
        writer.execute("BEGIN")
        writer.executemany("INSERT INTO keys (db, key, type, value) VALUES (?, ?, 1, x'00')",
                           [(i % 2, b"k%d" % i) for i in range(n)])
    kf = KeyFilter()
    conn = sqlite3.connect(path)
    steps = 0
    for _ in kf.build_steps(conn):
        steps += 1
        assert not kf.ready  # (swapped in only at the end)
    assert steps >= n // BUILD_BATCH
    assert kf.ready and all(kf.might_hold(i % 2, b"k%d" % i) for i in range(n))
    assert kf.stats()["keyfilter_keys"] == n
    writer.close()
    conn.close()


def test_a_build_takes_what_a_big_flush_added_meanwhile_in_steps(tmp_path: Path) -> None:
    """Keys flushes add during a build are added to its filters in steps too (a flush of 500,000 keys
    made one step of 250 ms), and none is missing when they are swapped in."""
    path = str(tmp_path / "store.sqlite3")
    migrate(path)
    writer = sqlite3.connect(path, isolation_level=None)
    with writer:
        writer.execute("BEGIN")
        writer.executemany("INSERT INTO keys (db, key, type, value) VALUES (0, ?, 1, x'00')",
                           [(b"old%d" % i,) for i in range(3 * BUILD_BATCH)])
    kf = KeyFilter()
    conn = sqlite3.connect(path)
    steps = kf.build_steps(conn)
    next(steps)  # the snapshot is read: what flushes add now reaches the build only through the filter
    inflight = [(0, b"inflight%d" % i) for i in range(3 * SWAP_MAX)]
    kf.add(inflight)  # a flush still in flight when the build swaps
    flushed = [(1, b"new%d" % i) for i in range(5 * ADD_BATCH)]
    kf.add(flushed)
    with writer:  # (one transaction)
        writer.execute("BEGIN")
        writer.executemany("INSERT INTO keys (db, key, type, value) VALUES (?, ?, 1, x'00')", flushed)
    kf.committed(flushed)
    rest = sum(1 for _ in steps)
    assert kf.ready
    assert rest >= 2 + 5, "the scan's last steps, then a step per batch of the flushes' keys"
    assert all(kf.might_hold(db, key) for db, key in [*flushed, *inflight])
    assert all(kf.might_hold(0, b"old%d" % i) for i in range(3 * BUILD_BATCH))
    writer.close()
    conn.close()


def test_a_build_covers_databases_its_counts_missed(tmp_path: Path) -> None:
    """The keys are counted before the build's snapshot (off the loop): a flush committing a new database
    in between must still be in the filters swapped in (DBSIZE double-counted its keys when it was not)."""
    path = str(tmp_path / "store.sqlite3")
    migrate(path)
    writer = sqlite3.connect(path, isolation_level=None)
    counts = count_keys(writer)  # {}: nothing stored yet
    with writer:
        writer.execute("BEGIN")
        writer.executemany("INSERT INTO keys (db, key, type, value) VALUES (?, ?, 1, x'00')",
                           [(3, b"k%d" % i) for i in range(2 * MIN_CAPACITY)] + [(0, b"zero")])
    kf = KeyFilter()
    conn = sqlite3.connect(path)
    for _ in kf.build_steps(conn, counts):
        pass
    assert kf.ready
    assert kf.might_hold(0, b"zero") and all(kf.might_hold(3, b"k%d" % i) for i in range(2 * MIN_CAPACITY))
    assert kf.needs_rebuild(), "a filter sized for none holding 2,048 keys"
    writer.close()
    conn.close()


def test_a_flush_adds_its_keys_in_steps_and_a_swap_between_them_loses_none(tmp_path: Path) -> None:
    """add_steps (a flush's keys, on the event loop): a step per ADD_BATCH keys, and a whole build swapping
    its filters in between two steps (the keys not committed yet: its snapshot has none) keeps every key."""
    path = str(tmp_path / "store.sqlite3")
    migrate(path)
    conn = sqlite3.connect(path)
    kf = KeyFilter()
    kf.build(conn)
    keys = [(i % 3, b"flushed:%d" % i) for i in range(2 * ADD_BATCH + 100)]
    steps = kf.add_steps(keys)
    next(steps)  # the first batch is in the filters in force...
    kf.build(conn)  # ...which a build replaces, from a snapshot without these keys
    assert sum(1 for _ in steps) == 2  # (three steps in all)
    kf.committed(keys)
    assert all(kf.might_hold(db, key) for db, key in keys)
    conn.close()
