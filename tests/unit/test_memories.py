"""Agent memories in the engine: history when one memtable collapses versions, schema migration,
filters, FTS text extraction. (Random sequences: test_memories_model.py; commands: integration.)"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from memd.store import schema as store_mod
from memd.engine.engine import Engine
from memd.engine.memories import parse_filter
from memd.store.filters import json_equal
from memd.store.schema import migrate
from memd.errors import QueryError


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


pytestmark = pytest.mark.anyio


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    async with Engine(str(tmp_path), clock=Clock(), flush_max_age=3600) as e:
        yield e


def history(e: Engine, ns: str, key: str) -> list[tuple[int, int, bool]]:
    return [(h.version, h.superseded_at, h.deleted) for h in e.memories.history(ns, key)]


@pytest.mark.parametrize("flush_between", [False, True])
async def test_put_over_expired_item_archives_it_as_ended_at_its_expiry(engine: Engine, flush_between: bool) -> None:
    clock = engine.clock
    t0 = int(clock() * 1000)
    m = engine.memories
    assert m.put("ns", "k", '{"a":1}', ttl_ms=1000) == 1
    if flush_between:
        await engine.flush()
    clock.now += 5  # type: ignore[attr-defined]
    assert m.get("ns", "k") is None
    assert m.put("ns", "k", '{"a":2}') == 2  # the count goes on
    assert m.get("ns", "k").created_at == t0 + 5000  # type: ignore[union-attr]  # re-created
    await engine.flush()
    assert history(engine, "ns", "k") == [(1, t0 + 1000, False)]


@pytest.mark.parametrize("flush_after", [0, 1, 2, 3])
async def test_every_version_is_archived_with_its_exact_end(engine: Engine, flush_after: int) -> None:
    clock, m = engine.clock, engine.memories
    t0 = int(clock() * 1000)
    steps = [lambda: m.put("ns", "k", '{"v":1}'), lambda: m.put("ns", "k", '{"v":2}'),
             lambda: m.delete("ns", "k"), lambda: m.put("ns", "k", '{"v":3}')]
    for i, step in enumerate(steps):
        if i == flush_after:
            await engine.flush()
        clock.now += 1  # type: ignore[attr-defined]
        step()
    await engine.flush()
    # v1 ended by the put of v2 (t0+2s), v2 by the delete (t0+3s)
    assert history(engine, "ns", "k") == [(2, t0 + 3000, True), (1, t0 + 2000, False)]
    item = m.get("ns", "k")
    assert item is not None and item.version == 3 and item.created_at == t0 + 4000


async def test_refresh_ttl_is_not_a_version(engine: Engine) -> None:
    clock, m = engine.clock, engine.memories
    m.put("ns", "k", '{"v":1}', ttl_ms=10_000)
    await engine.flush()
    clock.now += 4  # type: ignore[attr-defined]
    item = m.get("ns", "k", refresh_ttl=True)
    assert item is not None and item.version == 1 and item.expires_at == int(clock() * 1000) + 10_000
    await engine.flush()
    clock.now += 8  # past the first expiry, not the refreshed one
    assert m.get("ns", "k") is not None
    assert history(engine, "ns", "k") == []


async def test_version_count_survives_the_current_row_being_purged(engine: Engine) -> None:
    m = engine.memories
    m.put("ns", "k", '{"v":1}')
    m.put("ns", "k", '{"v":2}')
    m.delete("ns", "k")
    await engine.flush()
    await engine.store.execute("DELETE FROM mem_items")  # a row gone (say, removed by hand): history remembers
    engine.memories.engine.store.reader.execute("SELECT 1")  # the reader sees the purge
    assert m.put("ns", "k", '{"v":3}') == 3


async def test_search_indexes_string_values_not_field_names(engine: Engine) -> None:
    m = engine.memories
    m.put("ns", "k", json.dumps({"colour": "teal", "deep": {"list": ["walrus", 7, {"x": "Crème brûlée"}]}}))
    await engine.flush()

    async def found(q: str) -> list[str]:
        return [i.key for i in await m.search("", q, [], 10, 0)]
    assert await found("teal") == await found("walrus") == await found("creme") == ["k"]
    assert await found("colour") == await found("deep") == await found("list") == []
    with pytest.raises(QueryError, match="invalid QUERY"):
        await found('"unterminated')


async def test_filters_follow_jsonb_rules(engine: Engine) -> None:
    m = engine.memories
    docs = {"a": {"n": 1, "b": True, "s": "x", "o": {"p": [1, 2]}, "z": None},
            "b": {"n": 2.5, "b": 1, "s": "y"},
            "c": {"n": "1", "s": "xx"}}
    for k, v in docs.items():
        m.put("ns", k, json.dumps(v))
    await engine.flush()

    async def keys(spec: object) -> list[str]:
        return sorted(i.key for i in await m.search("", None, parse_filter(spec), 10, 0))
    assert await keys({"n": 1}) == ["a"]  # "1" is a string: not equal
    assert await keys({"b": True}) == ["a"] and await keys({"b": 1}) == ["b"]  # true is not 1
    assert await keys({"z": None}) == ["a", "b", "c"]  # null matches missing
    assert await keys({"o": {"p": [1, 2]}}) == ["a"] and await keys({"o": {"p": [2, 1]}}) == []
    assert await keys({"n": {"$gt": 1}}) == ["b"] and await keys({"n": {"$gte": 1, "$lt": 2}}) == ["a"]
    assert await keys({"s": {"$gt": "x"}}) == ["b", "c"]
    assert await keys({"s": {"$ne": "x"}}) == ["b", "c"] and await keys({"missing": {"$ne": 1}}) == ["a", "b", "c"]
    assert await keys({"s": {"$in": ["y", "xx"]}}) == ["b", "c"] and await keys({"s": {"$in": []}}) == []
    for bad in ([1], {"n": {"$regex": "x"}}, {"n": {"$gt": [1]}}, {"n": {"$in": 1}},
                {"n": {"$eq": 1, "p": 2}}):
        with pytest.raises(ValueError):
            parse_filter(bad)


def test_json_equal_is_jsonb_equality() -> None:
    assert json_equal({"a": [1, {"b": None}]}, {"a": [1.0, {"b": None}]})
    assert not json_equal([True], [1]) and not json_equal({"a": 1}, {"a": 1, "b": 2}) and not json_equal("1", 1)


def test_schema_v1_file_migrates_to_the_current_schema_indexing_existing_memories_and_their_fields(tmp_path: Path) -> None:
    path = str(tmp_path / "db")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    for statement in store_mod.MIGRATIONS[0].split(";\n"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO mem_items VALUES ('ns', 'k', '{\"t\": \"lighthouse\", \"n\": [1]}', 4, 1, 2, NULL)")
    conn.close()
    assert migrate(path) == 1
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == store_mod.SCHEMA_VERSION == 7
    assert conn.execute("SELECT rowid FROM mem_fts WHERE mem_fts MATCH 'lighthouse'").fetchall() == [(1,)]
    assert conn.execute("SELECT fields FROM mem_items").fetchall() == [('{"t":"lighthouse","n":[]}',)]
    conn.close()


async def test_a_value_sqlite_cannot_parse_does_not_stop_the_flush(engine: Engine) -> None:
    """Python writes inf as Infinity; the command layer refuses it now, but a WAL may hold one."""
    engine.memories.put("ns", "bad", '{"a":Infinity,"t":"hello"}')
    engine.memories.put("ns", "good", '{"t":"hello"}')
    await engine.flush()
    assert [i.key for i in await engine.memories.search("", "hello", [], 10, 0)] == ["good"]
    engine.memories.delete("ns", "bad")
    await engine.flush()
    await engine.store.execute("INSERT INTO mem_fts (mem_fts) VALUES ('integrity-check')")


async def test_refreshttl_is_refused_while_writes_are(engine: Engine) -> None:
    from memd.commands import Context, load_all
    from memd.commands.connection import execute
    from memd.errors import CommandError

    load_all()

    engine.memories.put("ns", "k", "{}", ttl_ms=10_000)
    engine.write_refusal = "memd is over its memory limit"
    ctx = Context(engine=engine)
    reply = execute(ctx, [b"MEM.GET", b"ns", b"k", b"REFRESHTTL"])
    assert isinstance(reply, CommandError) and reply.prefix == "OOM"
    assert execute(ctx, [b"MEM.GET", b"ns", b"k"]) is not None  # a plain read goes on
