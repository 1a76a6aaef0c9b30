"""walrus (coleifer's Redis toolkit) runs unchanged against a real memd daemon (Redis breadth 1).

``walrus.Database`` subclasses ``redis.Redis``: it connects to memd's Unix socket like any
redis-py client, and its containers and tools issue plain commands of the string, list,
hash, set, sorted-set and key families. Every test runs against memd and against a local
redis-server 7.0, each in RESP2 and RESP3, with the same assertions: the expected values are
then Redis's own answers, not a reading of walrus's documentation, and memd must give the same.

Covered (the parts of walrus that use only plain commands):

- ``Hash``: item get/set/delete, multi-get, ``update``, ``setnx``, ``incr``/``incr_float``,
  ``keys``/``values``/``items``, HSCAN iteration and ``search``, ``as_dict``, ``from_dict``.
- ``List``: indexing and slicing (LRANGE), item assignment (LSET), delete by index, value and
  slice (LREM / LTRIM), ``insert_before``/``insert_after`` (LINSERT), ``prepend``/``extend``,
  ``popleft``/``popright``, ``move_tail`` (RPOPLPUSH), ``sort`` (SORT), ``from_list``.
- ``Set``: add/remove/contains/len, SSCAN iteration and ``search``, ``pop`` and ``random``
  (checked by membership), ``&`` ``|`` ``-`` and their in-place forms, ``interstore``
  ``unionstore`` ``diffstore`` over several sets, ``sort``, ``from_set``.
- ``ZSet``: ``add``/``__setitem__``, index and member slices with and without scores, ``rank``
  (both directions), ``score``, ``count``, ``incr``, ``range`` (reversed), ``range_by_score``
  (limits, reversed), ``range_by_lex``, ``remove``, ``as_items``, ``from_dict``, ``sort``,
  ``popmin``/``popmax`` and their pipelined ``*_compat`` forms, ``remove_by_rank``/``remove_by_score``/``remove_by_lex``, slice deletion,
  ``lex_count``, ``unionstore``/``interstore`` (weights, aggregate) and ``|=``/``&=``,
  ZSCAN iteration and ``search``.
- ``Cache``: get/set with the default and explicit timeouts (TTL read back, a 1 s expiry),
  ``get_many``/``set_many`` (a MSET + EXPIRE pipeline), ``delete``/``delete_many``, ``keys``,
  ``flush``, ``incr``, the ``cached`` decorator (hits, misses, ``bust``, metrics),
  ``cached_property`` and ``cache_async``.
- ``Counter``, ``RateLimit`` (the list-based one) and its ``rate_limited`` decorator,
  ``BitField`` (BITFIELD GET/SET/INCRBY with overflow, SETBIT GETBIT BITCOUNT) and
  ``BloomFilter``, ``Graph`` (a hexastore on one sorted set: lexicographic ranges, MULTI/EXEC
  through ``Database.atomic``), ``Autocomplete`` (single-word searches; multi-word and
  boosted ones need ZINTERSTORE), ``Model`` (hash rows, set indexes, AutoIncrementField,
  ``get``/``query`` with ==, !=, & and | (SINTERSTORE SUNIONSTORE SDIFFSTORE), ``order_by``
  through SORT ... BY ``*->field`` (text and numeric), UUID primary keys, float, datetime,
  date, bytes, pickled and JSON fields, set/list/hash/zset container fields, ``incr``,
  ``delete``, ``query_delete``, ``count``), full-text search (``TextField(fts=True)`` and the
  ``Index``: walrus's own tokenizer over sorted sets, no module; it needs ZINTERSTORE and
  ZUNIONSTORE), and ``Database`` itself (``get_key``, ``len``, iteration, ``search``,
  ``atomic``, ``hash_exists``, ``Container.expire``/``pexpire``/``clear``).
- Seeded random sequences of Hash/List/Set/ZSet calls (wrong types, errors and edge values
  included) give memd's and redis-server's answers side by side, step by step.
- Durability: data written through walrus survives a clean restart and a SIGKILL of a daemon
  that fsyncs every write.

Skipped, and why:

- ``Array``, ``Database.cas``, ``Lock``, ``RateLimitLua`` and ``Model`` range queries
  (<, <=, >, >=, ``between``: the ``zset_score_filter`` script): Lua scripts (EVALSHA).
- ``Lock`` also waits with BLPOP, ``List.bpopleft``/``bpopright``/``bmove_tail`` and
  ``ZSet.bpopmin``/``bpopmax``: blocking pops.
- ``Stream``, ``ConsumerGroup``, ``TimeSeries``: streams. ``Database.listener``: pub/sub.
  ``Database.stream_log``: MONITOR.
- ``HyperLogLog``: memd has no PFADD/PFCOUNT/PFMERGE (not part of this family set).
- ``Container.dump``: DUMP's payload is Redis's RDB serialisation, which memd does not produce.

walrus is a hard requirement (the ``test`` extra), and so is redis-server: missing, they fail.
"""

from __future__ import annotations

import datetime
import random
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import walrus
from walrus.cache import Cache
from walrus.rate_limit import RateLimitException

from tests.integration.daemon import Daemon
from tests.integration.test_differential_handlers import redis_socket  # noqa: F401  (a fixture)

pytestmark = pytest.mark.timeout(60)

@pytest.fixture(scope="module")
def memd_daemon() -> Iterator[Daemon]:
    d = Daemon(fsync="everysec").start()
    yield d
    d.cleanup()


def connect(socket_path: str, protocol: int = 2) -> walrus.Database:
    return walrus.Database(unix_socket_path=socket_path, socket_timeout=10, protocol=protocol)


@pytest.fixture(params=[("memd", 2), ("memd", 3), ("redis", 2), ("redis", 3)],
                ids=["memd-resp2", "memd-resp3", "redis-resp2", "redis-resp3"])
