"""Streams and consumer groups survive restarts, WAL replay and a SIGKILL under fsync=always.

The delivery guarantee of consumer groups (README, design notes): an XREADGROUP that
hands out entries is a write that moves them into the group's pending entries list, in
one WAL record with the group's new last-delivered id. With ``fsync = always`` its reply
is sent only once that record is on disk, so after a crash every entry a consumer was
told of is still pending for it (XPENDING, XCLAIM, XAUTOCLAIM find it): at-least-once
delivery. A crash before the reply loses the delivery and the client saw nothing; the
entries are then delivered again by the next ``>`` read.
"""

from __future__ import annotations

import signal
import socket
from pathlib import Path
from typing import Any

import pytest

from memd.commands import COMMANDS, Context, load_all
from memd.engine.engine import Engine
from tests.integration.daemon import Daemon
from tests.integration.test_differential_handlers import pack, read_reply

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

load_all()

WRITES = [
    "XADD s 1 a 1", "XADD s 2 b 2", "XADD s 3 c 3", "XGROUP CREATE s g 0", "XGROUP CREATE s h $",
    "XREADGROUP GROUP g c1 COUNT 2 STREAMS s >", "XADD s 4 d 4", "XDEL s 3",
    "XREADGROUP GROUP g c2 STREAMS s >", "XACK s g 1", "XCLAIM s g c3 0 2", "XGROUP CREATECONSUMER s h c9",
    "XADD t MAXLEN 2 5 e 5", "XADD t 6 f 6", "XADD t 7 g 7", "XSETID t 9 ENTRIESADDED 10 MAXDELETEDID 4",
    "XGROUP CREATE m g $ MKSTREAM", "XADD s 10 x y", "XTRIM s MINID 2", "RENAME t u", "EXPIRE u 1000",
]
READS = [
    "XRANGE s - +", "XINFO STREAM s", "XINFO GROUPS s", "XPENDING s g", "XINFO STREAM s FULL", "XRANGE u - +",
    "XINFO STREAM u", "XLEN m", "TYPE m", "XINFO GROUPS m", "XINFO CONSUMERS s g", "XINFO CONSUMERS s h",
]


def run(engine: Engine, line: str) -> Any:
    args = [a.encode() for a in line.split()]
    return COMMANDS[args[0].lower()].handler(Context(engine=engine), args[1:])


def snapshot(engine: Engine) -> list[Any]:
    out = [repr(run(engine, line)) for line in READS]
    out.append(engine.keyspace.pttl(b"u") > 0)
    return out


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _without_idle(state: list[Any]) -> list[Any]:
    """XINFO CONSUMERS's idle grows while the test runs: compare what else it says."""
    return [s for s in state if "idle" not in str(s)]


@pytest.mark.parametrize("crash", [True, False])
async def test_streams_survive_restart(tmp_path: Path, crash: bool) -> None:
    data = str(tmp_path / "data")
    async with Engine(data) as engine:
        for j, line in enumerate(WRITES):
            run(engine, line)
            if j == len(WRITES) // 2:
                await engine.flush()  # part in SQLite, part replayed from the WAL
        before = snapshot(engine)
        if crash:
            async def no_final_flush() -> None:
                pass
            engine._flush_all = no_final_flush  # type: ignore[method-assign]
    assert "c2" in repr(before) and "x" in before[0]
    async with Engine(data) as engine:
        assert _without_idle(snapshot(engine)) == _without_idle(before)
        await engine.flush()
        assert _without_idle(snapshot(engine)) == _without_idle(before)


async def test_streams_in_another_database_survive_replay(tmp_path: Path) -> None:
    """A stream and its group in database 3, replayed from the WAL alone, stay in database 3."""
    data = str(tmp_path / "data")

    def call(ctx: Context, line: str) -> Any:
        args = [a.encode() for a in line.split()]
        return COMMANDS[args[0].lower()].handler(ctx, args[1:])

    async with Engine(data) as engine:
        ctx = Context(engine=engine)
        for line in ("SELECT 3", "XADD s 1 a 1", "XADD s 2 b 2", "XGROUP CREATE s g 0",
                     "XREADGROUP GROUP g c COUNT 1 STREAMS s >", "XADD s 3 c 3", "XDEL s 2"):
            call(ctx, line)
        before = [repr(call(ctx, line)) for line in ("XRANGE s - +", "XPENDING s g", "XINFO GROUPS s")]

        async def no_final_flush() -> None:
            pass
        engine._flush_all = no_final_flush  # type: ignore[method-assign]
    async with Engine(data) as engine:
        ctx = Context(engine=engine)
        assert call(ctx, "XLEN s") == 0 and call(ctx, "TYPE s") == "none"
        call(ctx, "SELECT 3")
        assert [repr(call(ctx, line)) for line in ("XRANGE s - +", "XPENDING s g", "XINFO GROUPS s")] == before


