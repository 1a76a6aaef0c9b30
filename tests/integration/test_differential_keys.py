"""Differential test of the generic key commands against a real redis-server 7.0.

RENAME RENAMENX COPY TOUCH OBJECT SORT SORT_RO (and the EXPIRE family's
flags on every type), compared byte for byte as in
test_differential_handlers.py, whose Pair, corpus runner and random command
generator this file reuses: a fixed corpus of edge cases, then seeded random
sequences mixing these commands with every data type's commands, on RESP2 and
RESP3, in-process and (with MULTI/EXEC and pipelines) against a real daemon.

``COPY ... DB n`` copies into another of the 16 databases, as in Redis (the
databases themselves are test_differential_databases.py's).

RANDOMKEY is random, so it is checked by named properties, not equality:
*only live keys* (its key is in KEYS *), *none on an empty keyspace* (nil
exactly when Redis, holding the same keys, answers nil) and *all keys
eventually seen* (every key of a keyspace split between SQLite and the
buffer comes up within a bounded number of draws).

A durability test checks that RENAME, COPY and SORT ... STORE survive a
restart that replays the WAL (no final flush), and one that flushed half.

redis-server is a hard requirement: without it this test fails, it does not skip.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import memd.commands.keyops  # noqa: F401  (each module registers its commands)
import memd.commands.sort  # noqa: F401
import memd.engine.keyops
from memd.engine.engine import Engine
from tests.integration.diffkit import (
    corpus_in_process,
    random_in_process,
    random_over_daemon,
    redis_server,
    scan_keys,
    split_corpus,
    with_engine_pair,
)
from tests.integration.test_differential_handlers import MemdSide, Pair, _random_command, cmd, parse
from tests.integration.test_differential_server import Pair as ServerPair
from tests.integration.test_differential_server import memd_socket  # noqa: F401  (a fixture)

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(180)]

SEEDS = int(os.environ.get("MEMD_DIFF_SEEDS", "10"))
STEPS = 250


@pytest.fixture(scope="module")
def redis_socket() -> Iterator[str]:
    """redis-server 7.0 with its 16 databases, as memd has."""
    with redis_server("rkeys-") as path:
        yield path


# ---- comparing ---------------------------------------------------------------------------------

def _unordered_sort(args: list[bytes]) -> bool:
    """SORT ... BY <no star> without STORE on a set answers in the set's own (unspecified) order.

    Such replies are compared as multisets, or by length when LIMIT cut them (lists and sorted
    sets, whose nosort order is specified, are pinned by the corpus)."""
    up = [a.lower() for a in args]
    if up[0] not in (b"sort", b"sort_ro") or b"store" in up:
        return False
    return any(a == b"by" and b"*" not in args[i + 1] for i, a in enumerate(up[:-1]))


# Redis checks ``errno == ERANGE`` after SORT's strtod without clearing errno first, so an earlier
# command that left ERANGE behind (an overflowing number argument) makes SORT fail on any list. A
# ZADD XX on a missing key parses its score through string2d, which clears errno, and changes nothing:
# sent to Redis alone before each SORT, it makes Redis's answer depend on the SORT alone.
CLEAR_ERRNO = [b"ZADD", b"{errno}", b"XX", b"0", b"m"]


def _is_sort(args: list[bytes]) -> bool:
    return args[0].lower() in (b"sort", b"sort_ro")


class KeysPair(Pair):
    """The handlers' pair, aware of unordered SORT replies and checking RANDOMKEY's properties."""

    def run(self, args: list[bytes], where: str) -> None:
        if args[0].lower() == b"randomkey":
            self.check_randomkey(where)
            return
        if _is_sort(args):
            assert self.redis.call(CLEAR_ERRNO) == b":0\r\n"
        if not _unordered_sort(args):
            super().run(args, where)
            return
        self.count += 1
        expected, got = self.redis.call(args), self.memd.call(args)
        if expected.startswith(b"*") and got.startswith(b"*"):
            a, b = parse(expected)[1], parse(got)[1]
            if b"limit" in (x.lower() for x in args):  # which elements LIMIT keeps depends on the set order
                ok = len(a) == len(b)
            else:
                ok = sorted(map(repr, a)) == sorted(map(repr, b))
        else:
            ok = expected == got
        if not ok:
            self.mismatches.append(f"[{where} resp{self.protocol}] {args!r}\n    redis: {expected!r}\n"
                                   f"    memd:  {got!r}")

    def check_randomkey(self, where: str) -> None:
        """Only live keys; nil exactly when the keyspace is empty."""
        self.count += 1
        self.reap_redis()
        redis_empty = self.redis.call([b"RANDOMKEY"]) in (b"$-1\r\n", b"_\r\n")
        got = self.memd.call([b"RANDOMKEY"])
        if got in (b"$-1\r\n", b"_\r\n"):
            if not redis_empty:
                self.mismatches.append(f"[{where}] RANDOMKEY answered nil on a non-empty keyspace")
            return
        kind, key = parse(got)
        live = {item[1] for item in parse(self.memd.call([b"KEYS", b"*"]))[1]}
        if key not in live:
            self.mismatches.append(f"[{where}] RANDOMKEY answered {key!r}, not a live key ({sorted(live)})")


async def _run(redis_socket: str, tmp_path: Path, protocol: int, body: Any) -> None:
    await with_engine_pair(KeysPair, redis_socket, tmp_path, protocol, body)


# ---- fixed corpus -----------------------------------------------------------------------------------

CORPUS = r"""
# RENAME and RENAMENX over every type, TTLs, same key, errors
SET a 1
RENAME a b
GET a
GET b
RENAME nokey b
RENAMENX nokey b
RENAME b b
RENAMENX b b
RENAME nokey nokey
RENAMENX nokey nokey
SET c 2
RENAMENX b c
RENAMENX b d
GET d
EXISTS b
SET e v EX 100
RENAME e f
TTL f
TTL e
SET g v
RENAME d g
GET g
SET h v EX 100
RENAME g h
TTL h
GET h
RPUSH l a b c d e
LPUSH l z
RPOP l
LTRIM l 1 -2
RENAME l l2
LRANGE l2 0 -1
LLEN l2
TYPE l
RPUSH l2 tail
LPUSH l2 head
LRANGE l2 0 -1
HSET hh f v f2 v2
EXPIRE hh 100
RENAME hh hh2
HGETALL hh2
TTL hh2
HDEL hh2 f
HGETALL hh2
SADD ss a b c
RENAME ss hh2
TYPE hh2
SMEMBERS hh2
TTL hh2
ZADD zz 1 a 2 b -inf c
RENAME zz z2
ZRANGE z2 0 -1 WITHSCORES
ZSCORE z2 c
RENAMENX z2 hh2
RENAMENX z2 fresh
ZRANGE fresh 0 -1 WITHSCORES
DBSIZE
RENAME
RENAME a
RENAMENX a b c
# COPY
SET s v EX 100
COPY s s2
GET s2
TTL s2
COPY s s2
COPY s s2 REPLACE
COPY s s
COPY nokey s
COPY nokey nokey
COPY s s DB 0
COPY s t DB 0
GET t
COPY s t2 DB 1
COPY s t2 DB -1
COPY s t2 DB abc
COPY s t2 DB 99999999999
COPY s t2 DB 2147483648
COPY s t2 DB
COPY s t2 BOGUS
COPY s t2 REPLACE REPLACE
COPY s t2 replace db 0
COPY s t2 DB 1 BOGUS
COPY s s BOGUS
EXISTS t2
RPUSH l a b c
LPOP l
COPY l l3
LRANGE l3 0 -1
RPUSH l3 d
LRANGE l 0 -1
LRANGE l3 0 -1
HSET h f v
COPY h s REPLACE
TYPE s
HGETALL s
TTL s
SADD st 1 2 3
COPY st st2
SMEMBERS st2
SREM st 1
SMEMBERS st2
ZADD z 1 a 2.5 b
COPY z z2
ZRANGE z2 0 -1 WITHSCORES
COPY
COPY a
# TOUCH and RANDOMKEY
TOUCH nokey
RANDOMKEY
SET a 1
RANDOMKEY
TOUCH a a nokey
RPUSH l x
TOUCH a l
TOUCH
RANDOMKEY x
# EXPIRE family flags on collections, PERSIST, EXPIRETIME
RPUSH l a
HSET h f v
EXPIRE l 100 NX
EXPIRE l 200 NX
PEXPIRE l 300000 XX
TTL l
EXPIRE l 50 GT
EXPIRE l 500 GT
EXPIRE l 600 LT
EXPIRE l 400 LT
TTL l
EXPIRE h 100 XX
EXPIRE h 100 LT
TTL h
EXPIRE h 50 GT
EXPIRE h 200 GT
PEXPIREAT h 4102444800000 NX
PEXPIRETIME h
EXPIRETIME h
EXPIREAT h 4102444801 GT
EXPIRETIME h
PERSIST h
PERSIST h
EXPIRETIME h
EXPIRE l 0 XX
EXISTS l
SADD st m
PEXPIRE st -1
EXISTS st
EXPIRE h 10 NX XX
EXPIRE h 10 LT GT
EXPIRE h 10 ZZ
# OBJECT
SET int 123
SET neg -5
SET zero 0
SET i9999 9999
SET i10000 10000
SET big 12345678901234567890
SET maxll 9223372036854775807
SET lead 0123
SET plus +1
SET emb hello
SET e44 abcdefghijabcdefghijabcdefghijabcdefghijabcd
SET r45 abcdefghijabcdefghijabcdefghijabcdefghijabcde
SET empty ""
OBJECT ENCODING int
OBJECT ENCODING neg
OBJECT ENCODING big
OBJECT ENCODING maxll
OBJECT ENCODING lead
OBJECT ENCODING plus
OBJECT ENCODING emb
OBJECT ENCODING e44
OBJECT ENCODING r45
OBJECT ENCODING empty
OBJECT REFCOUNT int
OBJECT REFCOUNT zero
OBJECT REFCOUNT i9999
OBJECT REFCOUNT i10000
OBJECT REFCOUNT neg
OBJECT REFCOUNT emb
OBJECT REFCOUNT nokey
OBJECT ENCODING nokey
OBJECT IDLETIME nokey
OBJECT FREQ int
OBJECT FREQ nokey
RPUSH l a 1 2
OBJECT ENCODING l
OBJECT REFCOUNT l
SADD s1 1 2 -3
OBJECT ENCODING s1
SADD s2 1 a
OBJECT ENCODING s2
SADD s3 01
OBJECT ENCODING s3
SADD s4 9223372036854775807
OBJECT ENCODING s4
HSET h1 f v
OBJECT ENCODING h1
HSET h2 f 01234567890123456789012345678901234567890123456789012345678901234
OBJECT ENCODING h2
HSET h3 0123456789012345678901234567890123456789012345678901234567890123 v
OBJECT ENCODING h3
ZADD z1 1 a
OBJECT ENCODING z1
ZADD z2 1 01234567890123456789012345678901234567890123456789012345678901234
OBJECT ENCODING z2
ZADD z3 1 0123456789012345678901234567890123456789012345678901234567890123
OBJECT ENCODING z3
OBJECT HELP
OBJECT help
OBJECT HELP x
OBJECT
OBJECT foo
OBJECT foo bar
OBJECT ENCODING
OBJECT ENCODING a b
OBJECT encoding int
OBJECT Refcount int
OBJECT IDLETIME
OBJECT FREQ
# SORT: numbers, LIMIT, ASC/DESC, ALPHA
RPUSH l 3 1 2 10 -5 2
SORT l
SORT l ASC
SORT l DESC
SORT l ALPHA
SORT l ALPHA DESC
SORT l DESC ASC
SORT l LIMIT 0 2
SORT l LIMIT 1 -1
SORT l LIMIT 1 -2
SORT l LIMIT -1 2
SORT l LIMIT 10 2
SORT l LIMIT 5 10
SORT l LIMIT 2 0
SORT l LIMIT 0 0
SORT l LIMIT a 1
SORT l LIMIT 1 a
SORT l LIMIT 1
SORT l LIMIT 9223372036854775807 9223372036854775807
SORT l LIMIT -9223372036854775808 -9223372036854775808
SORT l DESC LIMIT 1 3
SORT l BOGUS
SORT l ALPHA BOGUS
SORT nokey
SORT nokey LIMIT 0 1
SORT nokey DESC ALPHA
SORT_RO l
SORT_RO l DESC LIMIT 0 3
SORT_RO l STORE x
SORT_RO nokey
SORT
SORT_RO
# SORT BY and GET patterns
RPUSH l 3 1 2 10 -5
MSET w_3 30 w_1 10 w_2 20 w_10 5 w_-5 100
SORT l BY w_*
SORT l BY w_* DESC
SORT l BY w_* LIMIT 1 2
SORT l BY w_* GET #
SORT l BY w_* GET # GET w_*
SORT l GET w_* GET nokey_* GET constant GET #
SORT l GET w_*->x
SORT l BY nosort
SORT l BY nosort DESC
SORT l BY nosort LIMIT 1 2
SORT l BY nosort DESC LIMIT 1 2
SORT l BY nosort LIMIT 4 10
SORT l BY nosort DESC LIMIT 10 2
SORT l BY nosort GET w_*
SORT l BY # GET #
SORT l BY nosort BY w_*
SORT l BY w_* BY nosort
SORT l BY
SORT l GET
HSET o_1 name one rank 5
HSET o_2 name two rank 3
HSET o_3 name three rank 4
HSET o_10 name ten rank 1
HSET o_-5 name minus rank 2
SORT l BY o_*->rank
SORT l BY o_*->rank GET o_*->name
SORT l BY o_*->name ALPHA GET o_*->name GET #
SORT l BY o_*->name ALPHA DESC GET o_*->name
SORT l BY o_*->nofield
SORT l BY o_*->
SORT l GET o_*->
SORT l GET o_*->name->x
SORT l BY w_*->name
SORT l GET o_*->rank GET w_*->rank
SET o_2 notahash
SORT l GET o_*->name
RPUSH wl 1
SORT l BY wl*
SET w_2 abc
SORT l BY w_*
SORT l BY w_* ALPHA
# SORT STORE
RPUSH l 3 1 2
MSET w_1 a w_2 b
SORT l STORE dst
LRANGE dst 0 -1
TYPE dst
SORT l DESC STORE dst
LRANGE dst 0 -1
SORT l GET # GET w_* STORE dst2
LRANGE dst2 0 -1
SET dst3 v EX 100
SORT l STORE dst3
TTL dst3
LRANGE dst3 0 -1
SORT l LIMIT 0 0 STORE dst3
EXISTS dst3
SORT nokey STORE dst
EXISTS dst
SORT nokey STORE nokey2
SORT l STORE l
LRANGE l 0 -1
SORT l STORE
SORT l STORE a STORE b
LRANGE b 0 -1
EXISTS a
# SORT over sets, sorted sets, wrong types and bad numbers
SADD s 5 3 1 10
SORT s
SORT s DESC
SORT s ALPHA
SORT s LIMIT 1 2
SORT s BY nosort STORE sdst
LRANGE sdst 0 -1
SORT s BY nosort DESC STORE sdst
LRANGE sdst 0 -1
SADD s2 b a c
SORT s2 ALPHA
SORT s2 ALPHA DESC LIMIT 0 2
SORT s2
SORT s2 BY nosort STORE sdst
LRANGE sdst 0 -1
ZADD z 3 a 1 b 2 c
SORT z ALPHA
SORT z ALPHA DESC
SORT z BY nosort
SORT z BY nosort DESC
SORT z BY nosort LIMIT 1 5
SORT z BY nosort DESC LIMIT 0 2
SORT z BY nosort STORE zdst
LRANGE zdst 0 -1
SORT z
ZADD zn 1 10 2 9 3 8
SORT zn
SORT zn BY nosort
SET str x
SORT str
SORT str BOGUS
SORT str LIMIT 0 1
HSET hh f v
SORT hh
SORT_RO hh
RPUSH bad a b
SORT bad
SORT bad ALPHA
SORT bad BY nosort
SORT bad LIMIT 0 1
RPUSH f " 1" "" 0x10 inf -inf 1e3 +2 .5 -0 "2 "
SORT f
RPUSH f2 " 1" "" 0x10 inf -inf 1e3 +2 .5 -0
SORT f2
SORT f2 DESC
RPUSH f3 1e-310
SORT f3
RPUSH f4 1e400
SORT f4
RPUSH f5 nan
SORT f5
RPUSH f6 "   "
SORT f6
RPUSH f7 1e-400
SORT f7
RPUSH al b B a A "" ab "a b" 1 10 9 zz
SORT al ALPHA
SORT al ALPHA DESC
SORT al ALPHA STORE adst
LRANGE adst 0 -1
"""


def corpus_blocks() -> list[list[str]]:
    return split_corpus(CORPUS)


# ---- random sequences ---------------------------------------------------------------------------------

KEYS_ = ["k0", "k1", "k2", "k3", "k4"]
NUMBERS = ["0", "1", "2", "3", "-1", "10", "2.5", "k1", "abc", ""]
SORT_BY = ["k*", "*", "k*->f1", "k*->f0", "#", "nosort", "k*->", "w*", "k*x"]
SORT_GET = ["#", "k*", "k*->f0", "k*->f1", "nokey", "*", "k*->"]


def _sort_command(rng: random.Random) -> list[str]:
    name = rng.choice(["SORT", "SORT", "SORT_RO"])
    out = [name, rng.choice(KEYS_)]
    by = rng.random() < 0.4
    alpha = rng.random() < 0.4
    if by:
        out += ["BY", rng.choice(SORT_BY)]
    if alpha and not (by and "*" in out[-1]):
        out.append("ALPHA")  # ALPHA with a real BY: ties keep Redis's unspecified set order; see the corpus
    for _ in range(rng.choice([0, 0, 1, 2])):
        out += ["GET", rng.choice(SORT_GET)]
    if rng.random() < 0.3:
        out += ["LIMIT", rng.choice(["0", "1", "-1", "3", "x"]), rng.choice(["1", "2", "-1", "0", "10"])]
    if rng.random() < 0.3:
        out.append(rng.choice(["ASC", "DESC"]))
    if name == "SORT" and rng.random() < 0.3:
        out += ["STORE", rng.choice(KEYS_)]
    if rng.random() < 0.03:
        out.append("BOGUS")
    return out


def key_command(rng: random.Random) -> list[str] | tuple[str, list[str]]:
    """A random command: one of this family's half the time, else any type's (to build mixed values)."""
    k, k2 = rng.choice(KEYS_), rng.choice(KEYS_)
    roll = rng.random()
    if roll < 0.5:
        return _random_command(rng)
    if roll < 0.58:
        return ["RPUSH", k, *rng.sample(NUMBERS, rng.randint(1, 4))]
    if roll < 0.62:
        return ["SADD", k, *rng.sample(NUMBERS, rng.randint(1, 4))]
    if roll < 0.66:
        return ["MSET", *[x for j in rng.sample(NUMBERS, 2) for x in ("k" + j, rng.choice(NUMBERS))]]
    if roll < 0.68:
        return ["HSET", "k" + rng.choice(NUMBERS), rng.choice(["f0", "f1"]), rng.choice(NUMBERS)]
    if roll < 0.75:
        return [rng.choice(["RENAME", "RENAMENX"]), k, k2]
    if roll < 0.81:
        return ["COPY", k, k2, *rng.choice([[], [], ["REPLACE"], ["DB", "0"], ["DB", rng.choice(["1", "x"])],
                                             ["REPLACE", "DB", "0"]])]
    if roll < 0.84:
        return ["TOUCH", *rng.sample(KEYS_, rng.randint(1, 3))]
    if roll < 0.86:
        return ["RANDOMKEY"]
    if roll < 0.88:
        return ["OBJECT", rng.choice(["FREQ", "HELP"]), k][: rng.choice([2, 3])]
    return _sort_command(rng)


@pytest.mark.parametrize("protocol", [2, 3])
async def test_corpus(redis_socket: str, tmp_path: Path, protocol: int) -> None:
    async def body(pair: KeysPair, engine: Engine) -> None:
        await corpus_in_process(pair, engine, corpus_blocks(), flush_every=11, after_block=scan_keys(b"3"))
    await _run(redis_socket, tmp_path, protocol, body)


@pytest.mark.parametrize("protocol", [2, 3])
async def test_random_sequences(redis_socket: str, tmp_path: Path, protocol: int) -> None:
    async def body(pair: KeysPair, engine: Engine) -> None:
        await random_in_process(pair, engine, key_command, seeds=SEEDS, steps=STEPS, flush_chance=0.04,
                                after_seed=scan_keys(b"2"), seed_base=7000)
    await _run(redis_socket, tmp_path, protocol, body)


async def test_encoding_thresholds(redis_socket: str, tmp_path: Path) -> None:
    """OBJECT ENCODING as collections grow past Redis's default listpack and intset limits."""
    async def body(pair: KeysPair, engine: Engine) -> None:
        for j in range(1, 600):
            pair.run([b"SADD", b"ints", b"%d" % j], "fill")
            pair.run([b"HSET", b"hash", b"f%d" % j, b"v"], "fill")
            if j < 140:
                pair.run([b"ZADD", b"zset", b"%d" % j, b"m%d" % j], "fill")
            if j in (1, 127, 128, 129, 139) or j in (511, 512, 513, 599):
                if j == 129:
                    await engine.flush()
                for key in (b"ints", b"hash", b"zset"):
                    pair.run([b"OBJECT", b"ENCODING", key], f"at {j}")
    await _run(redis_socket, tmp_path, 2, body)