def db(request: pytest.FixtureRequest) -> Iterator[walrus.Database]:
    """A walrus Database on an empty keyspace of memd, or of redis-server 7.0 (the reference).

    Both protocols: redis-py parses RESP3's maps, sets and doubles itself, so memd's RESP3
    replies reach walrus through other code than its RESP2 ones.
    """
    backend, protocol = request.param
    path = (request.getfixturevalue("memd_daemon").socket if backend == "memd"
            else request.getfixturevalue("redis_socket"))
    database = connect(path, protocol)
    database.flushall()
    database.backend = backend  # type: ignore[attr-defined]
    yield database
    database.close()


def pairs(items: list[Any]) -> list[tuple[Any, ...]]:
    """(member, score) pairs as tuples: redis-py gives tuples in RESP2 but two-item lists in RESP3."""
    return [tuple(item) for item in items]


# ---- Hash -----------------------------------------------------------------------------------

def test_hash(db: walrus.Database) -> None:
    h = db.Hash("user:1")
    h.update({"name": "ada", "lang": "en"}, visits=3)
    h["email"] = "ada@example.org"
    assert h.as_dict() == {b"name": b"ada", b"lang": b"en", b"visits": b"3", b"email": b"ada@example.org"}
    assert h.as_dict(decode=True)["name"] == "ada"
    assert h["name"] == b"ada" and h["missing"] is None
    assert h["name", "missing", "lang"] == [b"ada", None, b"en"]
    assert h.get("missing", "fallback") == "fallback"
    assert "lang" in h and "missing" not in h and len(h) == 4
    assert h.setnx("name", "bob") is False and h.setnx("nick", "a") is True
    assert h.incr("visits") == 4 and h.incr("visits", 10) == 14
    assert h.incr_float("score", 0.5) == 0.5 and h.incr_float("score", 2.25) == 2.75
    del h["nick"]
    assert sorted(h.keys()) == [b"email", b"lang", b"name", b"score", b"visits"]
    assert sorted(h.values()) == [b"14", b"2.75", b"ada", b"ada@example.org", b"en"]
    assert sorted(h) == sorted(h.items()) == sorted(h.as_dict().items())
    assert sorted(h.items(lazy=True)) == sorted(h.as_dict().items())
    assert sorted(h.search("l*")) == [(b"lang", b"en")]
    big = walrus.Hash.from_dict(db, "big", {f"f{i:03}": i for i in range(300)})
    assert len(big) == 300
    assert sorted(big.search("f1?7")) == [(f"f1{d}7".encode(), f"1{d}7".encode()) for d in range(10)]
    assert dict(big)[b"f299"] == b"299"
    walrus.Hash.from_dict(db, "big", {"only": 1}, clear=True)
    assert big.as_dict() == {b"only": b"1"}
    with pytest.raises(redis.ResponseError, match="not an integer"):
        h.incr("name")


# ---- List -----------------------------------------------------------------------------------

def test_list(db: walrus.Database) -> None:
    lst = db.List("queue")
    assert lst.extend(["b", "c", "d", "e"]) == 4
    assert lst.append("f") == 5 and lst.prepend("a") == 6
    assert lst.as_list(decode=True) == ["a", "b", "c", "d", "e", "f"]
    assert lst[0] == b"a" and lst[-1] == b"f" and lst[10] is None
    assert lst[:2] == [b"a", b"b"] and lst[2:4] == [b"c", b"d"] and lst[4:] == [b"e", b"f"]
    assert lst[-2:] == [b"e", b"f"] and lst[:] == list(lst) and len(lst) == 6
    lst.insert_before("b-", "b")
    lst.insert_after("d+", "d")
    assert lst.insert("never", "nothere", "before") == -1
    assert lst.as_list() == [b"a", b"b-", b"b", b"c", b"d", b"d+", b"e", b"f"]
    lst[1] = "B"
    with pytest.raises(redis.ResponseError, match="index out of range"):
        lst[99] = "x"
    del lst[0]  # by index: LINDEX then LREM of that value
    del lst["d+"]  # by value
    assert lst.as_list() == [b"B", b"b", b"c", b"d", b"e", b"f"]
    assert lst.popleft() == b"B" and lst.popright() == b"f" and lst.pop() == b"e"
    assert lst.move_tail("done") == b"d" and db.List("done").as_list() == [b"d"]
    lst.extend(["z", "y", "x", "w"])
    assert lst.sort() == [b"b", b"c", b"w", b"x", b"y", b"z"]
    assert lst.sort(ordering="DESC", limit=2, offset=1) == [b"y", b"x"]
    del lst[1:4]  # keeps only the slice (LTRIM 1 3)
    assert lst.as_list() == [b"c", b"z", b"y"]
    numbers = walrus.List.from_list(db, "numbers", [3, 10, 1, 2])
    assert numbers.sort(alpha=False) == [b"1", b"2", b"3", b"10"]
    walrus.List.from_list(db, "numbers", [7], clear=True)
    assert numbers.as_list() == [b"7"]
    assert db.List("empty").popleft() is None and len(db.List("empty")) == 0
    h = db.Hash("not-a-list")
    h["k"] = "v"
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        db.List("not-a-list").append("x")


# ---- Set ------------------------------------------------------------------------------------

