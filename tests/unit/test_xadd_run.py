"""A pipelined run of plain ``XADD key * field value`` (its own path, memd.engine.streams.xadd_auto_into)
answers what the same XADDs one by one answer, at the edges of the id space too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from memd.commands import COMMANDS, Context, load_all
from memd.engine.engine import Engine
from memd.engine.streamcodec import parse_id

pytestmark = pytest.mark.anyio
load_all()
U64 = 2**64 - 1


def one_by_one(ctx: Context, calls: list[list[bytes]]) -> list[Any]:
    out: list[Any] = []
    for args in calls:
        try:
            out.append(COMMANDS[b"xadd"].handler(ctx, args))
        except Exception as exc:  # noqa: BLE001 - the error is the reply compared
            out.append(exc)
    return out


def shape(replies: list[Any]) -> list[Any]:
    return [str(r) if isinstance(r, Exception) else r for r in replies]


@pytest.mark.parametrize("start", [None, b"%d-%d" % (U64, U64 - 1), b"%d-%d" % (U64 - 1, U64), b"5-5",
                                   b"99999999999999-0"])
async def test_run_matches_single_calls(tmp_path: Path, start: bytes | None) -> None:
    async with Engine(str(tmp_path / "a")) as a, Engine(str(tmp_path / "b")) as b:
        ctx_a, ctx_b = Context(engine=a), Context(engine=b)
        if start is not None:
            for ctx in (ctx_a, ctx_b):
                COMMANDS[b"xadd"].handler(ctx, [b"s", start, b"f", b"v"])
        calls = [[b"s", b"*", b"f", b"%d" % i] for i in range(3)] + [[b"t", b"*", b"g", b"w"]]
        run = COMMANDS[b"xadd"].run
        assert run is not None
        batched, single = run(ctx_a, calls), one_by_one(ctx_b, calls)
        if start is None or start == b"5-5":  # ids from the clock: equal shapes, increasing ids
            assert all(isinstance(r, bytes) for r in batched)
            ids = [parse_id(r) for r in batched[:3]]
            assert ids == sorted(ids) and len(set(ids)) == 3
        else:
            assert shape(batched[:3]) == shape(single[:3])  # (the new stream t: an id from the clock)
        assert isinstance(batched[3], bytes) and isinstance(single[3], bytes)
        assert COMMANDS[b"xlen"].handler(ctx_a, [b"s"]) == COMMANDS[b"xlen"].handler(ctx_b, [b"s"])
        last = COMMANDS[b"xrevrange"].handler(ctx_a, [b"s", b"+", b"-", b"COUNT", b"1"])
        assert last == COMMANDS[b"xrevrange"].handler(ctx_b, [b"s", b"+", b"-", b"COUNT", b"1"]) or start is None \
            or start == b"5-5"