async def test_sort_large(redis_socket: str, tmp_path: Path) -> None:
    """SORT over a list and a set split between SQLite and the buffer, BY and GET over many keys."""
    rng = random.Random(5)

    async def body(pair: KeysPair, engine: Engine) -> None:
        values = rng.sample(range(-5000, 5000), 400)
        for v in values[:200]:
            pair.run([b"RPUSH", b"big", b"%d" % v], "fill")
            pair.run([b"SET", b"w%d" % v, b"%d" % rng.randrange(10**6)], "fill")
            pair.run([b"HSET", b"h%d" % v, b"name", b"n%06d" % rng.randrange(10**6)], "fill")
        await engine.flush()
        for v in values[200:]:
            pair.run([b"RPUSH", b"big", b"%d" % v], "fill")
            pair.run([b"SADD", b"bigset", b"%d" % v], "fill")
        for line in ("SORT big", "SORT big DESC LIMIT 10 20", "SORT big BY w* GET # GET w*",
                     "SORT big BY h*->name ALPHA GET h*->name LIMIT 0 50", "SORT big ALPHA",
                     "SORT bigset", "SORT bigset BY w* LIMIT 5 5", "SORT big BY w* STORE out",
                     "LRANGE out 0 -1", "SORT bigset BY nosort STORE out2", "LRANGE out2 0 -1"):
            pair.run(cmd(line), line)
    await _run(redis_socket, tmp_path, 3, body)


