"""The store contract: one suite, written against the Store protocol (memd.store.base), run on every store.

Nothing here knows SQL: each test writes frozen memtables through ``flush`` (what the engine
does) and reads back through the protocol's reads. A new store passes this suite before the
engine may use it: add its factory to ``STORES``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import pytest

from memd.engine.memtable import Memtable
from memd.engine.records import OP_DEL, OP_FLUSHALL, OP_MEM_DEL, OP_MEM_PUT, OP_SET, OP_UPDATE, T_HASH, T_LIST, \
    T_STRING, T_ZSET, Op
from memd.errors import QueryError
from memd.store.base import Store, list_sub
from memd.store.sqlite import SqliteStore

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000_000  # ms

Factory = Callable[[Path], Store]
STORES: dict[str, Factory] = {
    "sqlite": lambda d: SqliteStore(str(d / "memd.sqlite3")),
}


@pytest.fixture(params=sorted(STORES))
def factory(request: pytest.FixtureRequest) -> Factory:
    return STORES[request.param]


@pytest.fixture
async def store(factory: Factory, tmp_path: Path) -> AsyncIterator[Store]:
    s = factory(tmp_path)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


class Writer:
    """Builds frozen memtables the way the engine does: ops under increasing LSNs."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.lsn = store.flushed_lsn

    async def flush(self, *records: list[Op]) -> None:
        table = Memtable()
        for ops in records:
            self.lsn += 1
            table.apply(self.lsn, ops)
        table.frozen = True
        await self.store.flush(table)


def put(ns: str, key: str, value: str | None, version: int, at: int, expires: int | None = None) -> Op:
    if value is None:
        return (OP_MEM_DEL, ns, key, version, at)
    return (OP_MEM_PUT, ns, key, value, version, at, at, expires, None)


def h(key: bytes, create: bool, count: int, changes: list[tuple[bytes, bytes | None]]) -> Op:
    return (OP_UPDATE, key, T_HASH, create, None, count, 0, 0, changes)


async def test_a_new_store_is_empty(store: Store) -> None:
    assert store.flushed_lsn == 0
    assert store.get_key(0, b"k") is None
    assert store.scan_keys(0, None, 10) == []
    assert store.count_live_keys(0, T0) == 0
    assert store.get_mem("a", "k") is None
    assert store.mem_heads([("a", "k"), ("a", "k2")]) == {("a", "k"): (None, 0), ("a", "k2"): (None, 0)}
    assert await store.mem_namespaces("", T0) == []
    assert isinstance(store.ranking(), str) and store.ranking()


async def test_strings_flush_overwrite_delete_and_survive_reopen(store: Store, factory: Factory,
                                                                 tmp_path: Path) -> None:
    w = Writer(store)
    await w.flush([(OP_SET, b"a", b"1", None)], [(OP_SET, b"b", b"2", T0 + 5000)])
    assert store.flushed_lsn == 2
    assert store.get_key(0, b"a") == (T_STRING, b"1", None, 0, 0, 0)
    assert store.get_key(0, b"b") == (T_STRING, b"2", T0 + 5000, 0, 0, 0)
    await w.flush([(OP_SET, b"a", b"one", None), (OP_DEL, b"b")])
    assert store.get_key(0, b"a") == (T_STRING, b"one", None, 0, 0, 0)
    assert store.get_key(0, b"b") is None
    await store.close()
    again = factory(tmp_path)
    await again.open()
    try:
        assert again.flushed_lsn == 3
        assert again.get_key(0, b"a") == (T_STRING, b"one", None, 0, 0, 0)
    finally:
        await again.close()


