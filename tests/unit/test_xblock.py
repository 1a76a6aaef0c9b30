"""XREAD / XREADGROUP BLOCK below the socket: which stream writes mark a key ready, how the registry
serves parked stream readers (every XREAD reader, competing group consumers, the errors), and a
served XREADGROUP's delivery surviving a restart.

The multi-client behaviour against Redis and the kill -9 guarantee are
tests/integration/test_differential_xblock.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from memd.blocking import Blocking
from memd.commands import Context
from memd.commands.blocking import Block
from memd.engine.engine import Engine
from memd.errors import CommandError
from memd.resp import NullArray
from tests.unit.test_blocking import Conn, FakeServer, park, push, run

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_stream_writes_that_mark_a_waited_key(tmp_path: Path) -> None:
    """An entry added, a group destroyed, the stream created or deleted: ready. Other stream writes
    (XACK, XDEL, XTRIM, XSETID, XGROUP SETID, a delivery) wake nobody, as in Redis."""
    async with Engine(str(tmp_path / "d")) as engine:
        ctx = Context(engine=engine)
        engine.wake_keys[b"s"] = 1
        for line in ["XADD s 1-1 a 1", "XGROUP CREATE t g $ MKSTREAM"]:
            run(ctx, line)
        assert list(engine.ready_keys) == [b"s"]
        engine.ready_keys.clear()
        for line in ["XGROUP CREATE s g 0", "XREADGROUP GROUP g c STREAMS s >", "XACK s g 1-1",
                     "XSETID s 5-5", "XGROUP SETID s g 0", "XGROUP CREATECONSUMER s g d", "XDEL s 1-1",
                     "XTRIM s MAXLEN 0"]:
            assert not isinstance(run(ctx, line), CommandError), line
            assert not engine.ready_keys, line
        for line in ["XGROUP DESTROY s g", "DEL s", "XGROUP CREATE s g $ MKSTREAM", "XADD s MAXLEN 0 9-1 a 1"]:
            run(ctx, line)
            assert list(engine.ready_keys) == [b"s"], line
            engine.ready_keys.clear()
        with engine.batch():  # pipelined XADDs (one record) mark it too
            run(ctx, "XADD s 10-1 a 1")
        assert list(engine.ready_keys) == [b"s"]


async def test_readers_all_served_consumers_compete(tmp_path: Path) -> None:
    async with Engine(str(tmp_path / "d")) as engine:
        reg = Blocking(engine)
        ctx = Context(engine=engine)
        run(ctx, "XGROUP CREATE s g $ MKSTREAM")
        a, b, c1, c2 = (Conn(engine, i) for i in (1, 2, 3, 4))
        park(reg, a, "XREAD BLOCK 0 STREAMS s $")
        park(reg, c1, "XREADGROUP GROUP g c1 BLOCK 0 STREAMS s >")
        park(reg, c2, "XREADGROUP GROUP g c2 BLOCK 0 NOACK STREAMS s >")
        park(reg, b, "XREAD BLOCK 0 COUNT 1 STREAMS other s 0 0")
        assert len(reg) == 4
        lsn = engine.last_lsn
        push(engine, reg, "XADD s 1-1 f v")
        entry = [b"1-1", [b"f", b"v"]]
        assert a.woken == [([[b"s", [entry]]], False)]  # a read: no write, its reply need not wait
        assert b.woken == [([[b"s", [entry]]], False)]
        assert c1.woken == [([[b"s", [entry]]], True)]  # a delivery: one record
        assert engine.last_lsn == lsn + 2 and not c2.woken and len(reg) == 1
        push(engine, reg, "XADD s 2-1 f w")
        assert c2.woken == [([[b"s", [[b"2-1", [b"f", b"w"]]]]], True)]
        assert run(ctx, "XPENDING s g") == [1, b"1-1", b"1-1", [[b"c1", b"1"]]]  # NOACK: not pending


async def test_consumers_unblocked_with_errors(tmp_path: Path) -> None:
    async with Engine(str(tmp_path / "d")) as engine:
        reg = Blocking(engine)
        ctx = Context(engine=engine)
        run(ctx, "XGROUP CREATE s g $ MKSTREAM")
        run(ctx, "XGROUP CREATE s h $")
        reader, g1, h1 = Conn(engine, 1), Conn(engine, 2), Conn(engine, 3)
        park(reg, reader, "XREAD BLOCK 0 STREAMS s $")
        park(reg, g1, "XREADGROUP GROUP g c BLOCK 0 STREAMS s >")
        park(reg, h1, "XREADGROUP GROUP h c BLOCK 0 STREAMS s >")
        push(engine, reg, "XGROUP DESTROY s g")
        (reply, wrote), = g1.woken
        assert isinstance(reply, CommandError) and reply.prefix == "NOGROUP" and not wrote
        assert str(reply) == "the consumer group this client was blocked on no longer exists"
        push(engine, reg, "SET s x")
        (reply, _), = h1.woken
        assert isinstance(reply, CommandError) and reply.prefix == "UNBLOCKED"
        assert str(reply) == "the stream key no longer exists"
        assert not reader.woken and len(reg) == 1  # an XREAD reader waits on: the stream may come back
        push(engine, reg, "DEL s")
        push(engine, reg, "XADD s 1-1 a 1")
        assert reader.woken == [([[b"s", [[b"1-1", [b"a", b"1"]]]]], False)]


async def test_no_blocking_in_multi_or_without_a_connection(tmp_path: Path) -> None:
    async with Engine(str(tmp_path / "d")) as engine:
        ctx = Context(engine=engine, server=FakeServer())  # type: ignore[arg-type]
        assert run(ctx, "XREAD BLOCK 0 STREAMS s $") is NullArray
        run(ctx, "XGROUP CREATE s g $ MKSTREAM")
        ctx.may_block, ctx.multi = True, []
        assert run(ctx, "XREADGROUP GROUP g c BLOCK 0 STREAMS s >") is NullArray
        ctx.multi = None
        block = run(ctx, "XREAD BLOCK 1500 STREAMS s $")
        assert isinstance(block, Block) and block.timeout == 1.5 and block.keys == (b"s",)


@pytest.mark.parametrize("crash", [True, False])
async def test_served_xreadgroup_survives_restart(tmp_path: Path, crash: bool) -> None:
    data = str(tmp_path / "data")
    async with Engine(data) as engine:
        reg = Blocking(engine)
        ctx = Context(engine=engine)
        run(ctx, "XGROUP CREATE s g $ MKSTREAM")
        await engine.flush()
        c = Conn(engine, 1)
        park(reg, c, "XREADGROUP GROUP g c COUNT 5 BLOCK 0 STREAMS s >")
        push(engine, reg, "XADD s 1-1 f v")
        assert c.woken and c.woken[0][1]
        before: Any = [run(ctx, "XPENDING s g"), run(ctx, "XINFO GROUPS s")]
        assert before[0] == [1, b"1-1", b"1-1", [[b"c", b"1"]]]
        if crash:
            async def no_final_flush() -> None:
                pass
            engine._flush_all = no_final_flush  # type: ignore[method-assign]
    async with Engine(data) as engine:
        ctx = Context(engine=engine)
        assert [run(ctx, "XPENDING s g"), run(ctx, "XINFO GROUPS s")] == before
