"""Bulk memory ingest: memories buffered start a flush of their own (engine.FLUSH_MAX_MEMORIES), and a run
of pipelined MEM.PUTs answers each put exactly as it would be answered alone."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

import memd.server as server_mod
from memd.config import NamespaceRule
from memd.engine.engine import FLUSH_MAX_MEMORIES, Engine
from memd.engine.records import OP_SET
from memd.server import Access, Server
from tests.unit.test_server_batch import Client, mem_put

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


# ---- a run of MEM.PUTs answers exactly what the same puts answer one at a time ----------------

@contextlib.asynccontextmanager
async def restricted(path: Path) -> AsyncIterator[Server]:
    """A server whose peers are uid 4242 (not root, not the daemon's): namespace rules apply to them."""
    async with Engine(str(path), fsync="everysec", flush_max_age=3600) as engine:
        server = Server(engine, str(path / "unused.sock"), access=Access.default(extra_uids=(4242,)))
        server.namespace_rules = (NamespaceRule("locked", read_uids=(4242,)), NamespaceRule("locked.open",
                                                                                             write_uids=(4242,)))
        yield server


async def _one_at_a_time(server: Server, frames: list[bytes]) -> bytes:
    alone = Client(server)
    out = b""
    for frame in frames:
        alone.transport.data.clear()
        alone.conn.data_received(frame)
        with anyio.fail_after(5):
            while not alone.transport.data.endswith(b"\r\n"):
                await anyio.sleep(0.001)
        out += bytes(alone.transport.data)
    return out


async def test_a_run_answers_each_put_as_it_would_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Namespaces repeat (valid, malformed, forbidden, allowed under a forbidden prefix) and puts with
    two faults (which one is reported depends on the order of the checks): a run caches what it learns
    per namespace, and must answer exactly what each put answers alone."""
    puts = [("u.1", "a", '{"x":1}'), ("u..1", "b", "{}"), ("locked.x", "c", "{}"), ("u.1", "d", "[1]"),
            ("locked.x", "", "{}"), ("u..1", "e", "{}"), ("locked.open.y", "f", '{"y":2}'), ("locked.x", "g", "{"),
            ("locked.open.y", "h", "nope"), ("u.1", "", "[]"), ("locked.x", "i", "{}"), ("u.1", "a", '{"x":2}'),
            ("", "j", "{}"), ("u.\xe9", "k", '{"z":"\xe9"}')]
    frames = [mem_put(ns, key, value) for ns, key, value in puts]
    frames.insert(3, mem_put("u.1", "ttl", "{}", "TTL", "5"))  # options: the general path, inside the run
    monkeypatch.setattr(server_mod, "peer_credentials", lambda sock: (1, 4242, 4242, []))
    async with restricted(tmp_path / "alone") as server:
        want = await _one_at_a_time(server, frames)
    async with restricted(tmp_path / "run") as server:
        await Client(server).send(b"".join(frames), want)
        mem = server.engine.memories
        assert mem.get("u.1", "a").version == 2  # type: ignore[union-attr]
        assert mem.get("locked.open.y", "f") is not None and mem.get("locked.x", "c") is None
    assert want.count(b"-NOPERM") == 2 and want.count(b"-ERR") == 8, want