def test_set(db: walrus.Database) -> None:
    a = walrus.Set.from_set(db, "a", {"1", "2", "3", "4"})
    b = db.Set("b")
    c = db.Set("c")
    assert b.add("3", "4", "5") == 3 and c.add("4", "5", "6", "4") == 3
    assert len(a) == 4 and "1" in a and "9" not in a
    assert a & b == {b"3", b"4"} and a | b == {b"1", b"2", b"3", b"4", b"5"} and a - b == {b"1", b"2"}
    assert a.interstore("i", b, c).members() == {b"4"}
    assert a.unionstore("u", b, c).members() == {b"1", b"2", b"3", b"4", b"5", b"6"}
    assert a.diffstore("d", b, c).as_set(decode=True) == {"1", "2"}
    assert a.interstore("none", db.Set("missing")).members() == set() and not db.exists("none")
    assert sorted(a) == [b"1", b"2", b"3", b"4"] and sorted(a.search("[12]")) == [b"1", b"2"]
    assert a.sort() == [b"1", b"2", b"3", b"4"] and a.sort(ordering="desc", limit=2) == [b"4", b"3"]
    assert a.random() in a.members() and set(a.random(3)) <= a.members() and len(a.random(3)) == 3
    popped = a.pop()
    assert popped in {b"1", b"2", b"3", b"4"} and popped not in a and len(a) == 3
    a.add(popped)
    x = walrus.Set.from_set(db, "x", {"1", "2", "3"})
    x &= b
    assert x.members() == {b"3"}
    x |= c
    assert x.members() == {b"3", b"4", b"5", b"6"}
    x -= b
    assert x.members() == {b"6"}
    assert a.remove("1", "nope") == 1 and a.members() == {b"2", b"3", b"4"}
    del a["2"]
    assert a.members() == {b"3", b"4"}
    many = walrus.Set.from_set(db, "many", {f"m{i}" for i in range(500)})
    assert len(many) == 500 and set(many) == many.members() and len(set(many.search("m4?"))) == 10


# ---- ZSet -----------------------------------------------------------------------------------

def test_zset(db: walrus.Database) -> None:
    z = walrus.ZSet.from_dict(db, "scores", {"ann": 3, "bob": 1, "cat": 2, "dan": 5})
    z["eve"] = 4
    assert z.add({"fay": 6}) == 1 and len(z) == 6 and "ann" in z and "zed" not in z
    assert z[:2] == [b"bob", b"cat"] and z[0] == [b"bob"] and z[-1] == [b"fay"]
    assert pairs(z[:3, True]) == [(b"bob", 1.0), (b"cat", 2.0), (b"ann", 3.0)]
    assert z["cat":"dan"] == [b"cat", b"ann", b"eve"]  # member slices: by rank, the stop excluded
    assert pairs(z[:"ann", True]) == [(b"bob", 1.0), (b"cat", 2.0)]
    with pytest.raises(KeyError):
        z["nobody":]
    assert z.rank("ann") == 2 and z.rank("ann", reverse=True) == 3 and z.rank("nobody") is None
    assert z.score("dan") == 5.0 and z.score("nobody") is None
    assert z.count(2, 4) == 3 and z.count(3) == 1 and z.count("(2", "+inf") == 4
    assert z.incr("bob", 10) == 11.0 and z.incr("new", 2.5) == 2.5
    assert z.range(0, 2) == [b"cat", b"new", b"ann"]
    assert z.range(0, 1, reverse=True) == [b"bob", b"fay"]
    assert pairs(z.range(0, 1, with_scores=True, desc=True)) == [(b"bob", 11.0), (b"fay", 6.0)]
    assert z.range_by_score(2, 4) == [b"cat", b"new", b"ann", b"eve"]
    assert pairs(z.range_by_score("(2", 5, start=1, num=2, with_scores=True)) == [(b"ann", 3.0), (b"eve", 4.0)]
    assert z.range_by_score(2, 4, reverse=True) == [b"eve", b"ann", b"new", b"cat"]
    assert z.iterator(reverse=True)[:2] == [b"bob", b"fay"]
    assert z.remove("new", "nobody") == 1
    assert z.as_items(decode=True) == [("cat", 2.0), ("ann", 3.0), ("eve", 4.0), ("dan", 5.0),
                                       ("fay", 6.0), ("bob", 11.0)]
    assert z.sort(limit=3) == [b"ann", b"bob", b"cat"]
    del z["eve"]
    assert z.range(0, -1) == [b"cat", b"ann", b"dan", b"fay", b"bob"]
    lex = walrus.ZSet.from_dict(db, "lex", dict.fromkeys(["apple", "banana", "cherry", "date"], 0))
    assert lex.range_by_lex("[b", "(d") == [b"banana", b"cherry"]
    assert lex.range_by_lex("-", "+", start=1, num=2) == [b"banana", b"cherry"]
    assert lex.range_by_lex("[a", "[c", reverse=True) == [b"banana", b"apple"]
    walrus.ZSet.from_dict(db, "lex", {"only": 1}, clear=True)
    assert pairs(lex.as_items()) == [(b"only", 1.0)]