# ---- RANDOMKEY: properties ---------------------------------------------------------------------------

async def test_randomkey_properties(tmp_path: Path) -> None:
    """Only live keys; every key eventually seen (split between SQLite and the buffer); nil when empty."""
    async with Engine(str(tmp_path / "data")) as engine:
        side = MemdSide(engine, 2)
        nil = b"$-1\r\n"
        assert side.call([b"RANDOMKEY"]) == nil  # empty keyspace
        keys = {b"user:%03d" % j for j in range(40)} | {b"", b"a", b"aa", b"aaa", b"\xff", b"user:"}
        for key in sorted(keys)[:30]:
            side.call([b"SET", key, b"v"])
        await engine.flush()
        for key in sorted(keys)[30:]:
            side.call([b"RPUSH", key, b"x"])
        side.call([b"SET", b"gone", b"v"])
        side.call([b"DEL", b"gone"])  # a tombstone in the buffer over nothing
        side.call([b"SET", b"expired", b"v", b"PX", b"1"])
        time.sleep(0.01)
        seen: dict[bytes, int] = {}
        for _ in range(6000):
            kind, key = parse(side.call([b"RANDOMKEY"]))
            assert key in keys, f"RANDOMKEY answered {key!r}, not a live key"
            seen[key] = seen.get(key, 0) + 1
            if len(seen) == len(keys):
                break
        assert set(seen) == keys, f"never seen: {sorted(keys - set(seen))}"
        # a keyspace of dead keys: deleted in the buffer over SQLite, and expired ones: nil
        await engine.flush()
        side.call([b"DEL", *sorted(keys)])
        assert side.call([b"RANDOMKEY"]) == nil
        side.call([b"SET", b"last", b"v"])
        assert side.call([b"RANDOMKEY"]) == b"$4\r\nlast\r\n"
        side.call([b"PEXPIRE", b"last", b"1"])
        time.sleep(0.01)
        assert side.call([b"RANDOMKEY"]) == nil
        await engine.flush()  # dead rows in SQLite, nothing in the buffer
        assert side.call([b"RANDOMKEY"]) == nil