async def test_big_stream_range_reads_are_bounded(tmp_path: Path) -> None:
    """XRANGE with COUNT and XREVRANGE on a stream of 20,000 entries split between SQLite and the buffer."""
    async with Engine(str(tmp_path / "data")) as engine:
        for n in range(1, 20_001):
            run(engine, f"XADD big {n} f {n}")
            if n == 15_000:
                await engine.flush()
        run(engine, "XDEL big 2 19999")
        assert run(engine, "XRANGE big - + COUNT 2") == [[b"1-0", [b"f", b"1"]], [b"3-0", [b"f", b"3"]]]
        assert run(engine, "XREVRANGE big + - COUNT 2") == [[b"20000-0", [b"f", b"20000"]],
                                                            [b"19998-0", [b"f", b"19998"]]]
        assert run(engine, "XRANGE big 14999 15002") == [[f"{n}-0".encode(), [b"f", str(n).encode()]]
                                                          for n in range(14999, 15003)]
        assert run(engine, "XLEN big") == 19_998


def _call(sock: socket.socket, f: Any, line: str) -> bytes:
    sock.sendall(pack([a.encode() for a in line.split()]))
    return read_reply(f)


def test_delivery_survives_sigkill_under_fsync_always() -> None:
    """A delivery acknowledged to the client is pending after SIGKILL; an XACK acknowledged is gone."""
    d = Daemon(fsync="always")
    try:
        d.start()
        s = socket.socket(socket.AF_UNIX)
        s.connect(d.socket)
        f = s.makefile("rb")
        for n in range(1, 6):
            assert _call(s, f, f"XADD jobs {n} task {n}").startswith(b"$")
        assert _call(s, f, "XGROUP CREATE jobs workers 0") == b"+OK\r\n"
        got = _call(s, f, "XREADGROUP GROUP workers w1 COUNT 3 STREAMS jobs >")
        assert b"3-0" in got and b"4-0" not in got
        assert _call(s, f, "XACK jobs workers 1") == b":1\r\n"
        s.close()
        d.stop(signal.SIGKILL)
        d.start()
        s = socket.socket(socket.AF_UNIX)
        s.connect(d.socket)
        f = s.makefile("rb")
        pending = _call(s, f, "XPENDING jobs workers - + 10")
        assert pending.startswith(b"*2\r\n") and b"2-0" in pending and b"3-0" in pending and b"w1" in pending
        assert b"1-0" not in pending
        nxt = _call(s, f, "XREADGROUP GROUP workers w2 STREAMS jobs >")  # the undelivered ones, once
        assert b"4-0" in nxt and b"5-0" in nxt and b"3-0" not in nxt
        claimed = _call(s, f, "XAUTOCLAIM jobs workers w2 0 0 JUSTID")
        assert b"2-0" in claimed and b"3-0" in claimed
        assert _call(s, f, "XINFO GROUPS jobs").count(b"5-0") == 1  # last-delivered-id survived
        s.close()
    finally:
        d.cleanup()


async def test_each_command_is_one_wal_record(tmp_path: Path) -> None:
    """Multi-row stream commands (a delivery over two streams, a trim, a group's destruction, a pipelined
    run of XADDs) each take exactly one LSN: all or nothing after a crash."""
    from memd.commands import COMMANDS as table
    async with Engine(str(tmp_path / "data")) as engine:
        for line in ("XADD a 1 f 1", "XADD a 2 f 2", "XADD b 1 f 1", "XGROUP CREATE a g 0", "XGROUP CREATE b g 0"):
            run(engine, line)
        for line in ("XREADGROUP GROUP g c STREAMS a b > >", "XTRIM a MAXLEN 0", "XGROUP DESTROY b g",
                     "XAUTOCLAIM a g d 0 0", "XADD a MAXLEN 1 5 x y"):
            before = engine.last_lsn
            run(engine, line)
            assert engine.last_lsn == before + 1, line
        before = engine.last_lsn
        calls = [[b"a", b"*", b"f", b"%d" % n] for n in range(16)] + [[b"b", b"*", b"f", b"v"]]
        replies = table[b"xadd"].run(Context(engine=engine), calls)  # type: ignore[misc]
        assert len(replies) == 17 and engine.last_lsn == before + 1
        assert run(engine, "XLEN a") == 17 and run(engine, "XLEN b") == 2