def test_zset_pops_removals_and_stores(db: walrus.Database) -> None:
    z = walrus.ZSet.from_dict(db, "z", {f"m{i}": i for i in range(10)})
    assert pairs(z.popmin()) == [(b"m0", 0.0)] and pairs(z.popmax(2)) == [(b"m9", 9.0), (b"m8", 8.0)]
    assert pairs(z.popmin_compat(2)) == [(b"m1", 1.0), (b"m2", 2.0)]
    assert pairs(z.popmax_compat(1)) == [(b"m7", 7.0)]
    assert pairs(z.as_items()) == [(b"m3", 3.0), (b"m4", 4.0), (b"m5", 5.0), (b"m6", 6.0)]
    assert z.remove_by_score(4, 5) == 2 and z.remove_by_rank(0) == 1 and pairs(z.as_items()) == [(b"m6", 6.0)]
    assert db.ZSet("empty").popmin() == [] and db.ZSet("empty").popmin_compat() == []
    z2 = walrus.ZSet.from_dict(db, "z2", {f"m{i}": i for i in range(10)})
    del z2[2:5]  # ZREMRANGEBYRANK 2 4
    assert z2[:] == [b"m0", b"m1", b"m5", b"m6", b"m7", b"m8", b"m9"]
    del z2["m6":]
    assert z2[:] == [b"m0", b"m1", b"m5"]
    assert list(z2) == [(b"m0", 0.0), (b"m1", 1.0), (b"m5", 5.0)]  # ZSCAN, in score order as in Redis
    assert list(z2.search("m[01]")) == [(b"m0", 0.0), (b"m1", 1.0)]
    assert list(z2.iterator(with_scores=True)) == list(z2)
    lex = walrus.ZSet.from_dict(db, "lex", dict.fromkeys("abcdefg", 0))
    assert lex.lex_count("[b", "[d") == 3 and lex.lex_count("-", "+") == 7
    assert lex.remove_by_lex("(a", "[c") == 2 and lex[:] == [b"a", b"d", b"e", b"f", b"g"]
    p = walrus.ZSet.from_dict(db, "p", {"x": 1, "y": 2, "z": 3})
    q = walrus.ZSet.from_dict(db, "q", {"y": 10, "z": 20, "w": 30})
    assert pairs(p.unionstore("pu", q).as_items()) == [(b"x", 1.0), (b"y", 12.0), (b"z", 23.0), (b"w", 30.0)]
    assert pairs(p.interstore("pi", q, aggregate="MAX").as_items()) == [(b"y", 10.0), (b"z", 20.0)]
    assert db.zunionstore("pw", {"p": 2, "q": 0.5}) == 4
    assert pairs(db.ZSet("pw").as_items()) == [(b"x", 2.0), (b"y", 9.0), (b"w", 15.0), (b"z", 16.0)]
    p |= q
    assert pairs(p.as_items()) == [(b"x", 1.0), (b"y", 12.0), (b"z", 23.0), (b"w", 30.0)]
    p &= db.ZSet("pi")
    assert pairs(p.as_items()) == [(b"y", 22.0), (b"z", 43.0)]
    big = walrus.ZSet.from_dict(db, "big", {f"k{i:04}": i for i in range(1000)})
    assert len(list(big)) == 1000 and dict(big)[b"k0500"] == 500.0


# ---- Cache ----------------------------------------------------------------------------------

def test_cache_get_set_ttl(db: walrus.Database) -> None:
    cache = db.cache("c", default_timeout=120)
    assert cache.set("user", {"id": 7, "tags": ["a", "b"]}) is True
    assert cache.get("user") == {"id": 7, "tags": ["a", "b"]} and 118 <= db.ttl("c:user") <= 120
    assert cache.set("forever", 1, timeout=0) is True and db.ttl("c:forever") == -1
    assert cache.get("missing") is None and cache.get("missing", "dflt") == "dflt"
    assert cache.metrics == {"hits": 1, "misses": 2, "writes": 2}
    assert cache.set_many({"a": 1, "b": [2]}, timeout=30) is True
    assert cache.get_many(["a", "b", "nope"]) == {"a": 1, "b": [2]} and 28 <= db.ttl("c:b") <= 30
    assert sorted(cache.keys()) == ["c:a", "c:b", "c:forever", "c:user"]
    assert sorted(cache.keys(strip_prefix=True)) == ["a", "b", "forever", "user"]
    assert cache.incr("n") == 1 and cache.incr("n", 5) == 6
    assert cache.delete("a") == 1 and cache.delete("a") == 0 and cache.delete_many(["b", "user", "x"]) == 2
    assert cache.flush() == 2 and list(cache.keys()) == [] and cache.flush() is None
    other = Cache(db, name="other")
    other.set("k", "v")
    assert db.ttl("other:k") == -1 and cache.get("k") is None and other.get("k") == "v"
    short = db.cache("short", default_timeout=1)
    short.set("gone", "soon")
    assert short.get("gone") == "soon"
    time.sleep(1.25)
    assert short.get("gone", "expired") == "expired" and db.exists("short:gone") == 0


class Clock:
    """A class with a cached property (at module level: walrus pickles the instance into its key)."""

    ticks = 0

    def tick(self) -> int:
        Clock.ticks += 1
        return Clock.ticks


def test_cache_decorators(db: walrus.Database) -> None:
    cache = db.cache("memo")
    calls: list[tuple[Any, ...]] = []

    @cache.cached(timeout=60, metrics=True)
    def add(a: int, b: int = 0) -> int:
        calls.append((a, b))
        return a + b

    assert [add(1, 2), add(1, 2), add(1, b=2), add(3)] == [3, 3, 3, 3]
    assert calls == [(1, 2), (1, 2), (3, 0)]  # positional and keyword calls are distinct keys
    assert add.metrics["hits"] == 1 and add.metrics["misses"] == 3
    key = "memo:" + add.make_key((1, 2), {})
    assert 58 <= db.ttl(key) <= 60 and len(list(cache.keys())) == 3
    assert add.bust(1, 2) == 1 and add(1, 2) == 3 and calls[-1] == (1, 2)

    Clock.now = cache.cached_property()(Clock.tick)  # type: ignore[attr-defined]
    clock = Clock()
    first = clock.now
    assert clock.now == first and Clock.ticks == first
    del clock.now
    assert clock.now == first + 1

    @cache.cache_async(timeout=30)
    def slow(x: int) -> int:
        calls.append(("async", x))
        return x * 2

    assert slow(21)(timeout=10) == 42 and slow(21)(timeout=10) == 42
    assert calls.count(("async", 21)) == 1


# ---- Counter, RateLimit, BitField, BloomFilter ------------------------------------------------

def test_counter_and_rate_limit(db: walrus.Database) -> None:
    counter = db.counter("hits")
    assert counter.value() == 0 and counter.incr() == 1 and counter.incr(9) == 10 and counter.decr(3) == 7
    counter += 5
    counter -= db.counter("hits2") + 2
    assert counter.value() == 10 and db.get("counter:hits") == b"10"
    rl = db.rate_limit("rl", limit=3, per=60)
    assert [rl.limit("alice") for _ in range(5)] == [False, False, False, True, True]
    assert rl.limit("bob") is False and len(db.List("rl:alice")) == 3 and 119000 < db.pttl("rl:alice") <= 120000

    @rl.rate_limited(key_function=lambda user: user)
    def act(user: str) -> str:
        return "done"

    assert act("carol") == "done" and act("carol") == "done" and act("carol") == "done"
    with pytest.raises(RateLimitException):
        act("carol")
    fast = db.rate_limit("fast", limit=1, per=0.5)
    assert fast.limit("k") is False and fast.limit("k") is True
    time.sleep(0.6)
    assert fast.limit("k") is False


