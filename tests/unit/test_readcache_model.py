"""The read cache against a reference: the same commands on two engines, the cache on in one, off in the other.

Every reply must agree, byte for byte once encoded, through seeded random sequences of the
differential corpus's commands mixed with MULTI/EXEC, WATCH from a second connection, SELECT,
FLUSHDB, FLUSHALL, SWAPDB, expiry (a fake clock moved by hand), flushes to SQLite at random
points, compaction (purging what expired) and collections grown past what the cache keeps
whole. The cached side has a small bound, so rows are evicted and refilled all the time.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from memd.commands import Context, load_all
from memd.commands.connection import execute
from memd.config import CompactionConfig
from memd.engine.engine import Engine
from memd.errors import CommandError
from memd.maintenance.compaction import run_compaction
from memd.resp import ReplyEncoder
from memd.store.readcache import ELEMS_MAX
from tests.conftest import FakeClock
from tests.integration.test_differential_handlers import KEYS_, _random_command

pytestmark = pytest.mark.anyio
load_all()

SEEDS = 8
STEPS = 300


class Conn:
    """One client connection to one engine: replies encoded as a client would read them."""

    def __init__(self, engine: Engine) -> None:
        self.ctx = Context(engine=engine, protocol=2)
        self.encoder = ReplyEncoder(2)

    def __call__(self, argv: list[bytes]) -> bytes:
        reply = execute(self.ctx, argv)
        if isinstance(reply, CommandError):
            return f"-{reply}".encode()
        return self.encoder.encode(reply)


class Twins:
    """The two engines and two connections to each; every command runs on both sides."""

    def __init__(self, cached: Engine, plain: Engine, clock: FakeClock) -> None:
        self.engines = (cached, plain)
        self.conns = [(Conn(cached), Conn(plain)) for _ in range(2)]
        self.clock = clock
        self.count = 0

    def run(self, argv: list[bytes] | list[str], where: str, conn: int = 0) -> bytes:
        args = [a if isinstance(a, bytes) else a.encode("utf-8", "surrogateescape") for a in argv]
        a, b = self.conns[conn]
        got, expected = a(args), b(args)
        self.count += 1
        assert got == expected, f"[{where}] {args!r}\n    cache off: {expected!r}\n    cache on:  {got!r}"
        return got

    async def flush(self) -> None:
        for engine in self.engines:
            await engine.flush()

    async def compact(self) -> None:
        for engine in self.engines:
            await run_compaction(engine, CompactionConfig())

    def state(self, where: str) -> None:
        """Every key of every database the sequences use, read whole, on both sides (with SELECT)."""
        for db in (0, 1, 2):
            self.run(["SELECT", str(db)], where)
            for key in [*KEYS_, "big", "h", "l", "z", "s"]:
                for read in (["TYPE", key], ["GET", key], ["HGETALL", key], ["LRANGE", key, "0", "-1"],
                             ["SMEMBERS", key], ["ZRANGE", key, "0", "-1", "WITHSCORES"], ["PTTL", key]):
                    self.run(read, where)  # (set order agrees too: the same rows in the same layers)
        self.run(["SELECT", "0"], where)
        for k in range(4):
            self.run(["MEM.GET", "agent", f"m{k}"], where)


def _special(rng: random.Random, twins: Twins, where: str) -> list[str] | None:
    """A step beyond the corpus's commands, or None to take one of those."""
    x = rng.random()
    if x < 0.03:
        return ["SELECT", str(rng.choice([0, 0, 1, 2]))]
    if x < 0.04:
        return ["SWAPDB", str(rng.choice([0, 1, 2])), str(rng.choice([0, 1, 2]))]
    if x < 0.045:
        return ["FLUSHDB"]
    if x < 0.048:
        return ["FLUSHALL"]
    if x < 0.07:  # a collection past what the cache keeps whole, then written across flushes
        kind = rng.choice(["HSET", "RPUSH", "SADD", "ZADD"])
        n = rng.choice([ELEMS_MAX - 1, ELEMS_MAX + 5])
        if kind == "ZADD":
            return ["ZADD", "big", *[x for i in range(n) for x in (str(i), f"m{i}")]]
        if kind == "HSET":
            return ["HSET", "big", *[x for i in range(n) for x in (f"f{i}", str(i))]]
        return [kind, "big", *[f"e{i}" for i in range(n)]]
    if x < 0.08:
        return ["HGET", "big", f"f{rng.randrange(ELEMS_MAX + 5)}"]
    if x < 0.09:
        return ["LINDEX", "big", str(rng.randrange(-3, ELEMS_MAX + 5))]
    if x < 0.13:  # memories (MEM.*): rows cached by (namespace, key)
        k, v = f"m{rng.randrange(4)}", f'{{"n": {rng.randrange(100)}}}'
        mems: list[list[str]] = [
            ["MEM.PUT", "agent", k, v], ["MEM.PUT", "agent", k, v, "TTL", str(rng.choice([1, 600]))],
            ["MEM.GET", "agent", k], ["MEM.GET", "agent", k, "REFRESHTTL"], ["MEM.DEL", "agent", k]]
        return rng.choice(mems)
    if x < 0.25:  # small collections of one type each, written and read whole across flushes
        f, i = f"f{rng.randrange(6)}", str(rng.randrange(-3, 8))
        steps: list[list[str]] = [
            ["HSET", "h", f, i], ["HDEL", "h", f], ["HGETALL", "h"], ["HGET", "h", f], ["RPUSH", "l", f], ["LPOP", "l"],
            ["LTRIM", "l", i, "-1"], ["LRANGE", "l", "0", "-1"], ["LINDEX", "l", i], ["ZADD", "z", i, f],
            ["ZREM", "z", f], ["ZSCORE", "z", f], ["ZRANGE", "z", "0", "-1", "WITHSCORES"], ["SADD", "s", f],
            ["SREM", "s", f], ["SISMEMBER", "s", f], ["SMEMBERS", "s"]]
        return rng.choice(steps)
    return None


