"""The list, set and element-scan writes of the engine mixins, in every layer data can live in.

What the differential test cannot see: how much each write logs (a middle
write renumbers only the cheaper side; two-key writes are one record), and
that the results read the same from the memtable, a frozen memtable, a
replayed WAL and SQLite (:func:`tests.unit.test_keyspace.phases`).
"""

from __future__ import annotations

from typing import Any

import pytest

from memd.engine.keyspace import Keyspace
from memd.engine.records import OP_DEL, OP_UPDATE
from tests.unit.test_keyspace import DB, db, phases  # noqa: F401  (db is a fixture)

pytestmark = pytest.mark.anyio


def capture(db: DB, monkeypatch: pytest.MonkeyPatch) -> list[list[Any]]:
    """Every op list the engine is handed from now on (still applied)."""
    captured: list[list[Any]] = []
    real_apply = db.engine.apply

    def apply(ops: list[Any]) -> None:
        captured.append(list(ops))
        real_apply(ops)

    monkeypatch.setattr(db.engine, "apply", apply)
    monkeypatch.setattr(db.engine.keyspace, "_apply", apply)  # (database 0's keyspace holds engine.apply itself)
    return captured


async def test_middle_writes_renumber_the_cheaper_side(db: DB, monkeypatch: pytest.MonkeyPatch) -> None:
    ks = db.ks
    n = 10_000
    model = [b"%d" % i for i in range(n)]
    ks.push(b"l", list(model), left=False)
    await db.engine.flush()
    ops = capture(db, monkeypatch)
    assert ks.linsert(b"l", True, b"2", b"near head") == n + 1  # offset 2: two elements move down
    model.insert(2, b"near head")
    assert ks.linsert(b"l", False, b"9997", b"near tail") == n + 2  # two elements move up
    model.insert(model.index(b"9997") + 1, b"near tail")
    assert ks.lrem(b"l", 1, b"1") == 1  # second from the head: one element moves
    model.remove(b"1")
    assert ks.lrem(b"l", -1, b"9998") == 1  # second from the tail
    model.reverse()
    model.remove(b"9998")
    model.reverse()
    ks.lset(b"l", 5000, b"middle")
    model[5000] = b"middle"
    for logged in ops:
        assert len(logged) == 1 and logged[0][0] == OP_UPDATE
    assert [len(logged[0][8]) for logged in ops] == [3, 3, 2, 2, 1]
    monkeypatch.undo()

    def check(ks: Keyspace) -> None:
        assert ks.llen(b"l") == len(model)
        assert ks.lrange(b"l", 0, 5) == model[:6] and ks.lrange(b"l", -5, -1) == model[-5:]
        assert ks.lindex(b"l", 5000) == b"middle"

    await phases(db, check)
    assert db.ks.lrange(b"l", 0, -1) == model


async def test_lrem_everywhere_and_linsert_in_the_middle(db: DB) -> None:
    ks = db.ks
    model = [b"x", b"a", b"x", b"b", b"x", b"c", b"x"]
    ks.push(b"l", list(model), left=False)
    await db.engine.flush()
    assert ks.lrem(b"l", 0, b"x") == 4
    assert ks.linsert(b"l", False, b"a", b"ab") == 4
    assert ks.linsert(b"l", True, b"nothere", b"z") == -1
    assert ks.lrem(b"gone", 0, b"x") == 0 and ks.linsert(b"gone", True, b"a", b"b") == 0

    def check(ks: Keyspace) -> None:
        assert ks.lrange(b"l", 0, -1) == [b"a", b"ab", b"b", b"c"]
        assert ks.lpos(b"l", b"c", 1, None, 0) == [3] and ks.lpos(b"l", b"a", -1, 0, 0) == [0]

    await phases(db, check)


async def test_two_key_writes_are_one_record(db: DB, monkeypatch: pytest.MonkeyPatch) -> None:
    ks = db.ks
    ks.push(b"src", [b"a", b"b"], left=False)
    ks.sadd(b"s1", [b"m", b"n"])
    ks.sadd(b"s2", [b"n", b"o"])
    ks.expire_at(b"src", ks.now_ms() + 100_000)
    ops = capture(db, monkeypatch)
    assert ks.lmove(b"src", b"dst", True, False) == b"a"
    assert ks.lmove(b"src", b"dst", True, True) == b"b"  # src emptied: deleted in the same record
    assert ks.lmove(b"dst", b"dst", False, True) == b"a"  # a rotation: one op on one key
    assert ks.smove(b"s1", b"s2", b"m") is True
    assert ks.sstore(b"s3", ks.sunion([b"s1", b"s2"])) == 3
    assert [[op[0] for op in logged] for logged in ops] == [
        [OP_UPDATE, OP_UPDATE], [OP_DEL, OP_UPDATE], [OP_UPDATE], [OP_UPDATE, OP_UPDATE], [OP_UPDATE]]
    monkeypatch.undo()

    def check(ks: Keyspace) -> None:
        assert ks.meta(b"src") is None and ks.lrange(b"dst", 0, -1) == [b"a", b"b"]
        assert ks.smembers(b"s1") == {b"n"} and ks.smembers(b"s2") == {b"m", b"n", b"o"}
        assert ks.smembers(b"s3") == {b"m", b"n", b"o"} and ks.pttl(b"s3") == -1

    await phases(db, check)


@pytest.mark.parametrize("n", [90, 900], ids=["few buffered", "sorted buffer kept between pages"])
async def test_element_scan_reads_every_layer_in_order(db: DB, n: int) -> None:
    ks = db.ks
    third = n // 3
    ks.hset(b"h", [(b"f%04d" % i, b"old") for i in range(0, 2 * third)])
    await db.engine.flush()
    ks.hset(b"h", [(b"f%04d" % i, b"new") for i in range(third, n)])  # half overwritten, a third added
    ks.hdel(b"h", [b"f%04d" % i for i in range(0, n, 10)])
    expected = {b"f%04d" % i: (b"old" if i < third else b"new") for i in range(n) if i % 10}

    def full(ks: Keyspace, count: int) -> list[tuple[bytes, Any]]:
        out: list[tuple[bytes, Any]] = []
        after: bytes | None = None
        while True:
            page, after = ks.scan_elems(b"h", after, count)
            out += page
            if after is None:
                return out

    def check(ks: Keyspace) -> None:
        for count in (1, 7, 100):
            pairs = full(ks, count)
            assert [p[0] for p in pairs] == sorted(expected)  # in order, each once
            assert dict(pairs) == expected

    await phases(db, check)
