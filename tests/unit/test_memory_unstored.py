"""Memories new to the store skip archiving and unindexing in their flush (MemEntry.unstored), and only those.

The flag comes from the read that numbers a run's versions; these tests check when it is set,
that it survives later writes in the same layer, that a flush retried after its commit no longer
trusts it, and that the FTS index and history stay exact either way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from memd.engine.engine import Engine
from memd.store.rows import flush_rows

pytestmark = pytest.mark.anyio


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    async with Engine(str(tmp_path), flush_max_age=3600) as e:
        yield e


def _unstored(engine: Engine) -> dict[str, bool]:
    return {key: m.unstored for (_, key), m in engine.active.mem.items()}


async def _fts_ok(engine: Engine) -> None:
    await engine.store.execute("INSERT INTO mem_fts (mem_fts) VALUES ('integrity-check')")


async def test_only_items_the_store_has_never_held_are_unstored(engine: Engine) -> None:
    mem = engine.memories
    mem.put("ns", "old", '{"text":"alpha"}')
    mem.put("ns", "gone", '{"text":"beta"}')
    mem.delete("ns", "gone")
    await engine.flush()
    assert mem.put_many([("ns", "old", '{"text":"gamma"}', None, ()), ("ns", "new", '{"text":"delta"}', None, ()),
                         ("ns", "gone", '{"text":"eps"}', None, ())]) == [2, 1, 2]
    assert _unstored(engine) == {"old": False, "new": True, "gone": False}
    rows = flush_rows(engine.active)
    assert [r[1] for r in rows.archives] == ["old", "gone"] and [r[1] for r in rows.unindex] == ["old", "gone"]
    await engine.flush()
    await _fts_ok(engine)
    assert [i.key for i in await mem.search("ns", "gamma", [], 10, 0)] == ["old"]
    assert [i.key for i in await mem.search("ns", "alpha", [], 10, 0)] == []
    assert [v.version for v in mem.history("ns", "old")] == [1]


async def test_later_writes_in_the_same_layer_keep_it_and_older_layers_clear_it(engine: Engine) -> None:
    mem = engine.memories
    mem.put("ns", "k", '{"text":"one"}')
    mem.put("ns", "k", '{"text":"two"}')  # found in the buffer: the entry it replaces says unstored
    assert mem.delete("ns", "k")
    mem.put("ns", "k", '{"text":"three"}')
    assert _unstored(engine) == {"k": True}
    engine._freeze()  # the layer waits to be flushed; the next put finds the item there
    mem.put("ns", "k", '{"text":"four"}')
    assert _unstored(engine) == {"k": False}
    await engine.flush()
    await _fts_ok(engine)
    assert [v.version for v in mem.history("ns", "k")] == [3, 2, 1]
    assert [i.key for i in await mem.search("ns", "four", [], 10, 0)] == ["k"]
    assert [i.key for i in await mem.search("ns", "three", [], 10, 0)] == []


async def test_a_flush_run_again_after_its_commit_unindexes_what_it_indexed(engine: Engine) -> None:
    mem = engine.memories
    mem.put("ns", "k", '{"text":"once"}')
    table = engine._freeze()
    await engine.store.flush(table)
    assert table.committed and flush_rows(table).unindex != []
    await engine.store.flush(table)  # (as a retry after a failure past the commit would)
    await _fts_ok(engine)
    assert [i.key for i in await mem.search("ns", "once", [], 10, 0)] == ["k"]
