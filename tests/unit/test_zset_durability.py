"""The sorted-set writes survive a restart: replayed from the WAL after a crash, or read from SQLite.

Every new write command (pops, ZMPOP, range removals, the STORE forms) runs through its
handler; the keyspace it leaves is read back after a crash-like restart (no final flush:
the WAL is replayed into a fresh buffer) and after a clean one (everything in SQLite),
with a flush in the middle of the sequence so both layers are involved.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from memd.commands import COMMANDS, Context, load_all
from memd.engine.engine import Engine

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

load_all()

SETUP = [
    "ZADD a 1 x 2 y 3 z 4 w 5 v 6 u", "ZADD b 10 y 20 z 30 q", "SADD s x q r", "SET str v",
    "ZADD lex 0 a 0 b 0 c 0 d 0 e",
]
WRITES = [
    "ZPOPMIN a", "ZPOPMAX a 2", "ZMPOP 2 nokey b MIN COUNT 1", "ZREMRANGEBYSCORE a (2 3",
    "ZREMRANGEBYRANK a 0 0", "ZREMRANGEBYLEX lex [b (d", "ZUNIONSTORE u 3 a b s WEIGHTS 1 2 3",
    "ZINTERSTORE i 2 b s", "ZDIFFSTORE d 2 u b", "ZRANGESTORE str u 0 1", "ZRANGESTORE r u (0 +inf BYSCORE REV",
    "ZINTERSTORE gone 2 a nokey", "ZPOPMIN i 10",
]
KEYS = [b"a", b"b", b"s", b"str", b"lex", b"u", b"i", b"d", b"r", b"gone"]


def run(engine: Engine, line: str) -> Any:
    args = [a.encode() for a in line.split()]
    return COMMANDS[args[0].lower()].handler(Context(engine=engine), args[1:])


def state(engine: Engine) -> dict[bytes, Any]:
    ks = engine.keyspace
    out: dict[bytes, Any] = {}
    for k in KEYS:
        t = ks.type_name(k)
        out[k] = (t, ks.zitems(k) if t == "zset" else None, ks.pttl(k))
    return out


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.parametrize("crash", [True, False])
async def test_new_writes_survive_restart(tmp_path: Path, crash: bool) -> None:
    data = str(tmp_path / "data")
    async with Engine(data) as engine:
        for line in SETUP:
            run(engine, line)
        for j, line in enumerate(WRITES):
            run(engine, line)
            if j == len(WRITES) // 2:
                await engine.flush()  # the first half in SQLite, the rest in the buffer
        before = state(engine)
        if crash:
            async def no_final_flush() -> None:
                pass
            engine._flush_all = no_final_flush  # type: ignore[method-assign]
    assert before[b"str"][0] == "zset" and before[b"gone"][0] == "none" and before[b"u"][1]
    async with Engine(data) as engine:
        assert state(engine) == before
        assert engine.keyspace.zrank(b"u", before[b"u"][1][-1][0]) == len(before[b"u"][1]) - 1