async def test_collection_elements_merge_across_flushes_and_die_with_their_key(store: Store) -> None:
    w = Writer(store)
    await w.flush([h(b"h", True, 2, [(b"f1", b"v1"), (b"f2", b"v2")])])
    await w.flush([h(b"h", False, 2, [(b"f2", None), (b"f3", b"v3")])])  # delta: one removed, one added
    assert store.get_key(0, b"h") == (T_HASH, None, None, 2, 0, 0)
    assert dict(store.iter_elems(0, b"h")) == {b"f1": b"v1", b"f3": b"v3"}
    assert store.get_elem(0, b"h", b"f2") is None
    assert list(store.iter_elems(0, b"h", b"f2", b"f9")) == [(b"f3", b"v3")]
    assert list(store.iter_elems(0, b"h", b"f1\x00")) == [(b"f3", b"v3")]  # open above: SCAN resumes after f1
    assert [store.elem_at(0, b"h", i) for i in range(3)] == [b"f1", b"f3", None]
    await w.flush([h(b"h", True, 1, [(b"new", b"x")])])  # recreated: the old elements are gone
    assert dict(store.iter_elems(0, b"h")) == {b"new": b"x"}
    await w.flush([(OP_SET, b"h", b"now a string", None)])  # another type: no element survives
    assert list(store.iter_elems(0, b"h")) == []
    await w.flush([h(b"h2", True, 1, [(b"f", b"v")])], [(OP_DEL, b"h2")])
    assert store.get_key(0, b"h2") is None and list(store.iter_elems(0, b"h2")) == []


async def test_sorted_set_scores_and_list_positions(store: Store) -> None:
    w = Writer(store)
    await w.flush([(OP_UPDATE, b"z", T_ZSET, True, None, 2, 0, 0, [(b"m1", 1.5), (b"m2", -2.0)])])
    assert store.get_elem(0, b"z", b"m1") == 1.5
    assert dict(store.iter_elems(0, b"z")) == {b"m1": 1.5, b"m2": -2.0}
    items = [(list_sub(i), f"e{i}".encode()) for i in range(5)]
    await w.flush([(OP_UPDATE, b"l", T_LIST, True, None, 5, 0, 5, items)])
    assert [v for _, v in store.iter_elems(0, b"l")] == [b"e0", b"e1", b"e2", b"e3", b"e4"]
    await w.flush([(OP_UPDATE, b"l", T_LIST, False, None, 3, 1, 4, [])])  # LTRIM 1 3: bounds only
    assert store.get_key(0, b"l") == (T_LIST, None, None, 3, 1, 4)
    assert [v for _, v in store.iter_elems(0, b"l")] == [b"e1", b"e2", b"e3"]
    assert list_sub(-1) < list_sub(0) < list_sub(1)  # LPUSH goes below 0 and sorts first


async def test_scan_pages_in_key_order_and_counts_live_keys(store: Store) -> None:
    w = Writer(store)
    await w.flush([(OP_SET, bytes([c]), b"v", T0 - 1 if c == ord("c") else None) for c in b"edcba"])
    assert [k for k, _, _ in store.scan_keys(0, None, 2)] == [b"a", b"b"]
    assert [k for k, _, _ in store.scan_keys(0, b"b", 10)] == [b"c", b"d", b"e"]
    assert store.scan_keys(0, b"c", 1) == [(b"d", T_STRING, None)]
    assert store.count_live_keys(0, T0) == 4  # c expired
    with store.snapshot():
        assert store.count_live_keys(0, T0) == 4
    assert store.expired_keys(T0, 10) == [(0, b"c")]


async def test_flushall_wipes_the_keyspace_but_not_memories(store: Store) -> None:
    w = Writer(store)
    await w.flush([(OP_SET, b"a", b"1", None), h(b"h", True, 1, [(b"f", b"v")]), put("n", "k", '{"a": 1}', 1, T0)])
    await w.flush([(OP_FLUSHALL,), (OP_SET, b"after", b"x", None)])
    assert store.get_key(0, b"a") is None and list(store.iter_elems(0, b"h")) == []
    assert store.get_key(0, b"after") is not None
    assert store.get_mem("n", "k") is not None


