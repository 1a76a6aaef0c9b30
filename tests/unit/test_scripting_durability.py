"""A script is one atomic step and ONE WAL record: all of its writes replay after a crash, or none.

Runs the handlers in process on a real Engine (the script on the calling thread, inside
``engine.batch()``), then reopens the data directory without the final flush (a crash): the
WAL alone must bring the writes back; a WAL whose last record is torn brings none of them.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import pytest

from memd.commands import COMMANDS, Context, load_all
from memd.engine.engine import Engine

pytestmark = pytest.mark.anyio
load_all()

SCRIPT = b"for i = 1, 20 do redis.call('set', KEYS[1] .. i, ARGV[1]) end redis.call('rpush', KEYS[2], 'x', 'y')"


def call(ctx: Context, *args: bytes) -> object:
    return COMMANDS[args[0].lower()].handler(ctx, list(args[1:]))


async def crash(engine: Engine) -> None:
    """Leave without the final flush: only the WAL holds the writes."""
    async def no_final_flush() -> None:
        pass
    engine._flush_all = no_final_flush  # type: ignore[method-assign]


async def test_one_record_replayed_after_a_crash(tmp_path: Path) -> None:
    async with Engine(str(tmp_path)) as engine:
        ctx = Context(engine=engine)
        before = engine.last_lsn
        call(ctx, b"EVAL", SCRIPT, b"2", b"k", b"list", b"v")
        assert engine.last_lsn == before + 1
        await engine.sync()
        await crash(engine)
    async with Engine(str(tmp_path)) as engine:
        ctx = Context(engine=engine)
        assert call(ctx, b"MGET", *[b"k%d" % i for i in range(1, 21)]) == [b"v"] * 20
        assert call(ctx, b"LRANGE", b"list", b"0", b"-1") == [b"x", b"y"]


async def test_torn_record_brings_back_none_of_the_script(tmp_path: Path) -> None:
    async with Engine(str(tmp_path)) as engine:
        ctx = Context(engine=engine)
        call(ctx, b"SET", b"before", b"1")
        call(ctx, b"EVAL", SCRIPT, b"2", b"k", b"list", b"v")
        await engine.sync()
        await crash(engine)
    segment = sorted(glob.glob(os.path.join(tmp_path, "wal", "*")))[-1]
    with open(segment, "r+b") as f:
        f.truncate(os.path.getsize(segment) - 3)  # the script's record, torn
    async with Engine(str(tmp_path)) as engine:
        ctx = Context(engine=engine)
        assert call(ctx, b"GET", b"before") == b"1"
        assert call(ctx, b"MGET", *[b"k%d" % i for i in range(1, 21)]) == [None] * 20
        assert call(ctx, b"EXISTS", b"list") == 0


async def test_read_only_script_writes_no_record(tmp_path: Path) -> None:
    async with Engine(str(tmp_path)) as engine:
        ctx = Context(engine=engine)
        before = engine.last_lsn
        assert call(ctx, b"EVAL_RO", b"return redis.call('get', KEYS[1])", b"1", b"k") is None
        assert engine.last_lsn == before
