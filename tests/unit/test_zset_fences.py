"""The store's fences over a big sorted set: counts, ranks and offsets through them equal a plain model.

Fences are every ZSET_FENCE-th member of a stored zset, valid for one flushed LSN (see
ZsetIndex._fences in memd/store/zindex.py). The fence size is made small here so that a few thousand members
cross many fences; scores repeat (ties are ordered by member), bounds land on fences and
between them, and a flush that changes the set must not leave the old fences in use.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

import memd.store.zindex as zindex
from memd.engine.engine import Engine

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def inside(s: float, lo: float, lo_open: bool, hi: float, hi_open: bool) -> bool:
    return (s > lo if lo_open else s >= lo) and (s < hi if hi_open else s <= hi)


async def test_counts_ranks_and_offsets_through_fences(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zindex, "ZSET_FENCE", 16)
    monkeypatch.setattr(zindex, "ZSET_FENCE_MIN", 64)
    rng = random.Random(3)
    model: dict[bytes, float] = {}
    async with Engine(str(tmp_path / "data")) as engine:
        ks = engine.keyspace
        for rnd in range(3):
            pairs = [(float(rng.randint(0, 300)), b"m%d" % rng.randrange(3000)) for _ in range(1500)]
            ks.zadd(b"z", pairs)
            model.update((m, s) for s, m in pairs)
            gone = [b"m%d" % rng.randrange(3000) for _ in range(100)]
            ks.zrem(b"z", gone)
            for m in gone:
                model.pop(m, None)
            await engine.flush()  # every round: a new LSN, the fences rebuilt from the new state
            assert engine.store._fences(0, b"z") is not None, "the set is big enough for fences"
            items = sorted(model.items(), key=lambda it: (it[1], it[0]))
            n = len(items)
            assert ks.zcard(b"z") == n
            for _ in range(150):
                m, _ = rng.choice(items)
                rank = ks.zrank(b"z", m)
                assert rank is not None and items[rank][0] == m
                assert ks.zrank(b"z", m, True) == n - 1 - rank
                lo, hi = sorted((rng.randint(-5, 305), rng.randint(-5, 305)))
                lo_open, hi_open = rng.random() < 0.5, rng.random() < 0.5
                want = [it for it in items if inside(it[1], lo, lo_open, hi, hi_open)]
                assert ks.zcount(b"z", lo, lo_open, hi, hi_open) == len(want)
                off = rng.randint(0, n)
                assert ks.zrange_by_score(b"z", lo, lo_open, hi, hi_open, False, off, 3) == want[off:off + 3]
                assert ks.zrange_by_score(b"z", lo, lo_open, math.inf, False, False, off, 2) == \
                    [it for it in items if inside(it[1], lo, lo_open, math.inf, False)][off:off + 2]
                a = rng.randint(0, n)
                assert ks.zrange_by_rank(b"z", a, a + 4) == items[a:a + 5]
            # a change still in the buffer is merged on top of the fenced count
            first = b"first%d" % rnd
            ks.zadd(b"z", [(-1.0 - rnd, first)])
            assert ks.zrank(b"z", first) == 0
            assert ks.zcount(b"z", -math.inf, False, 0, False) == 1 + sum(1 for _, s in items if s <= 0)
            model[first] = -1.0 - rnd