# ---- OBJECT IDLETIME: real access times -------------------------------------------------------------

async def test_idletime_tracks_access(tmp_path: Path) -> None:
    """Reads and writes reset IDLETIME; TYPE, EXISTS, TTL, OBJECT, SCAN do not; the bounded map's floor."""
    now = [1_000_000.0]
    async with Engine(str(tmp_path / "data"), clock=lambda: now[0]) as engine:
        side = MemdSide(engine, 2)
        side.call(cmd("SET s v"))
        side.call(cmd("RPUSH l a"))
        await engine.flush()
        now[0] += 100
        assert side.call(cmd("OBJECT IDLETIME s")) == b":100\r\n"
        for line in ("TYPE s", "EXISTS s", "TTL s", "OBJECT ENCODING s", "SCAN 0", "KEYS *", "RANDOMKEY"):
            side.call(cmd(line))
        assert side.call(cmd("OBJECT IDLETIME s")) == b":100\r\n"
        assert side.call(cmd("GET s")) == b"$1\r\nv\r\n"  # from SQLite
        assert side.call(cmd("OBJECT IDLETIME s")) == b":0\r\n"
        now[0] += 30
        side.call(cmd("LRANGE l 0 -1"))
        side.call(cmd("TOUCH s"))
        now[0] += 5
        assert side.call(cmd("OBJECT IDLETIME l")) == b":5\r\n"
        assert side.call(cmd("OBJECT IDLETIME s")) == b":5\r\n"
        side.call(cmd("RENAME l l2"))
        side.call(cmd("HSET h f v"))
        now[0] += 7
        assert side.call(cmd("OBJECT IDLETIME l2")) == b":7\r\n"
        assert side.call(cmd("OBJECT IDLETIME h")) == b":7\r\n"
        await engine.flush()  # the buffer's access times go into the map with its keys
        now[0] += 2
        assert side.call(cmd("OBJECT IDLETIME h")) == b":9\r\n"
        # past the cap, the FORGET_STEP inserted first are forgotten: those read as idle since the floor
        ks = engine.keyspace
        ks.access.clear()
        ks.access_floor = now[0]
        for j in range(memd.engine.keyops.ACCESS_MAX + 1):
            ks.access[b"x%d" % j] = now[0]
        now[0] += 3
        assert side.call(cmd("GET s")) == b"$1\r\nv\r\n"  # a read from SQLite: recorded, the oldest forgotten
        assert len(ks.access) <= memd.engine.keyops.ACCESS_MAX - memd.engine.keyops.FORGET_STEP + 2
        assert b"x0" not in ks.access and b"x%d" % memd.engine.keyops.ACCESS_MAX in ks.access
        side.call(cmd("SET fresh v"))
        now[0] += 4
        assert side.call(cmd("OBJECT IDLETIME h")) == b":4\r\n"  # a lower bound: since the floor (the halving)
        assert side.call(cmd("OBJECT IDLETIME s")) == b":4\r\n"
        assert side.call(cmd("OBJECT IDLETIME fresh")) == b":4\r\n"


