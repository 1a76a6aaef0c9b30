"""Databases (SELECT, MOVE, SWAPDB, FLUSHDB, COPY ... DB) through the dispatcher, in every layer.

What each scenario leaves behind is read back from the active memtable, a frozen one,
SQLite, a crash-like restart (WAL replay, no final flush) and a clean restart: the
database number travels in WAL records (OP_SELECT), store rows (``db``) and, for SWAPDB,
the stored map. Byte-for-byte agreement with redis-server is
tests/integration/test_differential_databases.py's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from memd.commands import load_all
from memd.config import CompactionConfig
from memd.engine.engine import Engine
from memd.engine.records import OP_SELECT
from memd.errors import CommandError, StoreError
from memd.maintenance.compaction import run_compaction
from memd.resp import NullArray, SimpleString
from tests.unit.test_keyspace import DB
from tests.unit.test_transactions import Conn

pytestmark = pytest.mark.anyio
load_all()

OK = SimpleString("OK")


class Data(DB):
    """test_keyspace's data directory, with a number of databases and connections to them."""

    def __init__(self, path: str, clock: Any, databases: int = 16) -> None:
        super().__init__(path, clock)
        self.databases = databases

    async def open(self) -> None:
        self.engine = Engine(self.path, clock=self.clock, flush_max_age=3600.0, databases=self.databases)
        await self.engine.__aenter__()

    def conn(self, db: int = 0) -> Conn:
        c = Conn(self.engine)
        if db:
            assert c("SELECT", str(db)) == OK
        return c


@pytest.fixture
async def data(tmp_path: Path, fake_clock: Any) -> AsyncIterator[Data]:
    d = Data(str(tmp_path / "data"), fake_clock)
    await d.open()
    yield d
    await d.engine.close()


async def in_every_layer(data: Data, check: Callable[[], None]) -> None:
    """``check`` on the memtable, a WAL replay, a frozen memtable, SQLite under it, then SQLite alone."""
    check()
    await data.restart(crash=True)
    assert data.engine.recovery_report.records > 0
    check()
    data.engine._freeze()
    check()
    frozen = data.engine.frozen
    assert frozen is not None
    await data.engine.store.flush(frozen)  # SQLite committed, the frozen table still on top
    check()
    await data.engine.flush()
    check()
    await data.restart()
    check()


async def test_each_database_is_its_own_keyspace(data: Data) -> None:
    c0, c1 = data.conn(), data.conn(1)
    c0("SET", "k", "zero")
    c1("SET", "k", "one")
    c1("RPUSH", "l", "a", "b")
    c1("HSET", "h", "f", "v")
    c1("ZADD", "z", "1", "m")
    data.conn(15)("SET", "only15", "x")

    def check() -> None:
        a, b, last = data.conn(), data.conn(1), data.conn(15)
        assert a("GET", "k") == b"zero" and b("GET", "k") == b"one"
        assert a("EXISTS", "l", "h", "z") == 0 and b("EXISTS", "l", "h", "z") == 3
        assert b("LRANGE", "l", "0", "-1") == [b"a", b"b"] and b("HGET", "h", "f") == b"v"
        assert b("ZRANGEBYSCORE", "z", "-inf", "+inf") == [b"m"]
        assert (a("DBSIZE"), b("DBSIZE"), last("DBSIZE"), data.conn(2)("DBSIZE")) == (1, 4, 1, 0)
        assert sorted(b("KEYS", "*")) == [b"h", b"k", b"l", b"z"] and a("KEYS", "*") == [b"k"]
        assert b("SCAN", "0", "COUNT", "100")[1] == [b"h", b"k", b"l", b"z"]
        assert last("RANDOMKEY") == b"only15" and data.conn(3)("RANDOMKEY") is None
        assert b("TYPE", "z") == SimpleString("zset") and a("TYPE", "z") == SimpleString("none")

    await in_every_layer(data, check)