def test_bitfield_and_bloom_filter(db: walrus.Database) -> None:
    bf = db.bit_field("bits")
    assert bf.set("u8", 0, 255).get("u8", 0).incrby("u8", 0, 2).execute() == [0, 255, 1]
    assert bf.incrby("u8", 8, 250, "SAT").incrby("u8", 8, 10).execute() == [250, 255]
    assert bf.incrby("u4", 16, 20, "FAIL").execute() == [None]
    assert list(bf.get("i8", 8)) == [-1]
    bf[24:32] = 0b10100000
    assert bf[24:32] == 160 and bf[24:26] == 2 and bf.get_raw() == b"\x01\xff\x00\xa0"
    del bf[8:16]
    assert bf.get_raw() == b"\x01\x00\x00\xa0"
    assert bf.bit_count() == 3 and bf.bit_count(3, 3) == 2
    assert bf.get_bit(7) == 1 and bf.set_bit(7, 0) == 1 and bf.get_bit(7) == 0
    bf.set_raw(b"\xf0")
    assert bf[0:4] == 15 and bf.bit_count() == 4
    with pytest.raises(ValueError):
        bf[0:2] = 4
    bloom = db.bloom_filter("bloom", size=1024)
    words = [f"word{i}" for i in range(50)]
    for w in words:
        bloom.add(w)
    assert all(w in bloom for w in words) and len(bloom) == 1024
    assert sum(f"other{i}" in bloom for i in range(200)) < 10  # 200 bits of 8192 set: rare false positives
    assert db.strlen("bloom") <= 1024


# ---- Graph, Autocomplete, Database ------------------------------------------------------------

def test_graph(db: walrus.Database) -> None:
    graph = db.graph("people")
    graph.store_many((("charlie", "friends", "huey"), ("charlie", "friends", "zaizee"),
                      ("charlie", "friends", "nuggie"), ("huey", "lives", "Kansas"),
                      ("zaizee", "lives", "Missouri"), ("nuggie", "lives", "Kansas"),
                      ("mickey", "lives", "Kansas")))
    assert db.zcard("people") == 21
    X = graph.v.X
    assert graph.search({"s": "charlie", "p": "friends", "o": X},
                        {"s": X, "p": "lives", "o": "Kansas"}) == {"X": {"huey", "nuggie"}}
    assert sorted(t["s"] for t in graph.query(p="lives", o="Kansas")) == ["huey", "mickey", "nuggie"]
    assert list(graph.query("huey", "lives", "Kansas")) == [{"s": "huey", "p": "lives", "o": "Kansas"}]
    assert [t["o"] for t in graph.query(s="charlie", p="friends")] == ["huey", "nuggie", "zaizee"]
    assert [(t["s"], t["p"]) for t in graph.query(o="Missouri")] == [("zaizee", "lives")]
    graph.delete("nuggie", "lives", "Kansas")
    assert db.zcard("people") == 18
    assert graph.search(("charlie", "friends", X), (X, "lives", "Kansas")) == {"X": {"huey"}}
    assert list(graph.query("nuggie", "lives", "Kansas")) == []


def test_autocomplete_single_words(db: walrus.Database) -> None:
    ac = db.autocomplete(namespace="ac")
    ac.store("p1", "Python programming", {"id": 1})
    ac.store("p2", "Pyramid schemes", {"id": 2})
    ac.store("p3", "Perl", {"id": 3}, obj_type="lang")
    ac.store("p1", "Python programming", {"id": 1, "v": 2})  # same title: data replaced in place
    assert [r["id"] for r in ac.search("py")] == [2, 1]  # "pyr" < "pyt": the title's letters score it
    assert list(ac.search("pyt")) == [{"id": 1, "v": 2}]
    assert [r["id"] for r in ac.search("p")] == [3, 2, 1]
    assert [r["id"] for r in ac.search("p", limit=2)] == [3, 2]
    assert list(ac.search("prog")) == [{"id": 1, "v": 2}] and list(ac.search("zzz")) == []
    assert ac.exists("p3", "lang") and not ac.exists("p3")
    ac.remove("p2")
    assert [r["id"] for r in ac.search("py")] == [1] and db.exists("ac:s:pyra") == 0
    assert sorted(ac.list_titles()) == ["Perl", "Python programming"]
    ac.flush()
    assert db.keys("ac:*") == []


def test_autocomplete_phrases_and_boosts(db: walrus.Database) -> None:
    ac = db.autocomplete(namespace="ac")
    for i, title in enumerate(["web crawler", "web server", "crawler kit", "server farm"]):
        ac.store(f"t{i}", title, {"i": i}, obj_type="a" if i % 2 else "b")
    assert [r["i"] for r in ac.search("web cr")] == [0]
    assert sorted(r["i"] for r in ac.search("server")) == [1, 3]
    first = [r["i"] for r in ac.search("web")]
    ac.boost_object(obj_type="a", multiplier=100)
    assert [r["i"] for r in ac.search("web")] == [1, 0] and first == [0, 1]
    cached = db.keys("ac:c:*")  # ZINTERSTORE results of the phrase and the boosted search, cached
    assert len(cached) == 2 and all(0 < db.ttl(k) <= 600 for k in cached)


