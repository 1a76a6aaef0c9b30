"""Blocking pops below the socket: the engine's ready marks, the timeout rule, the registry's
service order, and the pops surviving a restart.

The multi-client behaviour against Redis is tests/integration/test_differential_blocking.py;
the delivery guarantee across a kill -9 is tests/integration/test_blocking_crash.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from memd.blocking import Blocking
from memd.commands import COMMANDS, Context, load_all
from memd.commands.blocking import Block, parse_timeout
from memd.engine.engine import Engine
from memd.errors import CommandError
from memd.resp import NullArray

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

load_all()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeServer:
    """Enough of a server for the handlers to decide they may block."""


def run(ctx: Context, line: str) -> Any:
    args = [a.encode() for a in line.split()]
    try:
        return COMMANDS[args[0].lower()].handler(ctx, args[1:])
    except CommandError as exc:
        return exc


class Conn:
    """A parked client as the registry sees it: what it was woken with."""

    def __init__(self, engine: Engine, client_id: int) -> None:
        self.ctx = Context(engine=engine, server=FakeServer(), client_id=client_id,  # type: ignore[arg-type]
                           may_block=True)
        self.woken: list[tuple[Any, bool]] = []

    def wake(self, reply: Any, wrote: bool, quiet: bool) -> None:
        self.woken.append((reply, wrote))


def park(reg: Blocking, conn: Conn, line: str) -> None:
    reply = run(conn.ctx, line)
    assert isinstance(reply, Block), reply
    reg.park(conn, reply, quiet=False)


def push(engine: Engine, reg: Blocking, line: str) -> Any:
    reply = run(Context(engine=engine), line)
    reg.serve_ready()
    return reply


# ---- the engine's marks ---------------------------------------------------------------------------

async def test_engine_marks_waited_keys_that_gain_list_or_zset_elements(tmp_path: Path) -> None:
    async with Engine(str(tmp_path / "d")) as engine:
        calls: list[int] = []
        engine.on_ready = lambda: calls.append(1)
        ctx = Context(engine=engine)
        run(ctx, "RPUSH k a")  # nobody waits: no mark (and no cost)
        assert not engine.ready_keys
        engine.wake_keys.update({b"k": 1, b"z": 1, b"s": 1})
        run(ctx, "SET other x")
        run(ctx, "RPUSH other a")
        assert not engine.ready_keys and not calls
        run(ctx, "SET s x")  # a waited-on key overwritten (a stream's blocked consumers get an error)
        assert list(engine.ready_keys) == [b"s"] and calls == [1]
        engine.ready_keys.clear()
        calls.clear()
        run(ctx, "LPOP k")  # emptied: deleted, so marked (a waiter looks and finds nothing to pop)
        assert list(engine.ready_keys) == [b"k"]
        engine.ready_keys.clear()
        calls.clear()
        with engine.batch():  # a transaction's writes are marked as they are applied, in order
            run(ctx, "ZADD z 1 m")
            run(ctx, "RPUSH k b")
            run(ctx, "RPUSH k c")
        assert list(engine.ready_keys) == [b"z", b"k"] and calls == [1]


def test_timeout_rule() -> None:
    assert parse_timeout(b"0") == 0
    assert parse_timeout(b"1.5") == 1.5
    assert parse_timeout(b"0.0001") == 0.001  # ceil to the millisecond
    assert parse_timeout(b"1e-400") == 0.001
    assert parse_timeout(b"-0.0001") == 0  # ceil(-0.1) ms is 0: forever, as Redis
    assert parse_timeout(b"0x10") == 16
    assert parse_timeout(b"9223372036854775") == 0  # beyond any clock: forever
    for raw, msg in [(b"-1", "timeout is negative"), (b"1e16", "timeout is negative"),
                     (b"inf", "timeout is negative"), (b"abc", "timeout is not a float or out of range"),
                     (b"nan", "timeout is not a float or out of range"),
                     (b" 1", "timeout is not a float or out of range")]:
        with pytest.raises(CommandError, match=msg):
            parse_timeout(raw)


# ---- the registry -------------------------------------------------------------------------------

async def test_fifo_type_checks_and_chains(tmp_path: Path) -> None:
    async with Engine(str(tmp_path / "d")) as engine:
        reg = Blocking(engine)
        a, b, c, d = (Conn(engine, i) for i in (1, 2, 3, 4))
        park(reg, a, "BLPOP k 0")
        park(reg, b, "BZPOPMIN k 0")
        park(reg, c, "BLMOVE k k2 LEFT LEFT 0")
        park(reg, d, "BRPOP k2 0")
        assert len(reg) == 4 and a.ctx.blocked
        push(engine, reg, "RPUSH k x y")  # a gets x, c moves y to k2, which serves d; b waits for a zset
        assert a.woken == [([b"k", b"x"], True)]
        assert c.woken == [(b"y", True)]
        assert d.woken == [([b"k2", b"y"], True)]
        assert b.woken == [] and len(reg) == 1 and not a.ctx.blocked
        push(engine, reg, "ZADD k 2 m")  # k had been emptied (and so deleted): now a zset
        assert b.woken == [([b"k", b"m", 2.0], True)]
        assert len(reg) == 0 and not engine.wake_keys


async def test_forget_unblock_and_timeout(tmp_path: Path) -> None:
    async with Engine(str(tmp_path / "d")) as engine:
        reg = Blocking(engine)
        a, b, c = (Conn(engine, i) for i in (1, 2, 3))
        park(reg, a, "BLPOP k 0")
        park(reg, b, "BLPOP k 0")
        reg.forget(a)  # disconnected: out of the queue, no reply
        assert reg.unblock(2, error=True) and not reg.unblock(2, error=False)
        assert isinstance(b.woken[0][0], CommandError) and b.woken[0][0].prefix == "UNBLOCKED"
        push(engine, reg, "RPUSH k x")
        assert a.woken == [] and run(Context(engine=engine), "LLEN k") == 1
        park(reg, c, "BLPOP nothing 0.02")
        await asyncio.sleep(0.1)  # the timer answers, without any write
        assert c.woken == [(NullArray, False)] and len(reg) == 0


async def test_no_blocking_without_a_server_or_inside_exec(tmp_path: Path) -> None:
    async with Engine(str(tmp_path / "d")) as engine:
        ctx = Context(engine=engine)
        assert run(ctx, "BLPOP k 0") is NullArray
        assert run(ctx, "BLMOVE k d LEFT LEFT 0") is None
        ctx = Context(engine=engine, server=FakeServer())  # type: ignore[arg-type]  # (a script's context)
        assert run(ctx, "BZMPOP 0 1 z MIN") is NullArray
        ctx.may_block, ctx.multi = True, []  # a connection's own, while its EXEC runs
        assert run(ctx, "BRPOPLPUSH k d 0") is None


# ---- durability -----------------------------------------------------------------------------------

@pytest.mark.parametrize("crash", [True, False])
async def test_blocking_pops_survive_restart(tmp_path: Path, crash: bool) -> None:
    data = str(tmp_path / "data")
    async with Engine(data) as engine:
        reg = Blocking(engine)
        ctx = Context(engine=engine)
        for line in ["RPUSH l a b c d e", "ZADD z 1 a 2 b 3 c 4 d", "BLPOP l 0", "BRPOP l 0",
                     "BLMOVE l m LEFT RIGHT 0", "BLMPOP 0 1 l RIGHT COUNT 1", "BZPOPMIN z 0",
                     "BZMPOP 0 1 z MAX COUNT 2"]:
            run(ctx, line)  # the immediate forms
        await engine.flush()
        waiters = [Conn(engine, i) for i in (1, 2, 3)]
        park(reg, waiters[0], "BRPOPLPUSH q m 0")
        park(reg, waiters[1], "BLPOP q 0")
        park(reg, waiters[2], "BZPOPMAX y 0")
        push(engine, reg, "RPUSH q x y z")  # served pops: one record each
        push(engine, reg, "ZADD y 1 p 2 q")
        before = {k: run(ctx, f"LRANGE {k} 0 -1") for k in ("l", "m", "q")}
        before["z"] = run(ctx, "ZRANGE z 0 -1 WITHSCORES")
        before["y"] = run(ctx, "ZRANGE y 0 -1 WITHSCORES")
        assert before == {"l": [b"c"], "m": [b"z", b"b"], "q": [b"y"], "z": [b"b", 2.0], "y": [b"p", 1.0]}, before
        if crash:
            async def no_final_flush() -> None:
                pass
            engine._flush_all = no_final_flush  # type: ignore[method-assign]
    async with Engine(data) as engine:
        ctx = Context(engine=engine)
        after = {k: run(ctx, f"LRANGE {k} 0 -1") for k in ("l", "m", "q")}
        after["z"] = run(ctx, "ZRANGE z 0 -1 WITHSCORES")
        after["y"] = run(ctx, "ZRANGE y 0 -1 WITHSCORES")
        assert after == before