async def test_memory_versions_history_and_tombstones(store: Store) -> None:
    w = Writer(store)
    await w.flush([put("u.1", "fact", '{"text": "likes tea"}', 1, T0)])
    assert store.get_mem("u.1", "fact") == ('{"text": "likes tea"}', 1, T0, T0, None, None)
    await w.flush([put("u.1", "fact", '{"text": "likes coffee"}', 2, T0 + 10)])
    assert store.get_mem("u.1", "fact")[:2] == ('{"text": "likes coffee"}', 2)  # type: ignore[index]
    assert store.mem_history("u.1", "fact", 10, 0, None) == [(1, '{"text": "likes tea"}', T0, T0, T0 + 10, 0)]
    await w.flush([put("u.1", "fact", None, 2, T0 + 20)])  # deleted: the version count stays
    row = store.get_mem("u.1", "fact")
    assert row is not None and row[0] is None and row[1] == 2
    assert store.mem_heads([("u.1", "fact"), ("u.1", "other")]) == {("u.1", "fact"): (row, 2),
                                                                    ("u.1", "other"): (None, 0)}
    history = store.mem_history("u.1", "fact", 10, 0, None)
    assert [(v, deleted) for v, _, _, _, _, deleted in history] == [(2, 1), (1, 0)]
    assert store.mem_history("u.1", "fact", 10, 0, 1) == history[:1]
    assert store.mem_history("u.1", "fact", 10, T0 + 15, None) == history[:1]  # ended after since_ms only
    assert await store.prune_history(1, 0) == 1
    assert [v for v, *_ in store.mem_history("u.1", "fact", 10, 0, None)] == [2]


async def test_search_ranks_filters_scopes_and_rejects_a_bad_query(store: Store) -> None:
    w = Writer(store)
    await w.flush([put("u.1", "a", '{"text": "green tea in the morning", "kind": "pref"}', 1, T0),
                   put("u.1", "b", '{"text": "tea tea tea", "kind": "note"}', 1, T0 + 1),
                   put("u.2", "c", '{"text": "coffee", "kind": "pref"}', 1, T0 + 2),
                   put("u.10", "d", '{"text": "tea elsewhere"}', 1, T0 + 3),
                   put("u.1", "gone", '{"text": "tea"}', 1, T0, expires=T0 + 5)])
    now = T0 + 100
    hits = await store.search_mem("u.1", "tea", [], 10, 0, now)
    assert [r[1] for r in hits] == ["b", "a"]  # ranked; "u.10" is not under "u.1"; the expired one is gone
    assert all(r[8] is not None and r[8] > 0 for r in hits)
    assert hits[0][8] >= hits[1][8]  # type: ignore[operator]
    assert [r[1] for r in await store.search_mem("u", None, [("kind", "$eq", "pref")], 10, 0, now)] == ["c", "a"]
    ne = await store.search_mem("", "tea", [("kind", "$ne", "note")], 10, 0, now)  # a missing field is not "note"
    assert {r[1] for r in ne} == {"a", "d"} and ne[0][8] >= ne[1][8]  # type: ignore[operator]
    ranked = [r[1] for r in await store.search_mem("u", "tea", [], 10, 0, now)]
    assert sorted(ranked) == ["a", "b", "d"]
    assert [r[1] for r in await store.search_mem("u", "tea", [], 1, 1, now)] == ranked[1:2]  # LIMIT 1 OFFSET 1
    scoped = await store.search_mem("u", None, [], 10, 0, now, scope=(("u.1", False),))
    assert {r[0] for r in scoped} == {"u.2", "u.10"}
    assert await store.mem_namespaces("u", now) == ["u.1", "u.10", "u.2"]
    assert await store.mem_namespaces("u.1", now) == ["u.1"]
    with pytest.raises(QueryError):
        await store.search_mem("", 'tea "unbalanced', [], 10, 0, now)


async def test_nul_is_a_character_like_any_other_in_filters_and_text(store: Store) -> None:
    w = Writer(store)
    long = "p" * 70 + "\u0000q"  # longer than ``fields`` keeps: the filter reads the value itself
    await w.flush([put("n", "k", '{"a": "x\\u0000y zebra", "b": 1, "c": "%s"}' % long.replace("\u0000", "\\u0000"),
                       1, T0)])
    now = T0 + 1

    async def keys(query: str | None, *conds: tuple[str, str, object]) -> list[str]:
        return [r[1] for r in await store.search_mem("n", query, list(conds), 10, 0, now)]

    assert await keys("zebra") == ["k"]
    assert await keys(None, ("a", "$eq", "x\u0000y zebra")) == ["k"]
    assert await keys(None, ("a", "$eq", "x")) == []
    assert await keys(None, ("a", "$in", ["x", "x\u0000y zebra"])) == ["k"]
    assert await keys(None, ("a", "$ne", "x")) == ["k"]
    assert await keys(None, ("a", "$gt", "x\u0000")) == ["k"] and await keys(None, ("a", "$lte", "x")) == []
    assert await keys(None, ("c", "$eq", long)) == ["k"]
    assert await keys(None, ("c", "$eq", "p" * 70)) == []
    assert await keys(None, ("c", "$gt", "p" * 70)) == ["k"]
    assert await keys("zebra", ("a", "$eq", "x\u0000y zebra"), ("b", "$eq", 1)) == ["k"]