def test_database(db: walrus.Database) -> None:
    db.Hash("h")["f"] = 1
    db.List("l").append(1)
    db.Set("s").add(1)
    db.ZSet("z")["m"] = 1
    db["str"] = "v"
    assert [type(db.get_key(k)).__name__ for k in ("h", "l", "s", "z")] == ["Hash", "List", "Set", "ZSet"]
    assert db.get_key("str") == b"v"
    with pytest.raises(KeyError):
        db.get_key("absent")
    assert len(db) == 5 and sorted(db) == [b"h", b"l", b"s", b"str", b"z"] and sorted(db.search("s*")) == [b"s", b"str"]
    assert db.hash_exists("h") == 1 and db.get_temp_key().startswith("temp.")
    with db.atomic() as txn:
        txn.pipe.incr("n")
        txn.pipe.incr("n")
        assert db.get("n") is None  # queued, not yet run
    assert db.get("n") == b"2"
    with pytest.raises(ZeroDivisionError):
        with db.atomic() as txn:
            txn.pipe.set("never", 1)
            1 / 0
    assert db.exists("never") == 0
    db.List("l").expire(100)
    assert 99 <= db.ttl("l") <= 100
    db.List("l").expire()
    assert db.ttl("l") == -1
    db.List("l").pexpire(5000)
    assert 4900 < db.pttl("l") <= 5000
    db.Set("s").clear()
    assert db.exists("s") == 0


# ---- Models and full-text search ------------------------------------------------------------

def make_models(database: walrus.Database) -> tuple[type[walrus.Model], type[walrus.Model]]:
    class User(walrus.Model):
        __database__ = database
        __namespace__ = "app"
        id = walrus.AutoIncrementField()
        name = walrus.TextField(index=True)
        team = walrus.TextField(index=True)
        age = walrus.IntegerField(index=True)
        admin = walrus.BooleanField(default=False, index=True)
        prefs = walrus.JSONField(default=dict)
        tags = walrus.SetField()
        log = walrus.ListField()

    class Note(walrus.Model):
        __database__ = database
        __namespace__ = "app"
        id = walrus.AutoIncrementField()
        text = walrus.TextField(fts=True)

    return User, Note


def test_models(db: walrus.Database) -> None:
    User, _ = make_models(db)
    people = [("ann", "red", 31, True), ("bob", "red", 25, False), ("cat", "blue", 40, False),
              ("dan", "blue", 19, True)]
    for name, team, age, admin in people:
        User.create(name=name, team=team, age=age, admin=admin, prefs={"n": name})
    assert User.count() == 4 and sorted(u.name for u in User.all()) == ["ann", "bob", "cat", "dan"]
    ann = User.get(User.name == "ann")
    assert (ann.id, ann.team, ann.age, ann.admin, ann.prefs) == (1, "red", 31, True, {"n": "ann"})
    assert User.load(3).name == "cat"
    with pytest.raises(KeyError):
        User.load(99)
    with pytest.raises(ValueError):
        User.get(User.team == "red")
    names = lambda q: sorted(u.name for u in q)  # noqa: E731
    assert names(User.query(User.team == "red")) == ["ann", "bob"]
    assert names(User.query(User.team != "red")) == ["cat", "dan"]
    assert names(User.query((User.team == "blue") & (User.admin == True))) == ["dan"]  # noqa: E712
    assert names(User.query((User.name == "bob") | (User.name == "cat"))) == ["bob", "cat"]
    assert [u.name for u in User.query(order_by=User.age)] == ["dan", "bob", "ann", "cat"]
    assert [u.name for u in User.query(User.team == "blue", order_by=User.name.desc())] == ["dan", "cat"]
    assert [u.name for u in User.query(order_by=User.name)] == ["ann", "bob", "cat", "dan"]
    ann.tags.add("x", "y")
    ann.log.extend(["joined", "posted"])
    assert User.load(1).tags.members() == {b"x", b"y"} and User.load(1).log[:] == [b"joined", b"posted"]
    assert ann.incr(User.age, 2) == 33 and User.load(1).age == 33
    ann.team = "blue"
    ann.save()
    assert names(User.query(User.team == "blue")) == ["ann", "cat", "dan"]
    assert names(User.query(User.team == "red")) == ["bob"]
    User.load(2).delete()
    assert User.count() == 3 and list(User.query(User.team == "red")) == []
    assert not db.exists("app|user:team.absolute.red")
    User.query_delete(User.admin == True)  # noqa: E712
    assert [u.name for u in User.all()] == ["cat"] and not db.exists("app|user:container.tags.app|user:id.1")
    assert User.create(name="eve").id == 5  # the sequence is a plain INCR and never goes back


def test_model_field_types(db: walrus.Database) -> None:
    class Event(walrus.Model):
        __database__ = db
        key = walrus.UUIDField(primary_key=True)
        weight = walrus.FloatField(index=True)
        when = walrus.DateTimeField()
        day = walrus.DateField()
        raw = walrus.ByteField()
        payload = walrus.PickledField()
        meta = walrus.HashField()
        ranks = walrus.ZSetField()

    when = datetime.datetime(2026, 12, 7, 13, 30, 15, 250000)
    for w in (2.5, -1.0, 10.0, 0.125):
        Event.create(weight=w, when=when, day=when.date(), raw=b"\x00\xff", payload={"w": w, "s": {1, 2}})
    assert [e.weight for e in Event.query(order_by=Event.weight)] == [-1.0, 0.125, 2.5, 10.0]
    assert [e.weight for e in Event.query(order_by=Event.weight.desc())] == [10.0, 2.5, 0.125, -1.0]
    e = Event.get(Event.weight == 2.5)
    assert isinstance(e.key, uuid.UUID) and Event.load(e.key).weight == 2.5
    assert (e.when, e.day, e.raw, e.payload) == (when, when.date(), b"\x00\xff", {"w": 2.5, "s": {1, 2}})
    e.meta.update(a=1)
    e.ranks.add({"x": 2, "y": 1})
    assert e.meta.as_dict() == {b"a": b"1"} and e.ranks[:] == [b"y", b"x"]
    assert e.incr(Event.weight, 0.25) == 2.75 and Event.get(Event.weight == 2.75).key == e.key
    assert [x.weight for x in Event.query(Event.weight != 2.75, order_by=Event.weight)] == [-1.0, 0.125, 10.0]
    e.delete()
    assert Event.count() == 3 and not db.exists(e.meta.key) and not db.exists(e.ranks.key)