async def _transaction(rng: random.Random, twins: Twins, where: str) -> None:
    """WATCH a key on connection 0, maybe write it from connection 1 (or flush, or let it expire), MULTI/EXEC."""
    key = rng.choice(KEYS_)
    twins.run(["WATCH", key], where)
    y = rng.random()
    if y < 0.3:
        twins.run(["SET", key, "other"], where, conn=1)
    elif y < 0.5:
        await twins.flush()
    elif y < 0.6:
        twins.clock.advance(rng.choice([1, 1000, 100_000]))
    twins.run(["MULTI"], where)
    for _ in range(rng.randint(1, 4)):
        cmd = _random_command(rng)
        twins.run(cmd[1] if isinstance(cmd, tuple) else cmd, where)
    twins.run(["EXEC"], where)


@pytest.fixture(params=[6 << 10, 4 << 20], ids=["evicting", "roomy"])
async def twins(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Twins]:
    clock = FakeClock()
    async with Engine(str(tmp_path / "cached"), clock=clock, flush_max_age=3600.0) as cached, \
            Engine(str(tmp_path / "plain"), clock=clock, flush_max_age=3600.0) as plain:
        cached.store.configure_readcache(request.param)
        plain.store.configure_readcache(0)
        yield Twins(cached, plain, clock)


async def test_replies_agree_with_the_cache_off(twins: Twins) -> None:
    for seed in range(SEEDS):
        rng = random.Random(seed)
        twins.run(["FLUSHALL"], f"seed {seed}")
        for step in range(STEPS):
            where = f"seed {seed} step {step}"
            if rng.random() < 0.05:
                await _transaction(rng, twins, where)
                continue
            argv = _special(rng, twins, where)
            if argv is None:
                cmd: Any = _random_command(rng)
                argv = cmd[1] if isinstance(cmd, tuple) and cmd[0] == "SCAN" else cmd
                if isinstance(cmd, tuple):
                    argv = ["SCAN", "0", *cmd[1]]
            twins.run(argv, where)
            r = rng.random()
            if r < 0.15:
                await twins.flush()
            elif r < 0.165:
                twins.clock.advance(rng.choice([1, 500, 50_000, 500_000]))
            elif r < 0.17:
                await twins.flush()
                await twins.compact()
        await twins.flush()
        twins.state(f"seed {seed} end")
    cache = twins.engines[0].store.readcache
    assert cache.hits > 1000, cache.stats()  # (the cache was exercised)
    assert cache.evictions > 50 if cache.max_bytes < 1 << 20 else cache.evictions == 0, cache.stats()
    assert twins.engines[1].store.readcache.hits == 0
