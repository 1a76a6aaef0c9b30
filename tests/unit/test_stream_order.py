"""Ordered stream reads across buffer layers (memd.engine.streams.stream_walk with streamorder's cache).

Random stream commands run through their handlers; after each one, every walk of the
key (whole, by part, both directions) must equal the merged element view sorted, which
is built without any cache. Flushes now and then put layers under the active one, so
both kinds of overlay are covered: one that resets the key (rows may vanish from it)
and one that does not (rows only ever added), with deletions and recreations between.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from memd.commands import COMMANDS, Context, CommandError, load_all
from memd.engine.engine import Engine
from memd.engine.streamcodec import P_CONSUMER, P_ENTRY, P_PEL, prefix_end

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

load_all()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _command(rng: random.Random, clock: list[int]) -> list[bytes]:
    roll = rng.random()
    old = str(rng.randint(max(1, clock[0] - 40), clock[0]))
    if roll < 0.45:
        clock[0] += rng.randint(0, 2)
        trim = ["MAXLEN", str(rng.randint(3, 30))] if rng.random() < 0.2 else []
        line = ["XADD", "s", *trim, f"{clock[0]}-*", "f", "v"]
    elif roll < 0.55:
        line = ["XDEL", "s", old, str(rng.randint(1, clock[0]))]
    elif roll < 0.7:
        line = ["XREADGROUP", "GROUP", rng.choice(["g", "h"]), rng.choice(["c1", "c2"]), "COUNT", "3",
                "STREAMS", "s", ">"]
    elif roll < 0.8:
        line = ["XACK", "s", rng.choice(["g", "h"]), old, str(rng.randint(1, clock[0]))]
    elif roll < 0.85:
        line = ["XGROUP", "CREATE", "s", rng.choice(["g", "h"]), "0", "MKSTREAM"]
    elif roll < 0.88:
        line = ["XGROUP", "DESTROY", "s", rng.choice(["g", "h"])]
    elif roll < 0.9:
        line = ["XTRIM", "s", "MINID", old]
    elif roll < 0.92:
        line = ["DEL", "s"]
    else:
        line = ["XAUTOCLAIM", "s", "g", "c3", "0", "0", "COUNT", "2"]
    return [a.encode() for a in line]


@pytest.mark.parametrize("seed", range(6))
async def test_walks_match_the_merged_view(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    clock = [1]
    async with Engine(str(tmp_path / "data")) as engine:
        ctx = Context(engine=engine)
        ks = engine.keyspace
        for step in range(600):
            args = _command(rng, clock)
            try:
                COMMANDS[args[0].lower()].handler(ctx, args[1:])
            except CommandError:
                pass
            if rng.random() < 0.03:
                await engine.flush()
            if ks.peek(b"s") is None:
                continue
            for lo, hi in ((b"\x00", b"\xff"), (P_ENTRY, prefix_end(P_ENTRY)), (P_PEL, P_CONSUMER)):
                expected = sorted(ks.elems(b"s", lo, hi).items())
                assert ks.stream_take(b"s", lo, hi) == expected, (seed, step, args)
                assert ks.stream_take(b"s", lo, hi, rev=True) == expected[::-1], (seed, step, args)