def test_full_text_search(db: walrus.Database) -> None:
    _, Note = make_models(db)
    Note.create(text="the quick brown fox jumps")
    Note.create(text="a lazy brown dog sleeps")
    Note.create(text="foxes and dogs are friends")
    found = lambda q: sorted(n.id for n in Note.query(Note.text.match(q)))  # noqa: E731
    assert found("brown") == [1, 2] and found("fox") == [1, 3] and found("brown fox") == [1]
    assert found("dogs") == [2, 3] and found("lazy dog") == [2] and found("cat") == []
    index = db.Index("docs")
    index.add("d1", "Redis keeps data in memory", kind="db")
    index.add("d2", "SQLite keeps data on disk")
    index.add("d3", "memory and disk are both storage")
    assert sorted(d["content"] for d in index.search("data")) == [
        "Redis keeps data in memory", "SQLite keeps data on disk"]
    assert [d["content"] for d in index.search("data disk")] == ["SQLite keeps data on disk"]
    assert [d["content"] for d in index.search("keeps")] == []  # a stopword: never indexed
    assert [d["kind"] for d in index.search("redis")] == ["db"]
    assert sorted(d["content"][:5] for d in index.search("memory OR sqlite")) == ["Redis", "SQLit", "memor"]
    index.remove("d1")
    assert [d["content"] for d in index.search("memory")] == ["memory and disk are both storage"]


# ---- seeded random sequences of walrus calls, memd and redis-server side by side ----------------

FIELDS = ["a", "b", "c", "10", ""]
VALUES = ["x", "y", "1", "-7", "2.5", "", "9223372036854775807"]
SCORES = [0, 1, -1, 2.5, 0.1, 1e20, -3.75, float("inf"), float("-inf")]
BOUNDS = [0, 1, 2.5, "(1", "(0", "-inf", "+inf", -1]


def random_call(rng: random.Random) -> tuple[str, Any]:
    """One walrus call on a random key, as (description, function of a Database)."""
    def key(kind: str) -> str:
        """Two keys of each type; one call in ten picks any key (a wrong-type error, most often)."""
        return rng.choice("hlsz") + rng.choice("12") if rng.random() < 0.1 else kind + rng.choice("12")

    h, lk, l2, sk, s2, z = key("h"), key("l"), key("l"), key("s"), key("s"), key("z")
    f, v, sc = rng.choice(FIELDS), rng.choice(VALUES), rng.choice(SCORES)
    i, j = rng.randint(-5, 5), rng.randint(-5, 5)
    b1, b2 = rng.choice(BOUNDS), rng.choice(BOUNDS)
    fields = rng.sample(FIELDS, rng.randint(1, 3))
    calls: list[tuple[str, Any]] = [
        (f"Hash({h})[{f}]={v}", lambda d: d.Hash(h).__setitem__(f, v)),
        (f"Hash({h}).update", lambda d: d.Hash(h).update({x: v for x in fields}).as_dict()),
        (f"Hash({h})[{fields}]", lambda d: d.Hash(h)[tuple(fields)]),
        (f"del Hash({h})[{f}]", lambda d: d.Hash(h).__delitem__(f)),
        (f"Hash({h}).incr({f},{i})", lambda d: d.Hash(h).incr(f, i)),
        (f"Hash({h}).incr_float({f},{sc})", lambda d: d.Hash(h).incr_float(f, sc)),
        (f"Hash({h}).setnx({f})", lambda d: d.Hash(h).setnx(f, v)),
        (f"Hash({h}) all", lambda d: (d.Hash(h).as_dict(), len(d.Hash(h)), f in d.Hash(h))),
        (f"List({lk}).append({v})", lambda d: d.List(lk).append(v)),
        (f"List({lk}).prepend({v})", lambda d: d.List(lk).prepend(v)),
        (f"List({lk}).extend", lambda d: d.List(lk).extend(fields)),
        (f"List({lk}).insert({v},{f})", lambda d: d.List(lk).insert(v, f, rng_where)),
        (f"List({lk})[{i}]", lambda d: d.List(lk)[i]),
        (f"List({lk})[{i}:{j}]", lambda d: d.List(lk)[i:j]),
        (f"List({lk})[{i}]={v}", lambda d: d.List(lk).__setitem__(i, v)),
        (f"del List({lk})[{i}]", lambda d: d.List(lk).__delitem__(i)),
        (f"del List({lk})[{v}]", lambda d: d.List(lk).__delitem__(v)),
        (f"del List({lk})[{i}:{j}]", lambda d: d.List(lk).__delitem__(slice(i, j))),
        (f"List({lk}).popleft", lambda d: d.List(lk).popleft()),
        (f"List({lk}).popright", lambda d: d.List(lk).popright()),
        (f"List({lk}).move_tail({l2})", lambda d: d.List(lk).move_tail(l2)),
        (f"List({lk}) all", lambda d: (d.List(lk).as_list(), len(d.List(lk)))),
        (f"Set({sk}).add", lambda d: d.Set(sk).add(*fields)),
        (f"Set({sk}).remove", lambda d: d.Set(sk).remove(*fields)),
        (f"Set({sk}) ops {s2}",
         lambda d: (d.Set(sk) & d.Set(s2), d.Set(sk) | d.Set(s2), d.Set(sk) - d.Set(s2))),
        (f"Set({sk}).interstore({s2})", lambda d: d.Set(sk).interstore(s2, d.Set(s2), d.Set(sk)).members()),
        (f"Set({sk}).unionstore({s2})", lambda d: d.Set(sk).unionstore(s2, d.Set(s2)).members()),
        (f"Set({sk}).diffstore({s2})", lambda d: d.Set(sk).diffstore(s2, d.Set(s2)).members()),
        (f"Set({sk}) all", lambda d: (d.Set(sk).members(), len(d.Set(sk)), f in d.Set(sk))),
        (f"ZSet({z}).add", lambda d: d.ZSet(z).add({x: sc for x in fields})),
        (f"ZSet({z})[{f}]={sc}", lambda d: d.ZSet(z).__setitem__(f, sc)),
        (f"ZSet({z}).incr({f},{sc})", lambda d: d.ZSet(z).incr(f, sc)),
        (f"ZSet({z}).remove", lambda d: d.ZSet(z).remove(*fields)),
        (f"ZSet({z})[{i}:{j}]", lambda d: pairs(d.ZSet(z)[i:j, True])),
        (f"ZSet({z}).rank({f})",
         lambda d: (d.ZSet(z).rank(f), d.ZSet(z).rank(f, reverse=True), d.ZSet(z).score(f))),
        (f"ZSet({z}).count({b1},{b2})", lambda d: d.ZSet(z).count(b1, b2)),
        (f"ZSet({z}).range_by_score({b1},{b2})",
         lambda d: pairs(d.ZSet(z).range_by_score(b1, b2, start=0 if i < 0 else i, num=j, with_scores=True,
                                                  reverse=i % 2 == 0))),
        (f"ZSet({z}).range({i},{j})", lambda d: d.ZSet(z).range(i, j, reverse=j % 2 == 0)),
        (f"ZSet({z}).range_by_lex",
         lambda d: d.ZSet(z).range_by_lex("[" + min(fields), "(" + max(fields) + "z")),
        (f"ZSet({z}) all", lambda d: (pairs(d.ZSet(z).as_items()), len(d.ZSet(z)))),
        (f"sort({lk})", lambda d: d.List(lk).sort(ordering=rng_order, limit=j if i >= 0 else None,
                                                 offset=i if i >= 0 else None)),
        (f"clear({lk})", lambda d: d.List(lk).clear().key),
    ]
    rng_where = rng.choice(["before", "after"])
    rng_order = rng.choice(["ASC", "DESC"])
    return rng.choice(calls)