async def test_compaction_purges_expired_keys_and_memories(store: Store) -> None:
    w = Writer(store)
    await w.flush([(OP_SET, b"short", b"v", T0 + 1), (OP_SET, b"long", b"v", None),
                   h(b"hh", True, 1, [(b"f", b"v")]), (OP_UPDATE, b"hh", T_HASH, False, T0 + 1, 1, 0, 0, []),
                   put("n", "m", '{"text": "ephemeral"}', 1, T0, expires=T0 + 1)])
    now = T0 + 10
    keys, mems = store.expired_keys(now, 100), store.expired_memories(now, 100)
    assert sorted(keys) == [(0, b"hh"), (0, b"short")] and mems == [("n", "m")]
    await store.purge(keys, mems)
    assert store.get_key(0, b"short") is None and store.get_key(0, b"hh") is None
    assert list(store.iter_elems(0, b"hh")) == []
    assert store.get_key(0, b"long") is not None
    row = store.get_mem("n", "m")
    assert row is not None and row[0] is None and row[1] == 1  # a tombstone keeps the version count
    assert [(v, ended) for v, _, _, _, ended, _ in store.mem_history("n", "m", 10, 0, None)] == [(1, T0 + 1)]
    assert await store.search_mem("n", "ephemeral", [], 10, 0, now) == []
    assert store.expired_keys(now, 100) == [] and store.expired_memories(now, 100) == []
    assert isinstance(await store.vacuum(), int)
    assert await store.checkpoint(0) in ("passive", "truncate", "truncate-busy")
    assert store.disk_bytes() > 0
    store.shrink_memory()


async def test_copy_is_a_store_as_of_one_commit(store: Store, factory: Factory, tmp_path: Path) -> None:
    w = Writer(store)
    await w.flush([(OP_SET, b"a", b"1", None), put("n", "k", '{"x": "y"}', 1, T0)])
    dest = tmp_path / "copy"
    dest.mkdir()
    lsn = await anyio.to_thread.run_sync(store.copy_to, str(dest / "memd.sqlite3"))
    assert lsn == store.flushed_lsn == 1
    copy = factory(dest)
    await copy.open()
    try:
        assert copy.flushed_lsn == 1
        assert copy.get_key(0, b"a") == (T_STRING, b"1", None, 0, 0, 0)
        assert copy.get_mem("n", "k") is not None
    finally:
        await copy.close()


async def test_a_cancelled_flush_still_commits_whole(store: Store) -> None:
    """Cancelling the caller cannot tear a flush: it is all there afterwards, and the store writes on."""
    table = Memtable()
    table.apply(1, [(OP_SET, f"k{i}".encode(), b"v" * 100, None) for i in range(20_000)])
    table.frozen = True
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(store.flush, table)
            await anyio.sleep(0)
            scope.cancel()
    assert store.flushed_lsn == 1
    assert store.count_live_keys(0, T0) == 20_000
    await Writer(store).flush([(OP_SET, b"next", b"v", None)])
    assert store.get_key(0, b"next") is not None


async def test_reads_after_close_fail_clearly(store: Store) -> None:
    await store.close()
    with pytest.raises(Exception, match="closed"):
        store.get_key(0, b"a")
    with pytest.raises(Exception, match="closed"):
        await Writer(store).flush([(OP_SET, b"a", b"1", None)])


def test_every_store_is_a_directory_of_its_own(tmp_path: Path) -> None:
    for name, make in STORES.items():
        d = tmp_path / name
        d.mkdir()
        make(d)
        assert not os.listdir(d), f"{name}: constructing a store must not touch the disk (open() does)"
