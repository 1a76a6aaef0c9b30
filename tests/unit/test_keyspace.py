"""Keyspace: Redis semantics of every method, in every layer the data can live in.

Each ``check`` runs (see :func:`phases`) on the active memtable, on a frozen
memtable, after a crash-like restart (WAL replay), after a flush (SQLite) and
after a clean restart. Expiry uses a fake clock: nothing sleeps.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from memd.engine.engine import Engine
from memd.engine.keyspace import Keyspace
from memd.engine.records import OP_UPDATE
from memd.errors import CommandError, WrongTypeError
from memd.int64 import INT64_MAX, INT64_MIN

pytestmark = pytest.mark.anyio

Check = Callable[[Keyspace], None]


class DB:
    """One data directory; the Engine on it can be restarted cleanly or crash-like."""

    def __init__(self, path: str, clock: Any) -> None:
        self.path = path
        self.clock = clock
        self.engine: Engine

    async def open(self) -> None:
        self.engine = Engine(self.path, clock=self.clock, flush_max_age=3600.0)
        await self.engine.__aenter__()

    @property
    def ks(self) -> Keyspace:
        return self.engine.keyspace

    def now(self) -> int:
        return self.ks.now_ms()

    async def restart(self, *, crash: bool = False) -> None:
        if crash:
            # a kill after the WAL reached the OS: no final flush, so the reopen replays the WAL
            async def no_final_flush() -> None:
                pass
            self.engine._flush_all = no_final_flush  # type: ignore[method-assign]
        await self.engine.close()
        await self.open()


@pytest.fixture
async def db(tmp_path: Any, fake_clock: Any) -> AsyncIterator[DB]:
    d = DB(str(tmp_path / "data"), fake_clock)
    await d.open()
    yield d
    await d.engine.close()


async def phases(db: DB, check: Check) -> None:
    """Run ``check`` on every layer: memtable, frozen, replayed WAL, SQLite, reopened SQLite."""
    check(db.ks)
    if db.engine.frozen is None:
        db.engine._freeze()  # as a flush does before writing: reads merge the frozen table
    check(db.ks)
    frozen = db.engine.frozen
    assert frozen is not None
    if frozen.records:
        # the window of every flush: SQLite committed, the frozen table still layered on top
        await db.engine.store.flush(frozen)
        check(db.ks)
    await db.restart(crash=True)
    assert db.engine.recovery_report.records > 0 or db.engine.store.flushed_lsn == db.engine.last_lsn
    check(db.ks)
    await db.engine.flush()
    assert not db.engine.active.records and db.engine.frozen is None
    check(db.ks)
    await db.restart()
    check(db.ks)


# ---- strings -----------------------------------------------------------------------------


async def test_set_get_and_overwrite_of_any_type(db: DB) -> None:
    ks = db.ks
    assert ks.get(b"s") is None
    assert ks.set(b"s", b"v1") == (True, None)
    assert ks.set(b"s", b"v2") == (True, None)
    ks.hset(b"h", [(b"f", b"x")])
    await db.engine.flush()
    assert ks.set(b"h", b"now a string") == (True, None)  # SET without GET replaces any type
    ks.set(b"empty", b"")

    def check(ks: Keyspace) -> None:
        assert ks.get(b"s") == b"v2"
        assert ks.get(b"h") == b"now a string" and ks.type_name(b"h") == "string"
        assert ks.get(b"empty") == b"" and ks.exists([b"empty"]) == 1
        assert ks.get(b"missing") is None

    await phases(db, check)
    db.ks.delete([b"h"])
    db.ks.hset(b"h", [(b"g", b"y")])  # recreated as a hash: the field of the first life stays gone
    assert db.ks.hgetall(b"h") == {b"g": b"y"}
    await db.engine.flush()
    assert db.ks.hgetall(b"h") == {b"g": b"y"}


async def test_set_nx_xx_get(db: DB) -> None:
    ks = db.ks
    assert ks.set(b"a", b"1", xx=True) == (False, None)
    assert ks.set(b"a", b"1", nx=True) == (True, None)
    assert ks.set(b"a", b"2", nx=True) == (False, None)
    assert ks.set(b"a", b"3", nx=True, get=True) == (False, b"1")
    assert ks.set(b"a", b"4", xx=True, get=True) == (True, b"1")
    assert ks.set(b"b", b"x", get=True) == (True, None)
    ks.push(b"l", [b"x"], left=False)
    with pytest.raises(WrongTypeError):
        ks.set(b"l", b"v", get=True)
    assert ks.set(b"l", b"v", nx=True) == (False, None)

    def check(ks: Keyspace) -> None:
        assert ks.get(b"a") == b"4" and ks.get(b"b") == b"x"
        assert ks.type_name(b"l") == "list" and ks.lrange(b"l", 0, -1) == [b"x"]

    await phases(db, check)


async def test_set_expiry_keepttl_and_expiry_in_the_past(db: DB, fake_clock: Any) -> None:
    ks = db.ks
    now = db.now()
    ks.set(b"e", b"v", expires_at=now + 10_000)
    ks.set(b"keep", b"v", expires_at=now + 20_000)
    ks.set(b"keep", b"v2", keepttl=True)
    ks.set(b"clear", b"v", expires_at=now + 20_000)
    ks.set(b"clear", b"v2")
    ks.set(b"keepnew", b"v", keepttl=True)  # KEEPTTL on a new key: no TTL
    assert ks.set(b"past", b"v", expires_at=now - 1) == (True, None)
    ks.set(b"now", b"v", expires_at=now)

    def check(ks: Keyspace) -> None:
        assert ks.pttl(b"e") == 10_000 and ks.get(b"e") == b"v"
        assert ks.pttl(b"keep") == 20_000 and ks.get(b"keep") == b"v2"
        assert ks.pttl(b"clear") == -1 and ks.pttl(b"keepnew") == -1
        for k in (b"past", b"now"):
            assert ks.get(k) is None and ks.pttl(k) == -2 and ks.exists([k]) == 0 and ks.type_name(k) == "none"
        assert ks.dbsize() == 4

    await phases(db, check)
    fake_clock.advance(10)

    def expired(ks: Keyspace) -> None:
        assert ks.get(b"e") is None and ks.pttl(b"e") == -2 and ks.dbsize() == 3
        assert ks.pttl(b"keep") == 10_000

    await phases(db, expired)


@pytest.mark.parametrize("raw", [b"abc", b"", b" 1", b"1 ", b"+1", b"01", b"-0", b"1_0", b"1.5", b"0x10",
                                 b"9223372036854775808", b"-9223372036854775809", b"\xd9\xa3"])
async def test_incrby_rejects_what_redis_rejects(db: DB, raw: bytes) -> None:
    db.ks.set(b"n", raw)
    with pytest.raises(CommandError, match="not an integer"):
        db.ks.incrby(b"n", 1)
    await db.engine.flush()
    with pytest.raises(CommandError, match="not an integer"):
        db.ks.incrby(b"n", 1)
    assert db.ks.get(b"n") == raw


async def test_incrby(db: DB) -> None:
    ks = db.ks
    assert ks.incrby(b"n", 5) == 5
    assert ks.incrby(b"n", -7) == -2
    ks.set(b"t", b"10", expires_at=db.now() + 5000)
    await db.engine.flush()
    assert ks.incrby(b"t", 1) == 11  # INCR keeps the TTL
    ks.set(b"max", str(INT64_MAX).encode())
    ks.set(b"min", str(INT64_MIN).encode())
    with pytest.raises(CommandError, match="overflow"):
        ks.incrby(b"max", 1)
    with pytest.raises(CommandError, match="overflow"):
        ks.incrby(b"min", -1)
    assert ks.incrby(b"fresh", INT64_MAX) == INT64_MAX
    with pytest.raises(CommandError, match="overflow"):
        ks.incrby(b"fresh", 1)
    assert ks.incrby(b"min", INT64_MAX) == -1
    ks.hset(b"h", [(b"f", b"1")])
    with pytest.raises(WrongTypeError):
        ks.incrby(b"h", 1)

    def check(ks: Keyspace) -> None:
        assert ks.get(b"n") == b"-2"
        assert ks.get(b"t") == b"11" and ks.pttl(b"t") == 5000
        assert ks.get(b"max") == str(INT64_MAX).encode()
        assert ks.get(b"min") == b"-1"
        assert ks.get(b"fresh") == str(INT64_MAX).encode()
        assert ks.hgetall(b"h") == {b"f": b"1"}

    await phases(db, check)


async def test_getdel_and_mset(db: DB) -> None:
    ks = db.ks
    ks.set(b"a", b"1", expires_at=db.now() + 1000)
    ks.set(b"b", b"2")
    ks.sadd(b"s", [b"m"])
    await db.engine.flush()
    assert ks.getdel(b"b") == b"2"
    assert ks.getdel(b"b") is None
    with pytest.raises(WrongTypeError):
        ks.getdel(b"s")
    ks.mset([(b"a", b"10"), (b"c", b"30"), (b"s", b"now string")])  # MSET clears TTLs, replaces types

    def check(ks: Keyspace) -> None:
        assert [ks.get(k) for k in (b"a", b"b", b"c", b"s")] == [b"10", None, b"30", b"now string"]
        assert ks.pttl(b"a") == -1 and ks.exists([b"b"]) == 0 and ks.dbsize() == 3

    await phases(db, check)


# ---- keys ---------------------------------------------------------------------------------


def make_one_of_each(ks: Keyspace) -> None:
    ks.set(b"string", b"v")
    ks.push(b"list", [b"a", b"b"], left=False)
    ks.hset(b"hash", [(b"f", b"v"), (b"g", b"w")])
    ks.sadd(b"set", [b"m", b"n"])
    ks.zadd(b"zset", [(1.0, b"m"), (2.0, b"n")])


KINDS = {b"string": "string", b"list": "list", b"hash": "hash", b"set": "set", b"zset": "zset"}


async def test_del_exists_type(db: DB) -> None:
    ks = db.ks
    make_one_of_each(ks)
    await db.engine.flush()
    ks.set(b"mem", b"x")

    def check(ks: Keyspace) -> None:
        for key, name in KINDS.items():
            assert ks.type_name(key) == name
        assert ks.type_name(b"nope") == "none"
        assert ks.exists([b"string", b"string", b"nope", b"hash"]) == 3  # duplicates count, as in Redis
        assert ks.dbsize() == 6

    await phases(db, check)
    ks = db.ks
    lsn = db.engine.last_lsn
    assert ks.delete([b"string", b"string", b"list", b"nope"]) == 2
    assert db.engine.last_lsn == lsn + 1, "a multi-key DEL is one WAL record"
    assert ks.delete([b"nope"]) == 0 and db.engine.last_lsn == lsn + 1, "nothing deleted, nothing logged"
    ks.delete([b"mem"])
    assert ks.delete([b"hash", b"set", b"zset"]) == 3

    def gone(ks: Keyspace) -> None:
        assert ks.dbsize() == 0 and ks.exists(list(KINDS)) == 0
        assert all(ks.type_name(k) == "none" for k in KINDS)
        assert ks.scan(None, 100) == ([], None)
        assert ks.hgetall(b"hash") == {} and ks.lrange(b"list", 0, -1) == [] and ks.smembers(b"set") == set()

    await phases(db, gone)


# (has ttl, flags, new ttl relative to now) -> expected result
EXPIRE_CASES = [
    (False, {}, 5000, True),
    (False, {"nx": True}, 5000, True),
    (True, {"nx": True}, 5000, False),
    (False, {"xx": True}, 5000, False),
    (True, {"xx": True}, 5000, True),
    (True, {"gt": True}, 20_000, True),
    (True, {"gt": True}, 10_000, False),   # equal is not greater
    (True, {"gt": True}, 5000, False),
    (False, {"gt": True}, 5000, False),    # no TTL counts as infinite
    (True, {"lt": True}, 5000, True),
    (True, {"lt": True}, 10_000, False),
    (True, {"lt": True}, 20_000, False),
    (False, {"lt": True}, 5000, True),
    (True, {"xx": True, "gt": True}, 20_000, True),
    (False, {"xx": True, "lt": True}, 5000, False),
]


@pytest.mark.parametrize("kind", [b"string", b"hash", b"list"])
@pytest.mark.parametrize(("has_ttl", "flags", "ttl", "ok"), EXPIRE_CASES)
async def test_expire_at_flags(db: DB, kind: bytes, has_ttl: bool, flags: dict[str, bool], ttl: int,
                               ok: bool) -> None:
    ks = db.ks
    make_one_of_each(ks)
    now = db.now()
    if has_ttl:
        assert ks.expire_at(kind, now + 10_000)
    await db.engine.flush()  # the expiry change is a delta over SQLite
    assert ks.expire_at(kind, now + ttl, **flags) is ok
    expected = (ttl if ok else 10_000) if has_ttl or ok else -1

    def check(ks: Keyspace) -> None:
        assert ks.pttl(kind) == expected
        assert ks.type_name(kind) == KINDS[kind]
        assert ks.dbsize() == 5

    await phases(db, check)


async def test_expire_in_the_past_deletes_and_persist(db: DB, fake_clock: Any) -> None:
    ks = db.ks
    make_one_of_each(ks)
    await db.engine.flush()
    now = db.now()
    assert ks.expire_at(b"string", now) is True      # at "now" is already expired: deleted
    assert ks.expire_at(b"hash", now - 1000) is True
    assert ks.expire_at(b"nope", now + 1000) is False
    assert ks.expire_at(b"set", None) is False        # PERSIST without a TTL
    assert ks.expire_at(b"list", now + 1000)
    assert ks.expire_at(b"list", None) is True        # PERSIST
    assert ks.expire_at(b"zset", now + 2000)

    def check(ks: Keyspace) -> None:
        assert ks.pttl(b"string") == -2 and ks.pttl(b"hash") == -2 and ks.pttl(b"nope") == -2
        assert ks.pttl(b"list") == -1 and ks.lrange(b"list", 0, -1) == [b"a", b"b"]
        assert ks.pttl(b"zset") == 2000 and ks.dbsize() == 3
        assert ks.hget(b"hash", b"f") is None and ks.hlen(b"hash") == 0

    await phases(db, check)
    fake_clock.advance(2)

    def check_expired(ks: Keyspace) -> None:
        assert ks.pttl(b"zset") == -2 and ks.zitems(b"zset") == [] and ks.dbsize() == 2
        assert ks.scan(None, 10) == ([b"list", b"set"], None)

    await phases(db, check_expired)


async def test_expired_collection_is_recreated_empty(db: DB, fake_clock: Any) -> None:
    ks = db.ks
    make_one_of_each(ks)
    for key in KINDS:
        ks.expire_at(key, db.now() + 1000)
    await db.engine.flush()
    fake_clock.advance(1)
    ks.set(b"string", b"new")
    ks.push(b"list", [b"z"], left=False)
    ks.hset(b"hash", [(b"g", b"new")])
    ks.sadd(b"set", [b"n"])
    ks.zadd(b"zset", [(5.0, b"o")])

    def check(ks: Keyspace) -> None:
        assert ks.get(b"string") == b"new"
        assert ks.lrange(b"list", 0, -1) == [b"z"] and ks.llen(b"list") == 1 and ks.lindex(b"list", 0) == b"z"
        assert ks.hgetall(b"hash") == {b"g": b"new"} and ks.hlen(b"hash") == 1 and ks.hget(b"hash", b"f") is None
        assert ks.smembers(b"set") == {b"n"} and not ks.sismember(b"set", b"m")
        assert ks.zitems(b"zset") == [(b"o", 5.0)] and ks.zscore(b"zset", b"m") is None
        assert all(ks.pttl(k) == -1 for k in KINDS)

    await phases(db, check)


async def test_flushall(db: DB) -> None:
    ks = db.ks
    make_one_of_each(ks)
    await db.engine.flush()
    ks.set(b"mem", b"1")
    ks.hset(b"hash", [(b"x", b"y")])
    ks.flushall()
    assert ks.dbsize() == 0
    ks.push(b"list", [b"new"], left=True)
    ks.set(b"after", b"1")

    def check(ks: Keyspace) -> None:
        assert ks.dbsize() == 2
        assert ks.scan(None, 1)[0] == [b"after"]
        assert ks.lrange(b"list", 0, -1) == [b"new"] and ks.llen(b"list") == 1
        assert ks.hgetall(b"hash") == {} and ks.get(b"string") is None and ks.type_name(b"zset") == "none"
        assert sorted(_scan_all(ks, 1)) == [b"after", b"list"]

    await phases(db, check)


async def test_flushall_in_frozen_layer_under_new_writes(db: DB) -> None:
    ks = db.ks
    make_one_of_each(ks)
    await db.engine.flush()
    ks.flushall()
    ks.sadd(b"set", [b"x"])
    db.engine._freeze()
    ks.sadd(b"set", [b"y"])
    ks.set(b"string", b"s")

    def check(ks: Keyspace) -> None:
        assert ks.smembers(b"set") == {b"x", b"y"} and ks.scard(b"set") == 2
        assert ks.dbsize() == 2 and sorted(_scan_all(ks, 1)) == [b"set", b"string"]
        assert ks.hgetall(b"hash") == {}

    await phases(db, check)


async def test_dbsize_merges_layers(db: DB, fake_clock: Any) -> None:
    ks = db.ks
    for i in range(10):
        ks.set(b"k%d" % i, b"v", expires_at=db.now() + 1000 if i < 3 else None)
    await db.engine.flush()
    ks.delete([b"k3", b"k4"])
    ks.set(b"k5", b"again")           # in both SQLite and memtable: counted once
    ks.set(b"new", b"v")
    ks.set(b"k0", b"persisted")       # overwrite of a volatile key: no TTL now
    ks.set(b"dead", b"v", expires_at=db.now() - 1)

    def check(ks: Keyspace) -> None:
        assert ks.dbsize() == 9

    await phases(db, check)
    fake_clock.advance(1)

    def check_later(ks: Keyspace) -> None:
        assert ks.dbsize() == 7  # k1, k2 expired

    await phases(db, check_later)


async def test_dbsize_is_one_snapshot_while_a_flush_commits(db: DB, monkeypatch: pytest.MonkeyPatch) -> None:
    ks = db.ks
    ks.set(b"old", b"v")
    await db.engine.flush()
    ks.set(b"k", b"v")
    db.engine._freeze()
    store = db.engine.store
    real_get_key = store.get_key

    def get_key_then_commit(dbn: int, key: bytes) -> Any:
        row = real_get_key(dbn, key)
        # the flush's COMMIT lands (in the writer's thread) between DBSIZE's statements
        conn = sqlite3.connect(store.path, isolation_level=None)
        conn.execute("INSERT OR IGNORE INTO keys (db, key, type, value) VALUES (0, ?, 1, ?)", (b"k", b"v"))
        conn.close()
        return row

    monkeypatch.setattr(store, "get_key", get_key_then_commit)
    assert ks.dbsize() == 2


# ---- scan -----------------------------------------------------------------------------------


def _scan_all(ks: Keyspace, count: int) -> list[bytes]:
    out: list[bytes] = []
    after: bytes | None = None
    while True:
        keys, after = ks.scan(after, count)
        out.extend(keys)
        if after is None:
            return out


@pytest.mark.parametrize("count", [1, 2, 3, 7, 100])
async def test_scan_returns_each_key_once_across_flushes_and_inserts(db: DB, fake_clock: Any, count: int) -> None:
    ks = db.ks
    stable = {b"k%03d" % i for i in range(0, 60, 2)}
    for k in sorted(stable):
        ks.set(k, b"v")
    await db.engine.flush()
    doomed = [b"k%03d" % i for i in range(1, 60, 6)]
    for k in doomed:                 # keys that exist in memory only, deleted during the scan
        ks.set(k, b"v")
    for i in range(30, 60, 4):       # deltas over SQLite
        ks.expire_at(b"k%03d" % i, db.now() + 10**9)
    ks.set(b"gone", b"v", expires_at=db.now() + 500)
    seen: list[bytes] = []
    after: bytes | None = None
    calls = 0
    while True:
        keys, after = ks.scan(after, count)
        calls += 1
        assert len(keys) <= max(count, 1) * 3, "each call is bounded"
        seen.extend(keys)
        if after is None:
            break
        # the world changes between calls
        if calls % 3 == 0:
            await db.engine.flush()
        if calls % 4 == 1 and db.engine.frozen is None:
            db.engine._freeze()
        ks.set(b"k%03d-new%d" % (calls % 60, calls), b"v")
        ks.set(b"a-new%d" % calls, b"v")   # behind the cursor: may or may not be returned
        if doomed:
            ks.delete([doomed.pop()])
        if calls == 2:
            fake_clock.advance(1)
    assert len(seen) == len(set(seen)), "no key twice"
    assert stable <= set(seen), "every key present for the whole scan is returned"
    assert calls <= (len(stable) + 60) // max(1, count) + 40


async def test_scan_sees_every_layer_with_equal_sizes(db: DB) -> None:
    ks = db.ks
    ks.set(b"a", b"1")
    ks.set(b"b", b"1")
    db.engine._freeze()
    ks.set(b"c", b"1")
    ks.set(b"d", b"1")  # the active table now has as many keys as the frozen one
    assert ks.scan(None, 10) == ([b"a", b"b", b"c", b"d"], None)
    assert _scan_all(ks, 1) == [b"a", b"b", b"c", b"d"]
    await db.engine.flush()
    ks.set(b"e", b"1")
    assert ks.scan(None, 10) == ([b"a", b"b", b"c", b"d", b"e"], None)
    ks.flushall()
    ks.set(b"x", b"1")  # same number of memtable keys as before the FLUSHALL, other keys
    assert ks.scan(None, 10) == ([b"x"], None)
    ks.set(b"y", b"1")
    assert _scan_all(ks, 1) == [b"x", b"y"]


async def test_scan_many_keys_in_memory_is_bounded(db: DB) -> None:
    ks = db.ks
    for i in range(200):
        ks.set(b"m%03d" % i, b"v")
    keys, after = ks.scan(None, 10)
    assert len(keys) == 10 and after == b"m009"
    assert _scan_all(ks, 10) == sorted(b"m%03d" % i for i in range(200))


# ---- hashes ---------------------------------------------------------------------------------


async def test_hashes(db: DB) -> None:
    ks = db.ks
    assert ks.hset(b"h", [(b"a", b"1"), (b"b", b"2"), (b"a", b"3")]) == 2
    assert ks.hset(b"h", [(b"a", b"4"), (b"c", b"")]) == 1
    await db.engine.flush()
    assert ks.hset(b"h", [(b"b", b"20"), (b"d", b"5")]) == 1  # delta over SQLite
    assert ks.hdel(b"h", [b"c", b"c", b"nope"]) == 1
    assert ks.hincrby(b"h", b"n", 5) == 5
    assert ks.hincrby(b"h", b"n", -10) == -5
    ks.hset(b"h", [(b"x", b"1.5")])
    with pytest.raises(CommandError, match="not an integer"):
        ks.hincrby(b"h", b"x", 1)
    ks.hset(b"h", [(b"big", str(INT64_MAX).encode())])
    with pytest.raises(CommandError, match="overflow"):
        ks.hincrby(b"h", b"big", 1)
    assert ks.hdel(b"h", [b"x", b"big"]) == 2
    assert ks.hdel(b"nope", [b"a"]) == 0
    expected = {b"a": b"4", b"b": b"20", b"d": b"5", b"n": b"-5"}

    def check(ks: Keyspace) -> None:
        assert ks.hgetall(b"h") == expected and ks.hlen(b"h") == 4
        assert ks.hget(b"h", b"a") == b"4" and ks.hget(b"h", b"c") is None
        assert ks.hmget(b"h", [b"a", b"c", b"d"]) == [b"4", None, b"5"]
        assert ks.hmget(b"nope", [b"a"]) == [None] and ks.hgetall(b"nope") == {} and ks.hlen(b"nope") == 0

    await phases(db, check)


async def test_hincrby_rejects_noncanonical(db: DB) -> None:
    ks = db.ks
    for raw in (b"+1", b" 1", b"01", b"", b"abc"):
        ks.hset(b"h", [(b"f", raw)])
        with pytest.raises(CommandError, match="not an integer"):
            ks.hincrby(b"h", b"f", 1)
    ks.hset(b"h", [(b"f", b"-1")])
    assert ks.hincrby(b"h", b"f", 1) == 0


# ---- sets -------------------------------------------------------------------------------------


async def test_sets(db: DB) -> None:
    ks = db.ks
    assert ks.sadd(b"s", [b"a", b"b", b"a"]) == 2
    await db.engine.flush()
    assert ks.sadd(b"s", [b"b", b"c", b""]) == 2
    assert ks.srem(b"s", [b"a", b"a", b"nope"]) == 1
    assert ks.srem(b"nope", [b"a"]) == 0

    def check(ks: Keyspace) -> None:
        assert ks.smembers(b"s") == {b"b", b"c", b""} and ks.scard(b"s") == 3
        assert ks.sismember(b"s", b"") and ks.sismember(b"s", b"b") and not ks.sismember(b"s", b"a")
        assert ks.smembers(b"nope") == set() and ks.scard(b"nope") == 0 and not ks.sismember(b"nope", b"a")

    await phases(db, check)


# ---- lists ------------------------------------------------------------------------------------


async def test_lists_push_order_and_indexes(db: DB) -> None:
    ks = db.ks
    assert ks.push(b"l", [b"c", b"d"], left=False) == 2
    assert ks.push(b"l", [b"b", b"a"], left=True) == 4      # LPUSH b a -> a b ...
    await db.engine.flush()
    assert ks.push(b"l", [b"e"], left=False) == 5
    assert ks.push(b"l", [b"z"], left=True) == 6
    assert ks.push(b"nope", [b"x"], left=True, only_existing=True) == 0
    assert ks.push(b"l", [b"f"], left=False, only_existing=True) == 7
    full = [b"z", b"a", b"b", b"c", b"d", b"e", b"f"]

    def check(ks: Keyspace) -> None:
        assert ks.lrange(b"l", 0, -1) == full and ks.llen(b"l") == 7
        assert ks.lrange(b"l", -2, -1) == full[-2:]
        assert ks.lrange(b"l", -100, 1) == full[:2]
        assert ks.lrange(b"l", 2, 100) == full[2:]
        assert ks.lrange(b"l", 3, 2) == [] and ks.lrange(b"l", 7, 10) == [] and ks.lrange(b"l", -1, -2) == []
        assert ks.lrange(b"l", 0, -8) == [] and ks.lrange(b"l", 6, 6) == [b"f"]
        assert [ks.lindex(b"l", i) for i in (0, 3, 6, 7, -1, -7, -8)] == [b"z", b"c", b"f", None, b"f", b"z", None]
        assert ks.type_name(b"nope") == "none" and ks.lrange(b"nope", 0, -1) == [] and ks.llen(b"nope") == 0
        assert ks.lindex(b"nope", 0) is None

    await phases(db, check)


async def test_pop_with_count(db: DB) -> None:
    ks = db.ks
    ks.push(b"l", [b"a", b"b", b"c", b"d", b"e"], left=False)
    await db.engine.flush()
    assert ks.pop(b"l", left=True) == [b"a"]
    assert ks.pop(b"l", left=False, count=2) == [b"e", b"d"]
    assert ks.pop(b"l", left=True, count=0) == []
    assert ks.pop(b"nope", left=True) is None
    assert ks.pop(b"nope", left=True, count=3) is None
    ks.push(b"l", [b"x"], left=True)

    def check(ks: Keyspace) -> None:
        assert ks.lrange(b"l", 0, -1) == [b"x", b"b", b"c"] and ks.llen(b"l") == 3

    await phases(db, check)
    assert db.ks.pop(b"l", left=False, count=10) == [b"c", b"b", b"x"]

    def check_empty(ks: Keyspace) -> None:
        assert ks.type_name(b"l") == "none" and ks.exists([b"l"]) == 0 and ks.pop(b"l", left=True) is None

    await phases(db, check_empty)


@pytest.mark.parametrize(("start", "stop", "expected"), [
    (0, -1, "abcdef"), (1, 3, "bcd"), (-3, -1, "def"), (-100, 1, "ab"), (2, 100, "cdef"),
    (4, 2, ""), (6, 10, ""), (0, -7, ""), (-1, -1, "f"), (0, 0, "a"),
])
async def test_ltrim(db: DB, start: int, stop: int, expected: str) -> None:
    ks = db.ks
    ks.push(b"l", [b"c", b"d"], left=False)
    ks.push(b"l", [b"b", b"a"], left=True)
    await db.engine.flush()
    ks.push(b"l", [b"e", b"f"], left=False)
    ks.ltrim(b"l", start, stop)
    ks.ltrim(b"nope", 0, 1)
    want = [c.encode() for c in expected]

    def check(ks: Keyspace) -> None:
        assert ks.lrange(b"l", 0, -1) == want and ks.llen(b"l") == len(want)
        assert ks.exists([b"l"]) == (1 if want else 0) and ks.exists([b"nope"]) == 0

    await phases(db, check)
    if want:  # trimmed-away positions must not come back when the list grows again
        ks = db.ks
        ks.push(b"l", [b"L"], left=True)
        ks.push(b"l", [b"R"], left=False)
        assert ks.lrange(b"l", 0, -1) == [b"L", *want, b"R"]
        await db.engine.flush()
        assert db.ks.lrange(b"l", 0, -1) == [b"L", *want, b"R"]


async def test_ltrim_on_a_new_list_leaves_no_garbage_in_sqlite(db: DB) -> None:
    ks = db.ks
    for i in range(50):  # the chat-history pattern: LPUSH + LTRIM 0 9
        ks.push(b"chat", [b"m%d" % i], left=True)
        ks.ltrim(b"chat", 0, 9)
    await db.engine.flush()
    assert ks.lrange(b"chat", 0, -1) == [b"m%d" % i for i in range(49, 39, -1)]
    rows = await db.engine.store.execute("SELECT count(*) FROM elems WHERE key = ?", (b"chat",))
    assert rows[0][0] == 10


async def test_push_and_pop_on_a_long_list_are_o1(db: DB, monkeypatch: pytest.MonkeyPatch) -> None:
    ks = db.ks
    n = 100_000
    ks.push(b"big", [b"%d" % i for i in range(n)], left=False)
    await db.engine.flush()
    captured: list[list[Any]] = []
    real_apply = db.engine.apply

    def capture(ops: list[Any]) -> None:
        captured.append(ops)
        real_apply(ops)

    monkeypatch.setattr(db.engine, "apply", capture)
    monkeypatch.setattr(ks, "_apply", capture)  # (database 0's keyspace holds engine.apply itself)
    wal_before = db.engine.wal.stats()["wal_bytes"]
    assert ks.push(b"big", [b"new"], left=False) == n + 1
    assert ks.push(b"big", [b"first"], left=True) == n + 2
    assert ks.pop(b"big", left=False) == [b"new"]
    ks.ltrim(b"big", 1, -1)
    for ops in captured:
        assert len(ops) == 1 and ops[0][0] == OP_UPDATE
    assert [len(ops[0][8]) for ops in captured] == [1, 1, 1, 0]
    assert db.engine.wal.stats()["wal_bytes"] - wal_before < 400
    assert db.engine.active.bytes < 1_000  # one entry and a few elements, not the 100,000 (~9 MB counted)
    monkeypatch.undo()
    assert ks.lrange(b"big", 0, 1) == [b"0", b"1"] and ks.lrange(b"big", -1, -1) == [b"%d" % (n - 1)]
    assert ks.llen(b"big") == n and ks.lindex(b"big", -2) == b"%d" % (n - 2)
    await db.engine.flush()
    assert db.engine.last_flush_rows == 1
    assert ks.llen(b"big") == n and ks.lindex(b"big", 0) == b"0" and ks.lindex(b"big", n - 1) == b"%d" % (n - 1)


# ---- sorted sets ------------------------------------------------------------------------------


ZADD_CASES: list[tuple[dict[str, bool], list[tuple[float, bytes]], Any, dict[bytes, float]]] = [
    ({}, [(5.0, b"a"), (9.0, b"new")], 1, {b"a": 5.0, b"b": 2.0, b"new": 9.0}),
    ({"ch": True}, [(5.0, b"a"), (2.0, b"b"), (9.0, b"new")], 2, {b"a": 5.0, b"b": 2.0, b"new": 9.0}),
    ({"nx": True}, [(5.0, b"a"), (9.0, b"new")], 1, {b"a": 1.0, b"b": 2.0, b"new": 9.0}),
    ({"xx": True}, [(5.0, b"a"), (9.0, b"new")], 0, {b"a": 5.0, b"b": 2.0}),
    ({"xx": True, "ch": True}, [(5.0, b"a"), (9.0, b"new")], 1, {b"a": 5.0, b"b": 2.0}),
    ({"gt": True, "ch": True}, [(5.0, b"a"), (0.0, b"b"), (9.0, b"new")], 2, {b"a": 5.0, b"b": 2.0, b"new": 9.0}),
    ({"lt": True, "ch": True}, [(5.0, b"a"), (0.0, b"b"), (9.0, b"new")], 2, {b"a": 1.0, b"b": 0.0, b"new": 9.0}),
    ({"incr": True}, [(2.5, b"a")], 3.5, {b"a": 3.5, b"b": 2.0}),
    ({"incr": True}, [(2.5, b"new")], 2.5, {b"a": 1.0, b"b": 2.0, b"new": 2.5}),
    ({"incr": True, "nx": True}, [(2.5, b"a")], None, {b"a": 1.0, b"b": 2.0}),
    ({"incr": True, "xx": True}, [(2.5, b"new")], None, {b"a": 1.0, b"b": 2.0}),
    ({"incr": True, "gt": True}, [(-1.0, b"a")], None, {b"a": 1.0, b"b": 2.0}),
    ({"incr": True, "lt": True}, [(-1.0, b"a")], 0.0, {b"a": 0.0, b"b": 2.0}),
    ({"incr": True}, [(-math.inf, b"a")], -math.inf, {b"a": -math.inf, b"b": 2.0}),
]


@pytest.mark.parametrize(("flags", "pairs", "result", "after"), ZADD_CASES)
async def test_zadd_flags(db: DB, flags: dict[str, bool], pairs: list[tuple[float, bytes]], result: Any,
                          after: dict[bytes, float]) -> None:
    ks = db.ks
    ks.zadd(b"z", [(1.0, b"a"), (2.0, b"b")])
    await db.engine.flush()
    assert ks.zadd(b"z", pairs, **flags) == result

    def check(ks: Keyspace) -> None:
        assert dict(ks.zitems(b"z")) == after and ks.zcard(b"z") == len(after)
        assert all(ks.zscore(b"z", m) == s for m, s in after.items())

    await phases(db, check)


async def test_zadd_nan_and_xx_on_missing_key(db: DB) -> None:
    ks = db.ks
    ks.zadd(b"z", [(math.inf, b"a")])
    with pytest.raises(CommandError, match="NaN"):
        ks.zadd(b"z", [(-math.inf, b"a")], incr=True)
    assert ks.zadd(b"none", [(1.0, b"a")], xx=True) == 0
    assert ks.zadd(b"none", [(1.0, b"a")], xx=True, incr=True) is None

    def check(ks: Keyspace) -> None:
        assert ks.zitems(b"z") == [(b"a", math.inf)] and ks.type_name(b"none") == "none"

    await phases(db, check)


async def test_zranges(db: DB) -> None:
    ks = db.ks
    ks.zadd(b"z", [(1.0, b"a"), (2.0, b"b"), (2.0, b"c")])
    await db.engine.flush()
    ks.zadd(b"z", [(-1.0, b"d"), (3.0, b"e"), (2.0, b"bb")])
    assert ks.zrem(b"z", [b"a", b"nope", b"a"]) == 1
    order = [(b"d", -1.0), (b"b", 2.0), (b"bb", 2.0), (b"c", 2.0), (b"e", 3.0)]
    inf = math.inf

    def check(ks: Keyspace) -> None:
        assert ks.zitems(b"z") == order and ks.zcard(b"z") == 5
        assert ks.zrange_by_rank(b"z", 0, -1) == order
        assert ks.zrange_by_rank(b"z", 1, 2) == order[1:3]
        assert ks.zrange_by_rank(b"z", -2, -1) == order[-2:]
        assert ks.zrange_by_rank(b"z", 0, 0, rev=True) == [order[-1]]
        assert ks.zrange_by_rank(b"z", 0, -1, rev=True) == order[::-1]
        assert ks.zrange_by_rank(b"z", 5, 10) == [] and ks.zrange_by_rank(b"z", 3, 1) == []
        assert ks.zrange_by_score(b"z", 2.0, False, 3.0, False) == order[1:]
        assert ks.zrange_by_score(b"z", 2.0, True, 3.0, False) == order[4:]
        assert ks.zrange_by_score(b"z", 2.0, False, 3.0, True) == order[1:4]
        assert ks.zrange_by_score(b"z", -inf, False, inf, False) == order
        assert ks.zrange_by_score(b"z", -inf, False, inf, False, rev=True) == order[::-1]
        assert ks.zrange_by_score(b"z", -inf, False, inf, False, offset=1, count=2) == order[1:3]
        assert ks.zrange_by_score(b"z", -inf, False, inf, False, rev=True, offset=1, count=2) == order[::-1][1:3]
        assert ks.zrange_by_score(b"z", -inf, False, inf, False, offset=4, count=-1) == order[4:]
        assert ks.zrange_by_score(b"z", -inf, False, inf, False, offset=-1, count=2) == []
        assert ks.zrange_by_score(b"z", 3.0, False, 2.0, False) == []
        assert ks.zrange_by_rank(b"nope", 0, -1) == [] and ks.zcard(b"nope") == 0 and ks.zscore(b"nope", b"a") is None

    await phases(db, check)


# ---- types ----------------------------------------------------------------------------------


READ_AND_WRITE_OPS: dict[str, list[Callable[[Keyspace, bytes], Any]]] = {
    "string": [lambda ks, k: ks.get(k), lambda ks, k: ks.getdel(k), lambda ks, k: ks.incrby(k, 1),
               lambda ks, k: ks.set(k, b"v", get=True)],
    "list": [lambda ks, k: ks.push(k, [b"x"], left=True), lambda ks, k: ks.push(k, [b"x"], left=False),
             lambda ks, k: ks.push(k, [b"x"], left=False, only_existing=True),
             lambda ks, k: ks.pop(k, left=True), lambda ks, k: ks.pop(k, left=False, count=2),
             lambda ks, k: ks.lrange(k, 0, -1), lambda ks, k: ks.lindex(k, 0), lambda ks, k: ks.llen(k),
             lambda ks, k: ks.ltrim(k, 0, 0)],
    "hash": [lambda ks, k: ks.hset(k, [(b"f", b"v")]), lambda ks, k: ks.hget(k, b"f"),
             lambda ks, k: ks.hmget(k, [b"f"]), lambda ks, k: ks.hgetall(k), lambda ks, k: ks.hlen(k),
             lambda ks, k: ks.hdel(k, [b"f"]), lambda ks, k: ks.hincrby(k, b"f", 1)],
    "set": [lambda ks, k: ks.sadd(k, [b"m"]), lambda ks, k: ks.srem(k, [b"m"]), lambda ks, k: ks.smembers(k),
            lambda ks, k: ks.sismember(k, b"m"), lambda ks, k: ks.scard(k)],
    "zset": [lambda ks, k: ks.zadd(k, [(1.0, b"m")]), lambda ks, k: ks.zadd(k, [(1.0, b"m")], incr=True),
             lambda ks, k: ks.zscore(k, b"m"), lambda ks, k: ks.zcard(k), lambda ks, k: ks.zrem(k, [b"m"]),
             lambda ks, k: ks.zitems(k), lambda ks, k: ks.zrange_by_rank(k, 0, -1),
             lambda ks, k: ks.zrange_by_score(k, 0.0, False, 9.0, False)],
}


def snapshot(ks: Keyspace, key: bytes) -> Any:
    kind = ks.type_name(key)
    value = {"string": ks.get, "list": lambda k: ks.lrange(k, 0, -1), "hash": ks.hgetall, "set": ks.smembers,
             "zset": ks.zitems}[kind](key)
    return kind, value, ks.pttl(key)


async def test_wrongtype_on_every_cross_type_use(db: DB) -> None:
    make_one_of_each(db.ks)
    await db.engine.flush()
    db.ks.hset(b"hash", [(b"delta", b"over sqlite")])
    db.ks.expire_at(b"set", db.now() + 5000)

    def check(ks: Keyspace) -> None:
        before = {k: snapshot(ks, k) for k in KINDS}
        for key, kind in KINDS.items():
            for group, ops in READ_AND_WRITE_OPS.items():
                if group == kind:
                    continue
                for op in ops:
                    with pytest.raises(WrongTypeError):
                        op(ks, key)
        assert {k: snapshot(ks, k) for k in KINDS} == before

    await phases(db, check)


@pytest.mark.parametrize("kind", ["list", "hash", "set", "zset"])
@pytest.mark.parametrize("flushed", [False, True])
async def test_emptied_collection_disappears(db: DB, kind: str, flushed: bool) -> None:
    ks = db.ks
    key = kind.encode()
    make_one_of_each(ks)
    if flushed:
        await db.engine.flush()
    ks.expire_at(key, db.now() + 5000)
    if kind == "list":
        assert ks.pop(key, left=True) == [b"a"]
        assert ks.pop(key, left=False, count=5) == [b"b"]
    elif kind == "hash":
        assert ks.hdel(key, [b"f"]) == 1 and ks.hdel(key, [b"g", b"x"]) == 1
    elif kind == "set":
        assert ks.srem(key, [b"m"]) == 1 and ks.srem(key, [b"n"]) == 1
    else:
        assert ks.zrem(key, [b"m"]) == 1 and ks.zrem(key, [b"n"]) == 1

    def check(ks: Keyspace) -> None:
        assert ks.type_name(key) == "none" and ks.exists([key]) == 0 and ks.pttl(key) == -2
        assert ks.dbsize() == 4 and key not in _scan_all(ks, 2)

    await phases(db, check)
    # recreated: only the new element, no TTL
    ks = db.ks
    {"list": lambda: ks.push(key, [b"new"], left=False), "hash": lambda: ks.hset(key, [(b"new", b"v")]),
     "set": lambda: ks.sadd(key, [b"new"]), "zset": lambda: ks.zadd(key, [(1.0, b"new")])}[kind]()

    def check_new(ks: Keyspace) -> None:
        kind_, value, ttl = snapshot(ks, key)
        assert kind_ == kind and ttl == -1
        assert len(value) == 1 and (b"new" in value or (b"new", 1.0) in value)

    await phases(db, check_new)


async def test_emptied_by_ltrim_and_ops_that_do_not_create(db: DB) -> None:
    ks = db.ks
    ks.push(b"l", [b"a"], left=False)
    await db.engine.flush()
    ks.ltrim(b"l", 1, 0)
    assert ks.hdel(b"h", [b"f"]) == 0 and ks.srem(b"s", [b"m"]) == 0 and ks.zrem(b"z", [b"m"]) == 0
    assert ks.zadd(b"z", [(1.0, b"m")], xx=True) == 0
    assert ks.push(b"p", [b"x"], left=True, only_existing=True) == 0
    assert ks.pop(b"p", left=True) is None

    def check(ks: Keyspace) -> None:
        assert ks.dbsize() == 0 and _scan_all(ks, 3) == []

    await phases(db, check)


async def test_batch_is_one_record_and_sees_its_own_writes(db: DB) -> None:
    ks = db.ks
    with db.engine.batch():
        ks.set(b"n", b"1")
        assert ks.incrby(b"n", 1) == 2
        ks.push(b"l", [b"a", b"b"], left=False)
        assert ks.pop(b"l", left=True) == [b"a"]
        ks.hset(b"h", [(b"f", b"1")])
        assert ks.hdel(b"h", [b"f"]) == 1
    assert db.engine.last_lsn == 1

    def check(ks: Keyspace) -> None:
        assert ks.get(b"n") == b"2" and ks.lrange(b"l", 0, -1) == [b"b"] and ks.exists([b"h"]) == 0

    await phases(db, check)


async def test_replay_of_a_long_wal_flushes_as_it_goes(tmp_path: Any, fake_clock: Any) -> None:
    path = str(tmp_path / "data")
    keys = [b"key%02d" % i for i in range(12)]

    def workload(ks: Keyspace, i: int) -> None:
        key = keys[i % len(keys)]
        kind = (i // len(keys)) % 5
        try:
            if kind == 0:
                ks.push(key, [b"%d" % i], left=i % 2 == 0)
            elif kind == 1:
                ks.hset(key, [(b"f%d" % (i % 3), b"%d" % i)])
            elif kind == 2:
                ks.zadd(key, [(float(i % 7), b"m%d" % (i % 4))])
            elif kind == 3:
                ks.sadd(key, [b"s%d" % (i % 5)])
            else:
                ks.delete([key]) if i % 3 == 0 else ks.set(key, b"v%d" % i)
        except WrongTypeError:
            ks.delete([key])
        if i == 150:
            ks.flushall()

    async with Engine(path, clock=fake_clock, flush_max_records=7, flush_max_age=3600.0) as engine:
        for i in range(400):
            workload(engine.keyspace, i)  # no await: the flush loop never runs
        before = {k: snapshot(engine.keyspace, k) for k in keys if engine.keyspace.exists([k])}
        assert engine.store.flushed_lsn == 0

        async def no_final_flush() -> None:
            pass
        engine._flush_all = no_final_flush  # type: ignore[method-assign]
    async with Engine(path, clock=fake_clock, flush_max_records=7, flush_max_age=3600.0) as engine:
        assert engine.recovery_report.records == engine.last_lsn > 70
        assert 0 < engine.store.flushed_lsn < engine.last_lsn  # flushed in chunks during the replay
        assert {k: snapshot(engine.keyspace, k) for k in keys if engine.keyspace.exists([k])} == before
        await engine.flush()
        assert {k: snapshot(engine.keyspace, k) for k in keys if engine.keyspace.exists([k])} == before