async def test_flushdb_empties_one_database_and_flushall_every_one(data: Data) -> None:
    c0, c1, c2 = data.conn(), data.conn(1), data.conn(2)
    for c in (c0, c1, c2):
        c("SET", "k", "v")
        c("SADD", "s", "m1", "m2")
    data.engine._freeze()
    await data.engine.store.flush(data.engine.frozen)  # type: ignore[arg-type]  # some of it in SQLite too
    await data.engine.flush()
    c1("SADD", "s", "m3")  # and a buffered change over it
    assert c1("FLUSHDB") == OK
    c1("SET", "after", "flushdb")

    def check() -> None:
        a, b, c = data.conn(), data.conn(1), data.conn(2)
        assert b("DBSIZE") == 1 and b("GET", "after") == b"flushdb" and not b("SMEMBERS", "s")
        assert sorted(a("SMEMBERS", "s")) == sorted(c("SMEMBERS", "s")) == [b"m1", b"m2"]
        assert a("DBSIZE") == c("DBSIZE") == 2

    await in_every_layer(data, check)
    assert data.conn(2)("FLUSHALL") == OK
    data.conn(3)("SET", "after", "flushall")

    def check_all() -> None:
        assert [data.conn(db)("DBSIZE") for db in range(4)] == [0, 0, 0, 1]

    await in_every_layer(data, check_all)


async def test_move_and_copy_db_carry_value_type_and_ttl(data: Data, fake_clock: Any) -> None:
    c0 = data.conn()
    c0("SET", "s", "v", "EX", "100")
    c0("RPUSH", "l", "a", "b", "c")
    c0("ZADD", "z", "1", "one", "2", "two")
    assert c0("MOVE", "s", "3") == 1
    assert c0("MOVE", "s", "3") == 0  # gone from here
    assert c0("MOVE", "l", "3") == 1
    data.conn(3)("SET", "taken", "there")
    c0("SET", "taken", "here")
    assert c0("MOVE", "taken", "3") == 0  # exists there: nothing moves
    assert c0("COPY", "z", "z", "DB", "4") == 1  # same name, another database
    assert c0("COPY", "z", "z", "DB", "4") == 0
    assert c0("COPY", "z", "z", "DB", "4", "REPLACE") == 1
    with pytest.raises(CommandError, match="source and destination objects are the same"):
        c0("MOVE", "z", "0")
    with pytest.raises(CommandError, match="source and destination objects are the same"):
        c0("COPY", "z", "z")
    with pytest.raises(CommandError, match="DB index is out of range"):
        c0("MOVE", "z", "16")

    def check() -> None:
        a, d3, d4 = data.conn(), data.conn(3), data.conn(4)
        assert a("EXISTS", "s", "l") == 0 and d3("GET", "s") == b"v" and 0 < d3("TTL", "s") <= 100
        assert d3("LRANGE", "l", "0", "-1") == [b"a", b"b", b"c"]
        assert a("GET", "taken") == b"here" and d3("GET", "taken") == b"there"
        assert d4("ZRANGE", "z", "0", "-1", "WITHSCORES") == a("ZRANGE", "z", "0", "-1", "WITHSCORES") \
            == [b"one", 1.0, b"two", 2.0]

    await in_every_layer(data, check)


async def test_swapdb_is_kept_across_flushes_and_restarts(data: Data) -> None:
    c0, c1 = data.conn(), data.conn(1)
    c0("SET", "k", "was0")
    c1("SET", "k", "was1")
    c1("HSET", "h", "f", "v")
    await data.engine.flush()  # stored under their physical databases
    assert c0("SWAPDB", "0", "1") == OK
    assert c0("GET", "k") == b"was1" and c1("GET", "k") == b"was0"  # both connections see the swap at once
    c0("SET", "new", "in0")
    assert c0("SWAPDB", "1", "2") == OK  # was0's contents move on to database 2
    assert c0("SWAPDB", "5", "5") == OK

    def check() -> None:
        a, b, c = data.conn(), data.conn(1), data.conn(2)
        assert a("GET", "k") == b"was1" and a("HGET", "h", "f") == b"v" and a("GET", "new") == b"in0"
        assert b("DBSIZE") == 0 and c("GET", "k") == b"was0" and c("DBSIZE") == 1
        assert a("DBSIZE") == 3

    await in_every_layer(data, check)
    assert data.engine.store.dbmap() == [1, 2, 0, *range(3, 16)]