# ---- durability: a restart replays RENAME, COPY, SORT STORE ------------------------------------------

@pytest.mark.parametrize("flush_first", [False, True])
async def test_writes_survive_restart(tmp_path: Path, flush_first: bool) -> None:
    data = str(tmp_path / "data")
    script = ["RPUSH l 3 1 2", "LPUSH l 9", "HSET h f v g w", "SADD s a b", "ZADD z 1 a 2 b", "SET str v",
              "EXPIRE h 1000", "MSET w_1 c w_2 b w_3 a w_9 d", "SADD big a b c d", "RPUSH long 1 2 3 4 5 6"]
    after = ["RENAME h h2", "COPY l l2", "COPY s s2", "RENAMENX z z2", "COPY str str2", "RENAME str str3",
             "SORT l BY w_* ALPHA GET # STORE sorted", "SORT l STORE l", "COPY z2 h2 REPLACE",
             "SADD small x", "RENAME small big", "RPUSH short a", "COPY short long REPLACE"]
    checks = ["LRANGE l 0 -1", "LRANGE l2 0 -1", "LRANGE sorted 0 -1", "TYPE h", "TYPE h2", "ZRANGE h2 0 -1",
              "SMEMBERS s2", "ZRANGE z2 0 -1 WITHSCORES", "EXISTS z", "GET str2", "GET str3", "EXISTS str",
              "TTL h2", "SMEMBERS big", "LRANGE long 0 -1", "DBSIZE"]
    async with Engine(data) as engine:
        side = MemdSide(engine, 2)
        for line in script:
            side.call(cmd(line))
        if flush_first:
            await engine.flush()
        for line in after:
            lsn = engine.last_lsn
            side.call(cmd(line))
            assert engine.last_lsn == lsn + 1, f"{line}: one WAL record (all of its keys or none after a crash)"
        expected = [side.call(cmd(line)) for line in checks]

        async def no_final_flush() -> None:
            pass
        engine._flush_all = no_final_flush  # type: ignore[method-assign]  # a crash: the WAL alone holds them
    assert expected[0] == b"*4\r\n$1\r\n1\r\n$1\r\n2\r\n$1\r\n3\r\n$1\r\n9\r\n"
    assert expected[2] == b"*4\r\n$1\r\n3\r\n$1\r\n2\r\n$1\r\n1\r\n$1\r\n9\r\n"
    assert expected[-3:-1] == [b"*1\r\n$1\r\nx\r\n", b"*1\r\n$1\r\na\r\n"]  # nothing left of the old value
    async with Engine(data) as engine:
        assert engine.recovery_report.records > 0
        side = MemdSide(engine, 2)
        assert [side.call(cmd(line)) for line in checks] == expected
        await engine.flush()
        assert [side.call(cmd(line)) for line in checks] == expected


