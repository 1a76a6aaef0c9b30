"""WATCH / MULTI / EXEC through the connection's dispatcher, on a real engine with a fake clock.

Two of Redis 7.0's rules (multi.c) are pinned here: a watched key that
expires between WATCH and EXEC aborts the transaction (``isWatchedKeyExpired``),
and FLUSHALL / FLUSHDB abort only the transactions that watched a key that
existed (``touchAllWatchedKeysInDb``); a key already expired when watched,
and a key that did not exist, do not abort. Byte-for-byte agreement with
redis-server on the same sequences is tests/integration/test_differential_connection.py's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from memd.commands import Context, load_all
from memd.commands.connection import execute, release_watches
from memd.engine.engine import Engine
from memd.errors import CommandError
from memd.resp import NullArray, SimpleString

pytestmark = pytest.mark.anyio
load_all()

OK = SimpleString("OK")


class Conn:
    def __init__(self, engine: Engine) -> None:
        self.ctx = Context(engine=engine)

    def __call__(self, *argv: str | bytes) -> Any:
        reply = execute(self.ctx, [a if isinstance(a, bytes) else a.encode() for a in argv])
        if isinstance(reply, CommandError):
            raise reply
        return reply

    def transaction(self, *cmds: tuple[str, ...]) -> Any:
        assert self("MULTI") == OK
        for c in cmds:
            assert self(*c) == SimpleString("QUEUED")
        return self("EXEC")


@pytest.fixture
async def engine(tmp_path: Path, fake_clock: Any) -> AsyncIterator[Engine]:
    async with Engine(str(tmp_path / "data"), clock=fake_clock, flush_max_age=3600.0) as e:
        yield e


async def test_a_watched_key_that_expires_before_exec_aborts(engine: Engine, fake_clock: Any) -> None:
    a, b = Conn(engine), Conn(engine)
    a("SET", "k", "v", "PX", "1000")
    assert a("WATCH", "k") == OK
    fake_clock.advance(2)  # nobody writes: the key just expires
    assert b("GET", "k") is None
    assert a.transaction(("SET", "x", "1")) is NullArray
    assert a("GET", "x") is None


async def test_a_watched_key_that_expires_while_flushed_aborts(engine: Engine, fake_clock: Any) -> None:
    a = Conn(engine)
    a("SET", "k", "v", "PX", "1000")
    await engine.flush()  # the key lives in SQLite only
    a("WATCH", "k")
    fake_clock.advance(2)
    assert a.transaction(("SET", "x", "1")) is NullArray


async def test_a_key_with_a_ttl_still_alive_at_exec_does_not_abort(engine: Engine, fake_clock: Any) -> None:
    a = Conn(engine)
    a("SET", "k", "v", "PX", "5000")
    a("WATCH", "k")
    fake_clock.advance(1)
    assert a.transaction(("GET", "k")) == [b"v"]


async def test_a_key_already_expired_when_watched_does_not_abort(engine: Engine, fake_clock: Any) -> None:
    a = Conn(engine)
    a("SET", "k", "v", "PX", "1000")
    fake_clock.advance(2)
    a("WATCH", "k")
    fake_clock.advance(1)
    assert a.transaction(("SET", "x", "1")) == [OK]


@pytest.mark.parametrize("flush", ["FLUSHALL", "FLUSHDB"])
async def test_flush_does_not_abort_a_watch_of_a_missing_key(engine: Engine, flush: str) -> None:
    a, b = Conn(engine), Conn(engine)
    a("SET", "other", "1")
    a("WATCH", "missing")
    b(flush)
    assert a.transaction(("SET", "x", "1")) == [OK]


@pytest.mark.parametrize("flush", ["FLUSHALL", "FLUSHDB"])
async def test_flush_aborts_a_watch_of_an_existing_key(engine: Engine, flush: str) -> None:
    a, b = Conn(engine), Conn(engine)
    a("SET", "k", "1")
    a("WATCH", "k")
    b(flush)
    assert a.transaction(("SET", "x", "1")) is NullArray


async def test_flush_does_not_abort_a_watch_of_a_key_already_expired(engine: Engine, fake_clock: Any) -> None:
    a, b = Conn(engine), Conn(engine)
    a("SET", "k", "v", "PX", "1000")
    fake_clock.advance(2)
    a("WATCH", "k")
    b("FLUSHALL")
    assert a.transaction(("SET", "x", "1")) == [OK]


async def test_a_missing_key_created_then_flushed_still_aborts(engine: Engine) -> None:
    a, b = Conn(engine), Conn(engine)
    a("WATCH", "k")
    b("SET", "k", "1")
    b("FLUSHALL")
    assert a.transaction(("SET", "x", "1")) is NullArray


async def test_a_write_to_a_watched_key_aborts_and_unwatch_forgets(engine: Engine) -> None:
    a, b = Conn(engine), Conn(engine)
    a("WATCH", "k")
    b("SET", "k", "1")
    assert a.transaction(("SET", "x", "1")) is NullArray
    a("WATCH", "k")
    b("SET", "k", "2")
    a("UNWATCH")
    assert a.transaction(("SET", "x", "1")) == [OK]
    release_watches(a.ctx)
    assert engine.watching == 0