def outcome(database: walrus.Database, call: Any) -> Any:
    """A call's result, normalised (sets sorted), or its exception's type and text."""
    try:
        result = call(database)
    except redis.ResponseError as e:
        return ("error", str(e))
    if isinstance(result, tuple):
        return tuple(sorted(r) if isinstance(r, set) else r for r in result)
    return sorted(result) if isinstance(result, set) else result


@pytest.mark.parametrize("protocol", [2, 3])
@pytest.mark.parametrize("seed", range(4))
def test_random_call_sequences(memd_daemon: Daemon, redis_socket: str, seed: int, protocol: int) -> None:
    """Seeded sequences of container calls give memd's and redis-server's answers, step by step."""
    rng = random.Random(seed * 10 + protocol)
    ours, theirs = connect(memd_daemon.socket, protocol), connect(redis_socket, protocol)
    ours.flushall()
    theirs.flushall()
    for step in range(250):
        what, call = random_call(rng)
        assert outcome(ours, call) == outcome(theirs, call), f"seed {seed} step {step}: {what}"
    assert sorted(ours.keys()) == sorted(theirs.keys())
    ours.close()
    theirs.close()


# ---- durability -------------------------------------------------------------------------------

def write_everything(database: walrus.Database) -> None:
    database.Hash("h").update({"a": 1, "b": "two"})
    walrus.List.from_list(database, "l", ["x", "y", "z"]).insert_before("w", "x")
    other = walrus.Set.from_set(database, "o", {"2", "3"})
    walrus.Set.from_set(database, "s1", {"1", "2", "3"}).interstore("s2", other)
    walrus.ZSet.from_dict(database, "z", {"a": 1.5, "b": -2, "c": 1e20}).incr("a", 1)
    database.cache("c").set("obj", {"deep": [1, 2, 3]}, timeout=3600)
    database.graph("g").store("me", "likes", "memd")
    database.counter("n").incr(41)
    database.bit_field("bits").set("u16", 0, 513).execute()
    User, _ = make_models(database)
    User.create(name="ann", team="red", age=30, prefs={"k": [1]}).tags.add("t")


def check_everything(database: walrus.Database) -> None:
    assert database.Hash("h").as_dict() == {b"a": b"1", b"b": b"two"}
    assert database.List("l").as_list() == [b"w", b"x", b"y", b"z"]
    assert database.Set("s2").members() == {b"2", b"3"}
    assert pairs(database.ZSet("z").as_items()) == [(b"b", -2.0), (b"a", 2.5), (b"c", 1e20)]
    assert database.cache("c").get("obj") == {"deep": [1, 2, 3]} and 3500 < database.ttl("c:obj") <= 3600
    assert list(database.graph("g").query(s="me")) == [{"s": "me", "p": "likes", "o": "memd"}]
    assert database.counter("n").value() == 41
    assert database.bit_field("bits")[0:16] == 513
    User, _ = make_models(database)
    ann = User.get(User.team == "red")
    assert (ann.name, ann.age, ann.prefs, ann.tags.members()) == ("ann", 30, {"k": [1]}, {b"t"})


def test_survives_restart_and_crash() -> None:
    """What walrus wrote is there after a clean restart, and after SIGKILL when every write is fsynced."""
    d = Daemon(fsync="always").start()
    try:
        database = connect(d.socket)
        write_everything(database)
        check_everything(database)
        database.close()
        assert d.stop(signal.SIGTERM, timeout=20) == 0, d.log()
        d.start()
        database = connect(d.socket)
        check_everything(database)
        database.Hash("h")["c"] = "after"
        database.List("l").popleft()
        database.close()
        d.kill()  # SIGKILL: nothing flushed at exit; the WAL is all there is
        d.start()
        database = connect(d.socket)
        assert database.Hash("h")["c"] == b"after" and database.List("l").as_list() == [b"x", b"y", b"z"]
        del database.Hash("h")["c"]
        database.List("l").prepend("w")
        check_everything(database)
        database.close()
    finally:
        d.cleanup()