# ---- a real daemon: MULTI/EXEC and pipelines ----------------------------------------------------------

class DaemonPair(ServerPair):
    """The server test's pair; Redis's errno cleared before a SORT or a MULTI (see CLEAR_ERRNO)."""

    def run(self, args: list[bytes], where: str) -> None:
        if self.queued is None and (_is_sort(args) or args[0] == b"MULTI"):
            assert self.redis.call(CLEAR_ERRNO) == b":0\r\n"
        super().run(args, where)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("protocol", [2, 3])
def test_daemon_transactions(redis_socket: str, memd_socket: str, protocol: int) -> None:
    """The corpus pipelined, then random sequences with this family's commands inside MULTI/EXEC.

    Inside a transaction a SORT comes first (right after Redis's errno is cleared)."""
    pair = DaemonPair(redis_socket, memd_socket, protocol)
    try:
        for n, block in enumerate(corpus_blocks()):
            pair.run(cmd("FLUSHALL"), f"block {n}")
            lines = [cmd(line) for line in block if not line.upper().startswith(("RANDOMKEY", "OBJECT IDLETIME"))]
            if not any(_is_sort(line) for line in lines):
                pair.pipeline(lines, f"pipelined block {n}")
            else:
                for line in lines:
                    pair.run(line, f"block {n}")

        def step(rng: random.Random, where: str) -> None:
            batch: list[list[bytes]] = []
            if rng.random() < 0.3:
                batch.append([b"MULTI"])
            for _ in range(rng.randint(1, 6)):
                command = key_command(rng)
                if isinstance(command, tuple) or command[0] in ("RANDOMKEY", "DBSIZE", "SCAN"):
                    continue
                args = [a.encode("utf-8") for a in command]
                if batch and args[0] == b"OBJECT" and len(args) != (2 if args[1] == b"HELP" else 3):
                    continue  # Redis refuses a subcommand's arity while queuing; memd at EXEC
                if _unordered_sort(args) or _is_sort(args) and batch[1:]:
                    continue
                batch.append(args)
            if batch and batch[0] == [b"MULTI"]:
                batch.append([b"EXEC"])
            for args in batch:
                pair.run(args, where)
        random_over_daemon(pair, step, seeds=4, steps=150, seed_base=9000, flush_chance=0.03,
                           after_seed=scan_keys(b"5"))
    finally:
        pair.close()