async def test_a_transaction_across_databases_is_one_record(data: Data) -> None:
    c = data.conn()
    last = data.engine.last_lsn
    assert c("MULTI") == OK
    for cmd in (("SET", "a", "0"), ("SELECT", "7"), ("SET", "a", "7"), ("INCR", "n"), ("SELECT", "0"),
                ("SET", "b", "0"), ("MOVE", "b", "9"), ("SELECT", "9"), ("RPUSH", "l", "x")):
        assert c(*cmd) == SimpleString("QUEUED")
    assert c("EXEC") == [OK, OK, OK, 1, OK, OK, 1, OK, 1]
    assert data.engine.last_lsn == last + 1, "one WAL record"
    assert c.ctx.db == 9

    def check() -> None:
        d0, d7, d9 = data.conn(), data.conn(7), data.conn(9)
        assert d0("GET", "a") == b"0" and d0("EXISTS", "b", "n") == 0
        assert d7("GET", "a") == b"7" and d7("GET", "n") == b"1"
        assert d9("GET", "b") == b"0" and d9("LRANGE", "l", "0", "-1") == [b"x"]

    await in_every_layer(data, check)


async def test_select_checks_its_index(data: Data) -> None:
    c = data.conn()
    for bad, text in (("16", "DB index is out of range"), ("-1", "DB index is out of range"),
                      ("x", "value is not an integer or out of range"), ("2147483648", "value is out of range")):
        with pytest.raises(CommandError, match=text):
            c("SELECT", bad)
    assert c.ctx.db == 0
    c("SELECT", "15")
    assert c("RESET") == SimpleString("RESET") and c.ctx.db == 0


async def test_watch_is_per_database(data: Data) -> None:
    a, b = data.conn(1), data.conn()
    a("SET", "k", "v")
    assert a("WATCH", "k") == OK
    b("SET", "k", "other database")  # same name in database 0: not the watched key
    a("MULTI"), a("GET", "k")
    assert a("EXEC") == [b"v"]
    assert a("WATCH", "k") == OK
    b("FLUSHDB")  # database 0's flush: not this one
    a("MULTI"), a("GET", "k")
    assert a("EXEC") == [b"v"]
    assert a("WATCH", "k") == OK
    data.conn(1)("FLUSHDB")  # the watched key existed: aborts
    a("MULTI"), a("GET", "k")
    assert a("EXEC") is NullArray
    b("SET", "w", "in0")
    assert a("WATCH", "w") == OK  # not in database 1 when watched...
    b("SWAPDB", "0", "1")  # ... but it is after the swap: aborts (Redis: it exists in either database)
    a("MULTI"), a("GET", "w")
    assert a("EXEC") is NullArray


async def test_ops_name_their_database_only_outside_database_0(data: Data, monkeypatch: pytest.MonkeyPatch) -> None:
    """Database 0's records are as they were before databases (no OP_SELECT): the WAL costs nothing more."""
    logged: list[list[Any]] = []
    real = data.engine.wal.append
    monkeypatch.setattr(data.engine.wal, "append", lambda lsn, ops: (logged.append(list(ops)), real(lsn, ops)))
    data.conn()("SET", "k", "v")
    data.conn(2)("SET", "k", "v")
    assert logged[0][0][0] != OP_SELECT and logged[1][0] == (OP_SELECT, 2)


async def test_fewer_databases_than_the_data_uses_refuse_to_start(tmp_path: Path, fake_clock: Any) -> None:
    d = Data(str(tmp_path / "data"), fake_clock)
    await d.open()
    d.conn(5)("SET", "k", "v")
    await d.engine.close()
    d.databases = 5
    with pytest.raises((StoreError, ValueError), match="databases"):
        await d.open()
    d.databases = 6
    await d.open()
    assert d.conn(5)("GET", "k") == b"v"
    await d.engine.close()


async def test_compaction_purges_expired_keys_of_every_database_only(data: Data, fake_clock: Any) -> None:
    data.conn(3)("HSET", "h", "f", "v")
    data.conn(3)("PEXPIRE", "h", "1000")
    data.conn()("HSET", "h", "f", "lives on")
    await data.engine.flush()
    fake_clock.advance(2)
    assert (await run_compaction(data.engine, CompactionConfig()))["expired_keys"] == 1
    assert await data.engine.store.execute("SELECT db, key FROM keys") == [(0, b"h")]
    assert await data.engine.store.execute("SELECT db, sub, value FROM elems") == [(0, b"f", b"lives on")]
