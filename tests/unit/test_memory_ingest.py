"""Bulk memory ingest: memories buffered start a flush of their own (engine.FLUSH_MAX_MEMORIES)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from memd.engine.engine import FLUSH_MAX_MEMORIES, Engine
from memd.engine.records import OP_SET

pytestmark = pytest.mark.anyio


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    async with Engine(str(tmp_path), flush_max_age=3600) as e:
        e.flush_max_memories = 8
        yield e


async def _flushes(engine: Engine, count: int) -> None:
    with anyio.fail_after(10):
        while engine.flush_count < count:
            await anyio.sleep(0.01)


def test_the_default_is_a_few_thousand() -> None:
    assert 1000 <= FLUSH_MAX_MEMORIES <= 100_000


async def test_memories_past_the_threshold_start_a_flush(engine: Engine) -> None:
    puts = [("ns", f"k{i}", '{"text":"w%d"}' % i, None, ()) for i in range(7)]
    assert engine.memories.put_many(puts) == [1] * 7  # type: ignore[arg-type]
    await anyio.sleep(0.05)
    assert engine.flush_count == 0 and engine.memories.pending("ns")
    engine.memories.put("ns", "k7", '{"text":"w7"}')
    await _flushes(engine, 1)
    assert not engine.memories.pending("ns")
    assert [i.key for i in await engine.memories.search("ns", "w7", [], 10, 0)] == ["k7"]
    assert engine.store.get_mem("ns", "k3") is not None


async def test_string_keys_do_not_count_as_memories(engine: Engine) -> None:
    engine.apply([(OP_SET, b"k%d" % i, b"v", None) for i in range(20)])
    await anyio.sleep(0.05)
    assert engine.flush_count == 0
