"""Differential test: memd's command handlers against a real redis-server 7.0, byte for byte.

The same command sequences go to redis-server (raw RESP over its Unix
socket, RESP2 and RESP3 connections) and to memd's handlers (a dispatcher
like the server's, replies encoded by memd's ReplyEncoder); the raw reply
bytes must be equal, error messages included. Replies whose order Redis
leaves unspecified (SMEMBERS, HGETALL, HKEYS, HVALS, KEYS) are compared
after sorting; a whole SCAN iteration is compared as a set of keys; TTLs
within a tolerance. A fixed corpus of edge cases comes first, then seeded
random sequences over a small key space (every type, wrong types, bad
arguments). memd's engine is flushed to SQLite now and then, so reads merge
layers as in production.

redis-server is a hard requirement: without it this test fails, it does not skip.
"""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest

import memd.commands.hashes  # noqa: F401  (each module registers its commands)
import memd.commands.keys  # noqa: F401
import memd.commands.lists  # noqa: F401
import memd.commands.sets  # noqa: F401
import memd.commands.strings  # noqa: F401
import memd.commands.zsets  # noqa: F401
from memd.commands import COMMANDS, Context, check_arity, unknown_command
from memd.engine.engine import Engine
from memd.errors import CommandError
from memd.resp import ReplyEncoder
from tests.integration.diffkit import (  # noqa: F401  (REDIS_SERVER and cmd: imported from here by other files)
    REDIS_SERVER,
    cmd,
    corpus_in_process,
    random_in_process,
    redis_server,
    scan_keys,
    split_corpus,
    with_engine_pair,
)

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

SEEDS = int(os.environ.get("MEMD_DIFF_SEEDS", "12"))
STEPS = 250


# ---- redis-server --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def redis_socket() -> Iterator[str]:
    with redis_server("rdiff-") as path:
        yield path


def pack(args: list[bytes]) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in args)


def read_reply(f: BinaryIO) -> bytes:
    """One complete raw reply (RESP2 or RESP3), exactly as received."""
    line = f.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError(f"truncated reply line {line!r}")
    kind = line[:1]
    if kind in b"+-:_#,(":
        return line
    n = int(line[1:-2])
    if kind in b"$=!":
        return line if n < 0 else line + f.read(n + 2)
    if kind in b"*~>%|":
        if n < 0:
            return line
        items = 2 * n if kind in b"%|" else n
        return line + b"".join(read_reply(f) for _ in range(items))
    raise ConnectionError(f"unknown reply type {line!r}")


class RedisSide:
    def __init__(self, path: str, protocol: int) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(path)
        self.f = self.sock.makefile("rb")
        if protocol == 3:
            assert self.call([b"HELLO", b"3"]).startswith(b"%")

    def call(self, args: list[bytes]) -> bytes:
        self.sock.sendall(pack(args))
        return read_reply(self.f)

    def close(self) -> None:
        self.f.close()
        self.sock.close()


class MemdSide:
    """What the server does with one command, minus the socket."""

    def __init__(self, engine: Engine, protocol: int) -> None:
        self.ctx = Context(engine=engine, protocol=protocol)
        self.encoder = ReplyEncoder(protocol)

    def call(self, args: list[bytes]) -> bytes:
        cmd = COMMANDS.get(args[0].lower())
        try:
            if cmd is None:
                raise unknown_command(args)
            check_arity(cmd, len(args) - 1)
            reply = cmd.handler(self.ctx, args[1:])
        except CommandError as exc:
            reply = exc
        return self.encoder.encode(reply)


# ---- comparing ---------------------------------------------------------------------------

def parse(raw: bytes) -> Any:
    """Raw reply -> comparable value (type byte kept, so RESP2/RESP3 shapes still differ)."""
    def one(i: int) -> tuple[Any, int]:
        end = raw.index(b"\r\n", i)
        kind, body = raw[i:i + 1], raw[i + 1:end]
        i = end + 2
        if kind in b"$=!":
            n = int(body)
            if n < 0:
                return (kind, None), i
            return (kind, raw[i:i + n]), i + n + 2
        if kind in b"*~>%|":
            n = int(body)
            if n < 0:
                return (kind, None), i
            items = []
            for _ in range(2 * n if kind in b"%|" else n):
                item, i = one(i)
                items.append(item)
            return (kind, items), i
        return (kind, body), i
    value, end = one(0)
    assert end == len(raw), raw
    return value


UNORDERED = {b"smembers", b"hkeys", b"hvals", b"keys"}
PAIRS = {b"hgetall"}
TTLS = {b"ttl", b"pttl", b"expiretime", b"pexpiretime"}


def normalise(name: bytes, raw: bytes) -> Any:
    if raw.startswith(b"-"):
        return raw
    if name in UNORDERED:
        kind, items = parse(raw)
        return kind, sorted(map(repr, items))
    if name in PAIRS:
        kind, items = parse(raw)
        return kind, sorted(repr(items[j:j + 2]) for j in range(0, len(items), 2))
    return raw


def same(name: bytes, a: bytes, b: bytes) -> bool:
    if name in TTLS and a.startswith(b":") and b.startswith(b":"):
        x, y = int(a[1:-2]), int(b[1:-2])
        if x < 0 or y < 0:
            return x == y
        tolerance = 2 if name in (b"ttl", b"expiretime") else 2000
        return abs(x - y) <= tolerance
    return normalise(name, a) == normalise(name, b)


class Pair:
    """The two sides on one protocol; mismatches are collected, not raised, to show them all."""

    def __init__(self, redis_path: str, engine: Engine, protocol: int) -> None:
        self.redis = RedisSide(redis_path, protocol)
        self.memd = MemdSide(engine, protocol)
        self.protocol = protocol
        self.mismatches: list[str] = []
        self.count = 0

    def run(self, args: list[bytes], where: str) -> None:
        self.count += 1
        if args[0].lower() == b"dbsize":
            self.reap_redis()
        expected = self.redis.call(args)
        got = self.memd.call(args)
        if not same(args[0].lower(), expected, got):
            self.mismatches.append(f"[{where} resp{self.protocol}] {args!r}\n    redis: {expected!r}\n"
                                   f"    memd:  {got!r}")

    def reap_redis(self) -> None:
        """Make Redis drop keys whose time is up but that no command has touched yet.

        Redis's DBSIZE counts those (e.g. after SET ... EXAT <past>, which 7.0
        does not delete at once); memd counts live keys only. SCAN visits
        every key and expires the stale ones.
        """
        cursor = b"0"
        while True:
            kind, (cur, _) = parse(self.redis.call([b"SCAN", cursor, b"COUNT", b"1000"]))
            cursor = cur[1]
            if cursor == b"0":
                return

    def scan_all(self, opts: list[bytes], where: str) -> None:
        """A whole SCAN iteration on each side: the same keys (each at least once)."""
        self.count += 1
        seen: list[set[bytes]] = []
        for side in (self.redis, self.memd):
            keys: set[bytes] = set()
            cursor = b"0"
            for _ in range(10_000):
                kind, (cur, page) = parse(side.call([b"SCAN", cursor, *opts]))
                cursor = cur[1]
                keys.update(item[1] for item in page[1])
                if cursor == b"0":
                    break
            else:
                raise AssertionError(f"SCAN {opts!r} did not finish")
            seen.append(keys)
        if seen[0] != seen[1]:
            self.mismatches.append(f"[{where} resp{self.protocol}] SCAN {opts!r}\n    redis: {sorted(seen[0])}\n"
                                   f"    memd:  {sorted(seen[1])}")

    def scan_command(self, command: tuple[Any, ...], where: str) -> None:
        """A generated ``("SCAN", opts)``: a whole iteration compared."""
        self.scan_all([a.encode() for a in command[1]], where)

    def close(self) -> None:
        self.redis.close()


# ---- fixed corpus --------------------------------------------------------------------------

CORPUS = r"""
# strings and SET options
GET nokey
SET s v
GET s
SET s v2 NX
SET s v3 XX
GET s
SET n1 v NX XX
SET n1 v XX NX
SET s v GET
SET s v4 NX GET
SET s v5 XX GET
SET fresh v XX GET
SET fresh v NX GET
SET s v EX
SET s v EX 0
SET s v EX -1
SET s v EX abc
SET s v EX 100 PX 100
SET s v EX 100 EX 200
SET s v PX 100 PX 200000
TTL s
SET s v EX 9223372036854775
SET s v EX 9223372036854776
SET s v PX 9223372036854775807
SET s v EXAT 9223372036854775
SET s v PXAT 9223372036854775807
SET s v KEEPTTL EX 10
SET s v EX 10 KEEPTTL
SET s v KEEPTTL
SET s v EX 100
SET s v2 KEEPTTL
TTL s
SET s v3
TTL s
SET s v EXAT 1
GET s
SET s v PXAT 1
EXISTS s
SET s v BOGUS
SET s v GET GET
SET s v nx
SET s v ex 100 get
SET
SET s
SET s v EX 1.5
SET s v EX " 1"
SET s v EX 01
SET s v EX 1_0
SETNX s a
SETNX s b
GET s
SETEX s 100 v
SETEX s 0 v
SETEX s -5 v
SETEX s abc v
PSETEX s 100000 v
PSETEX s 0 v
TTL s
GETDEL s
GETDEL s
MGET s nokey
MSET a 1 b 2 c
MSET a 1 b 2
MGET a b nokey
MSETNX a 1 z 2
MSETNX y 1 z 2
GETSET a 10
GETSET newkey 1
# counters
INCR cnt
INCRBY cnt 10
DECR cnt
DECRBY cnt 5
INCRBY cnt abc
INCRBY cnt 1.5
INCRBY cnt ""
INCRBY cnt 1_0
INCRBY cnt +1
INCRBY cnt 01
INCRBY cnt -0
DECRBY cnt -9223372036854775808
INCRBY cnt 9223372036854775807
SET big 9223372036854775807
INCR big
SET small -9223372036854775808
DECR small
SET nan abc
INCR nan
SET f "1.5"
INCR f
SET sp " 1"
INCR sp
SET plus "+1"
INCR plus
SET lead "01"
INCR lead
SET under "1_0"
INCR under
SET empty ""
INCR empty
SET z0 "-0"
INCR z0
SET cnt2 5 EX 100
INCR cnt2
TTL cnt2
APPEND app abc
APPEND app def
GET app
STRLEN app
STRLEN nokey
# keys and expiry
DEL a b nokey
EXISTS a b cnt cnt
TYPE cnt
TYPE nokey
EXPIRE cnt 100
TTL cnt
PTTL nokey
TTL nokey
EXPIRE cnt 100 NX
EXPIRE cnt 200 XX
TTL cnt
EXPIRE cnt 50 GT
EXPIRE cnt 500 GT
TTL cnt
EXPIRE cnt 600 LT
EXPIRE cnt 10 LT
TTL cnt
EXPIRE cnt 10 NX XX
EXPIRE cnt 10 NX GT
EXPIRE cnt 10 GT LT
EXPIRE cnt 10 BOGUS
EXPIRE cnt abc
EXPIRE cnt 9223372036854775807
EXPIRE cnt -9223372036854775808
PEXPIRE cnt 9223372036854775807
PEXPIREAT cnt 9223372036854775807
EXPIREAT cnt 9223372036854775
EXPIRETIME cnt
PEXPIRETIME cnt
EXPIREAT cnt 4102444800
EXPIRETIME cnt
PEXPIRETIME cnt
PEXPIREAT cnt 4102444800123
PEXPIRETIME cnt
PERSIST cnt
PERSIST cnt
PERSIST nokey
TTL cnt
EXPIRETIME cnt
EXPIRETIME nokey
EXPIRE nokey 10
SET gt v
EXPIRE gt 100 GT
EXPIRE gt 100 LT
TTL gt
EXPIRE gt 100 XX
EXPIRE cnt -1
EXISTS cnt
SET d v
PEXPIREAT d 1
EXISTS d
SET d v
EXPIREAT d 0
EXISTS d
EXPIRE
TTL
UNLINK s app nokey
DBSIZE
KEYS *
KEYS ?i?
KEYS [bg]*
KEYS *[^a]*
KEYS \*
FLUSHDB BOGUS
FLUSHDB ASYNC extra
FLUSHALL SYNC extra
FLUSHDB SYNC
DBSIZE
# patterns
MSET a 1 ab 2 abc 3 b 4 "a*" 5 "a?" 6 "[x]" 7 "\\" 8 "-" 9 "]" 10 "^" 11 "" 12
KEYS a*
KEYS a?
KEYS a[bc]
KEYS a[^b]*
KEYS "a\\*"
KEYS "a\\?"
KEYS "[a-b]"
KEYS "[b-a]"
KEYS "[a-]"
KEYS "[]"
KEYS "[^]"
KEYS "[]]"
KEYS "[\\]]"
KEYS "\\[x]"
KEYS "[x"
KEYS "[^x"
KEYS "["
KEYS "[^"
KEYS "**"
KEYS "*b*"
KEYS "*"
KEYS ""
KEYS "\\"
KEYS "\\\\"
KEYS "[\\\\]"
KEYS "a*b*c*"
KEYS "*?*"
KEYS "^"
KEYS "[\\^]"
KEYS "[!a]"
KEYS "[a-c-e]"
SCAN abc
SCAN " 0"
SCAN 0 COUNT 0
SCAN 0 COUNT -1
SCAN 0 COUNT abc
SCAN 0 COUNT
SCAN 0 MATCH
SCAN 0 TYPE
SCAN 0 BOGUS x
FLUSHALL
# hashes
HSET h f1 v1 f2 v2
HSET h f1 x
HSET h f1
HSET h
HGET h f1
HGET h nofield
HGET nokey f
HMGET h f1 nofield f2
HMGET nokey a b
HGETALL h
HGETALL nokey
HKEYS h
HVALS h
HKEYS nokey
HLEN h
HLEN nokey
HEXISTS h f1
HEXISTS h nofield
HEXISTS nokey f
HSTRLEN h f1
HSTRLEN h nofield
HSETNX h f1 y
HSETNX h f3 y
HMSET h f4 v4
HMSET h f4
HINCRBY h n 5
HINCRBY h n -3
HINCRBY h f1 1
HINCRBY h n abc
HINCRBY h n 9223372036854775807
HSET h plus "+1" lead "01" sp " 1" neg "-0" under "1_0" empty ""
HINCRBY h plus 1
HINCRBY h lead 1
HINCRBY h sp 1
HINCRBY h neg 1
HINCRBY h under 1
HINCRBY h empty 1
HSET h huge 9223372036854775808
HINCRBY h huge -1
HDEL h f1 f1 nofield
HDEL nokey f
HDEL h f2 f3 f4 n plus lead sp neg under empty huge
EXISTS h
# lists
LPUSH l a b c
RPUSH l x y
LRANGE l 0 -1
LRANGE l -2 -1
LRANGE l 2 1
LRANGE l 10 20
LRANGE l -100 100
LRANGE l a 1
LRANGE nokey 0 -1
LLEN l
LLEN nokey
LINDEX l 0
LINDEX l -1
LINDEX l 100
LINDEX l abc
LINDEX nokey abc
LPUSHX nokey a
RPUSHX nokey a
LPUSHX l p
RPUSHX l q
LPOP l
RPOP l
LPOP l 2
RPOP l 2
LPOP l 0
LPOP l -1
LPOP l abc
LPOP l 1 2
LPOP nokey
LPOP nokey 1
LPOP nokey 0
LPOP nokey -1
RPOP l 100
EXISTS l
RPUSH l 1 2 3 4 5 6
LTRIM l 1 -2
LRANGE l 0 -1
LTRIM l 0 100
LTRIM l -2 -1
LRANGE l 0 -1
LTRIM l 5 1
EXISTS l
LTRIM nokey 0 1
LTRIM l a 1
# sets
SADD st a b c a
SADD st a d
SREM st a x a
SMEMBERS st
SMEMBERS nokey
SISMEMBER st b
SISMEMBER st a
SISMEMBER nokey a
SMISMEMBER st b a
SMISMEMBER nokey a b
SCARD st
SCARD nokey
SREM st b c d
EXISTS st
SREM nokey a
# sorted sets
ZADD z 1 a 2 b 3 c
ZADD z 1 a
ZADD z CH 5 a 2 b
ZADD z NX 10 a 4 d
ZADD z XX 10 a 4 e
ZADD z XX NX 1 a
ZADD z NX XX 1 a
ZADD z GT LT 1 a
ZADD z GT NX 1 a
ZADD z LT NX 1 a
ZADD z INCR 1 a 2 b
ZADD z INCR 1
ZADD z 1
ZADD z
ZADD z 1 a 2
ZADD z abc a
ZADD z nan a
ZADD z 1e400 a
ZADD z 1e-400 a
ZADD z 1_0 a
ZADD z " 1" a
ZADD z "1 " a
ZADD z "" a
ZADD z 0x10 hex
ZADD z inf pinf -inf ninf
ZADD z +inf pinf2 -Infinity ninf2
ZADD z .5 half 1. one 1e3 kilo
ZADD z -0 negz
ZSCORE z negz
ZINCRBY z -0 negz
ZINCRBY z -0 negz2
ZSCORE z negz2
ZADD z INCR 1 a
ZADD z INCR NX 1 a
ZADD z INCR XX 1 nomember
ZADD z INCR GT -1 a
ZADD z INCR LT -1 a
ZADD z GT 100 a
ZADD z GT 1 a
ZADD z LT 1 a
ZADD z GT CH 200 a 1 b
ZADD z XX GT CH 300 a 1 newm
ZINCRBY z 1.5 b
ZINCRBY z abc b
ZINCRBY z nx b
ZINCRBY z inf pinf
ZINCRBY z -inf pinf
ZSCORE z pinf
ZSCORE z a
ZSCORE z nomember
ZSCORE nokey a
ZMSCORE z a nomember b
ZMSCORE nokey a b
ZCARD z
ZCARD nokey
ZRANK z a
ZRANK z nomember
ZREVRANK z a
ZRANK nokey a
ZRANGE z 0 -1
ZRANGE z 0 -1 WITHSCORES
ZRANGE z 0 -1 REV WITHSCORES
ZRANGE z 1 3 REV
ZRANGE z -3 -1
ZRANGE z 5 2
ZRANGE z a 1
ZRANGE z 0 -1 LIMIT 0 2
ZRANGE z 0 -1 LIMIT 5 -1
ZRANGE z 0 -1 LIMIT 0
ZRANGE z 0 -1 BOGUS
ZRANGE z -inf +inf BYSCORE
ZRANGE z -inf +inf BYSCORE WITHSCORES
ZRANGE z +inf -inf BYSCORE REV WITHSCORES
ZRANGE z -inf +inf BYSCORE REV
ZRANGE z (1 5 BYSCORE WITHSCORES
ZRANGE z 1 (5 BYSCORE
ZRANGE z (1 (1 BYSCORE
ZRANGE z 1 1 BYSCORE
ZRANGE z 5 1 BYSCORE
ZRANGE z -inf +inf BYSCORE LIMIT 1 2
ZRANGE z -inf +inf BYSCORE LIMIT 1 -1
ZRANGE z -inf +inf BYSCORE LIMIT -1 2
ZRANGE z -inf +inf BYSCORE LIMIT 1 0
ZRANGE z -inf +inf BYSCORE LIMIT 100 1
ZRANGE z -inf +inf BYSCORE LIMIT a 1
ZRANGE z abc 1 BYSCORE
ZRANGE z nan 1 BYSCORE
ZRANGE z "" "" BYSCORE
ZRANGE z " 1" "(5" BYSCORE
ZRANGE z "1 " 5 BYSCORE
ZRANGE z 0x1 0x10 BYSCORE
ZRANGE z -1e400 1e400 BYSCORE
ZRANGE z "(" 5 BYSCORE
ZRANGE z ((1 5 BYSCORE
ZRANGE z 0 -1 BYSCORE BYLEX
ZRANGE z 0 -1 REV REV
ZRANGE z - + BYLEX
ZRANGE z - + BYLEX WITHSCORES
ZRANGE z 0 -1 WITHSCORES WITHSCORES
ZRANGE nokey 0 -1
ZRANGE nokey 0 -1 WITHSCORES
ZRANGE nokey a b
ZRANGE nokey abc 1 BYSCORE
ZREVRANGE z 0 -1
ZREVRANGE z 0 1 WITHSCORES
ZREVRANGE z 0 -1 REV
ZREVRANGE z 0 -1 BYSCORE
ZREVRANGE z 0 -1 LIMIT 0 1
ZRANGEBYSCORE z -inf +inf
ZRANGEBYSCORE z -inf +inf WITHSCORES LIMIT 0 3
ZRANGEBYSCORE z (2 +inf
ZRANGEBYSCORE z -inf +inf REV
ZRANGEBYSCORE z -inf +inf LIMIT 0
ZREVRANGEBYSCORE z +inf -inf WITHSCORES
ZREVRANGEBYSCORE z 5 (1
ZREVRANGEBYSCORE z +inf -inf LIMIT 1 2
ZCOUNT z -inf +inf
ZCOUNT z (1 5
ZCOUNT z a b
ZCOUNT nokey 0 1
ZREM z a nomember a
ZREM nokey a
FLUSHALL
ZADD lex 0 a 0 b 0 c 0 d 0 e
ZRANGEBYLEX lex - +
ZRANGEBYLEX lex [b (d
ZRANGEBYLEX lex (b [d
ZRANGEBYLEX lex - (c
ZRANGEBYLEX lex [c +
ZRANGEBYLEX lex + -
ZRANGEBYLEX lex - -
ZRANGEBYLEX lex [a [a
ZRANGEBYLEX lex (a (a
ZRANGEBYLEX lex [z +
ZRANGEBYLEX lex a b
ZRANGEBYLEX lex "" +
ZRANGEBYLEX lex +x +
ZRANGEBYLEX lex - + LIMIT 1 2
ZRANGEBYLEX lex - + LIMIT -1 2
ZRANGEBYLEX lex - + LIMIT 1 -1
ZRANGEBYLEX lex - + WITHSCORES
ZREVRANGEBYLEX lex + -
ZREVRANGEBYLEX lex [d (a
ZREVRANGEBYLEX lex + - LIMIT 1 2
ZRANGE lex [b [d BYLEX REV
ZRANGE lex [d [b BYLEX REV
ZRANGE lex - + BYLEX LIMIT 0 2
ZADD mixed 1 a 0 b 2 c 1 d
ZRANGEBYLEX mixed - +
ZRANGEBYLEX mixed [b [c
ZRANGEBYLEX mixed (a +
ZREVRANGEBYLEX mixed [c -
ZRANGE mixed 0 -1 WITHSCORES
ZREM lex a b c d e
EXISTS lex
# wrong types everywhere
SET str v
RPUSH lst a
HSET hsh f v
SADD sset m
ZADD zs 1 m
GET lst
GETDEL hsh
SET lst v GET
SET lst v NX GET
GETSET zs v
INCR sset
INCRBY zs 1
DECRBY hsh x
APPEND lst x
STRLEN lst
MGET str lst hsh
HSET str f v
HGET lst f
HMGET str f
HGETALL sset
HKEYS zs
HDEL str f
HEXISTS str f
HLEN str
HINCRBY str f 1
HINCRBY str f x
HSETNX str f v
LPUSH str a
RPUSH hsh a
LPUSHX str a
LPOP str
LPOP str 0
LPOP str -1
RPOP hsh 2
LRANGE str 0 -1
LRANGE str x 1
LTRIM str 0 1
LLEN str
LINDEX str 0
LINDEX str x
SADD str a
SREM str a
SMEMBERS str
SISMEMBER str a
SMISMEMBER str a
SCARD str
ZADD str 1 a
ZADD str abc a
ZADD str XX 1 a
ZINCRBY str 1 a
ZSCORE str a
ZMSCORE str a
ZCARD str
ZREM str a
ZRANK str a
ZRANGE str 0 -1
ZRANGE str a b
ZRANGEBYSCORE str 0 1
ZRANGEBYLEX str - +
ZCOUNT str 0 1
TYPE str
TYPE lst
TYPE hsh
TYPE sset
TYPE zs
EXPIRE lst 100
TTL lst
PERSIST lst
DEL str lst hsh sset zs
# arity
GET
GET a b
MGET
DEL
EXISTS
TYPE
TTL a b
DBSIZE x
HGET h
HMGET h
HDEL h
LPUSH l
LRANGE l 0
LINDEX l
SADD s
SISMEMBER s
ZADD z 1
ZSCORE z
ZRANGE z 0
ZCARD
INCRBY x
DECR
GETDEL
SETEX a 1
PSETEX a 1
KEYS
SCAN
"""


def corpus_blocks() -> list[list[str]]:
    return split_corpus(CORPUS)


# ---- random sequences ----------------------------------------------------------------------

KEYS_ = ["k0", "k1", "k2", "k3", "k4"]
FIELDS = ["f0", "f1", "f2", "f3"]
MEMBERS = ["m0", "m1", "m2", "m3", "m4", "", "m\x00x"]
VALUES = ["v", "", "1", "-5", "10", "abc", "9223372036854775807", "-9223372036854775808", "01", " 1",
          "3.5", "m1", "x\r\ny"]
INTS = ["0", "1", "-1", "2", "-2", "3", "5", "-5", "10", "100", "abc", "", "1.5", "9223372036854775807",
        "-9223372036854775808", "9223372036854775808", "+1", "01", "1_0"]
SCORES = ["0", "1", "-1", "2.5", "-2.5", "3", "10", "1e3", "inf", "-inf", "+inf", "abc", "", "nan", "0x10",
          "1e400", "1e-310", " 1", "1 ", "(1", ".5", "3."]
BOUNDS = ["-inf", "+inf", "0", "1", "(1", "2.5", "(2.5", "10", "(10", "-1", "abc", "", "(", "inf", "1e400"]
LEX = ["-", "+", "[m1", "(m1", "[m3", "(m3", "[", "(", "m1", "[m\x00", "+x"]


def _random_command(rng: random.Random) -> list[str] | tuple[str, list[str]]:
    k = rng.choice(KEYS_)
    k2 = rng.choice(KEYS_)
    i = lambda: rng.choice(INTS)  # noqa: E731
    v = lambda: rng.choice(VALUES)  # noqa: E731
    f = lambda: rng.choice(FIELDS)  # noqa: E731
    m = lambda: rng.choice(MEMBERS)  # noqa: E731
    s = lambda: rng.choice(SCORES)  # noqa: E731
    b = lambda: rng.choice(BOUNDS)  # noqa: E731
    # relative expiries are far (no key expires mid-test) and rarely equal: two equal relative
    # times set in the same millisecond make GT/LT depend on the clock, on each side differently
    secs = lambda: str(rng.randint(100, 10**6))  # noqa: E731
    msecs = lambda: str(rng.randint(10**5, 10**9))  # noqa: E731
    many = lambda g: [g() for _ in range(rng.randint(1, 3))]  # noqa: E731

    def set_opts() -> list[str]:
        opts: list[str] = []
        for _ in range(rng.randint(0, 3)):
            opt = rng.choice(["NX", "XX", "GET", "KEEPTTL", "EX", "PX", "EXAT", "PXAT", "BOGUS"])
            opts.append(opt)
            if opt in ("EX", "PX", "EXAT", "PXAT") and rng.random() < 0.9:
                opts.append(rng.choice({"EX": [secs(), "0", "-1", "abc", secs()],
                                        "PX": [msecs(), "0", "abc", msecs()],
                                        "EXAT": ["1", "4102444800", "0"],
                                        "PXAT": ["1", "4102444800000", "-1"]}[opt]))
        return opts

    def zrange_opts() -> list[str]:
        opts: list[str] = []
        for _ in range(rng.randint(0, 3)):
            opt = rng.choice(["WITHSCORES", "REV", "BYSCORE", "BYLEX", "LIMIT", "BOGUS"])
            opts.append(opt)
            if opt == "LIMIT":
                opts += [rng.choice(["0", "1", "-1", "2", "x"]), rng.choice(["1", "2", "-1", "0", "x"])]
        return opts

    def zbounds(opts: list[str]) -> list[str]:
        if "BYLEX" in opts:
            return [rng.choice(LEX), rng.choice(LEX)]
        if "BYSCORE" in opts:
            return [b(), b()]
        return [i(), i()]

    choices: list[Any] = [
        lambda: ["SET", k, v(), *set_opts()],
        lambda: ["GET", k],
        lambda: ["SETNX", k, v()],
        lambda: ["SETEX", k, rng.choice([secs(), "0", "x"]), v()],
        lambda: ["GETDEL", k],
        lambda: ["GETSET", k, v()],
        lambda: ["MGET", k, k2],
        lambda: ["MSET", k, v(), k2, v()],
        lambda: ["MSETNX", k, v(), k2, v()],
        lambda: ["INCR", k],
        lambda: ["DECR", k],
        lambda: ["INCRBY", k, i()],
        lambda: ["DECRBY", k, i()],
        lambda: ["APPEND", k, v()],
        lambda: ["STRLEN", k],
        lambda: ["DEL", *many(lambda: rng.choice(KEYS_))],
        lambda: ["EXISTS", *many(lambda: rng.choice(KEYS_))],
        lambda: ["TYPE", k],
        lambda: ["EXPIRE", k, rng.choice([secs(), secs(), "-1", "0", "x"]),
                 *rng.sample(["NX", "XX", "GT", "LT", "ZZ"], rng.choice([0, 0, 1, 1, 2]))],
        lambda: ["PEXPIRE", k, rng.choice([msecs(), msecs(), "-1", "0", "x"]),
                 *rng.sample(["NX", "XX", "GT", "LT", "ZZ"], rng.choice([0, 0, 1, 1, 2]))],
        lambda: [rng.choice(["EXPIREAT", "PEXPIREAT"]), k, rng.choice(["1", "4102444800", "4102444800000"]),
                 *rng.sample(["NX", "XX", "GT", "LT"], rng.choice([0, 1, 1, 2]))],
        lambda: [rng.choice(["TTL", "PTTL", "EXPIRETIME", "PEXPIRETIME"]), k],
        lambda: ["PERSIST", k],
        lambda: ["DBSIZE"],
        lambda: ["KEYS", rng.choice(["*", "k*", "k[0-2]", "?1", "*[^0]", "k\\2"])],
        lambda: ("SCAN", [*rng.choice([[], ["MATCH", "k[1-3]"], ["TYPE", rng.choice(["string", "hash", "zset"])]]),
                          "COUNT", rng.choice(["1", "2", "10"])]),
        lambda: ["HSET", k, *[x for _ in range(rng.randint(1, 2)) for x in (f(), v())]],
        lambda: ["HSETNX", k, f(), v()],
        lambda: ["HGET", k, f()],
        lambda: ["HMGET", k, *many(f)],
        lambda: ["HGETALL", k],
        lambda: ["HKEYS", k],
        lambda: ["HVALS", k],
        lambda: ["HDEL", k, *many(f)],
        lambda: ["HEXISTS", k, f()],
        lambda: ["HLEN", k],
        lambda: ["HSTRLEN", k, f()],
        lambda: ["HINCRBY", k, f(), i()],
        lambda: [rng.choice(["LPUSH", "RPUSH", "LPUSHX", "RPUSHX"]), k, *many(v)],
        lambda: [rng.choice(["LPOP", "RPOP"]), k, *rng.choice([[], [], [rng.choice(["0", "1", "2", "5", "-1", "x"])]])],
        lambda: ["LRANGE", k, i(), i()],
        lambda: ["LTRIM", k, i(), i()],
        lambda: ["LLEN", k],
        lambda: ["LINDEX", k, i()],
        lambda: ["SADD", k, *many(m)],
        lambda: ["SREM", k, *many(m)],
        lambda: ["SMEMBERS", k],
        lambda: ["SISMEMBER", k, m()],
        lambda: ["SMISMEMBER", k, *many(m)],
        lambda: ["SCARD", k],
        lambda: ["ZADD", k, *rng.sample(["NX", "XX", "GT", "LT", "CH", "INCR"], rng.choice([0, 0, 1, 1, 2])),
                 *[x for _ in range(rng.choice([1, 1, 2, 3])) for x in (s(), m())]],
        lambda: ["ZINCRBY", k, s(), m()],
        lambda: ["ZSCORE", k, m()],
        lambda: ["ZMSCORE", k, *many(m)],
        lambda: ["ZREM", k, *many(m)],
        lambda: ["ZCARD", k],
        lambda: [rng.choice(["ZRANK", "ZREVRANK"]), k, m()],
        lambda: ["ZCOUNT", k, b(), b()],
        lambda: (lambda o: ["ZRANGE", k, *zbounds(o), *o])(zrange_opts()),
        lambda: ["ZREVRANGE", k, i(), i(), *rng.choice([[], ["WITHSCORES"]])],
        lambda: [rng.choice(["ZRANGEBYSCORE", "ZREVRANGEBYSCORE"]), k, b(), b(),
                 *rng.choice([[], ["WITHSCORES"], ["LIMIT", "1", "2"], ["WITHSCORES", "LIMIT", "0", "-1"]])],
        lambda: [rng.choice(["ZRANGEBYLEX", "ZREVRANGEBYLEX"]), k, rng.choice(LEX), rng.choice(LEX),
                 *rng.choice([[], ["LIMIT", "1", "2"]])],
    ]
    return rng.choice(choices)()


# ---- tests ----------------------------------------------------------------------------------

async def _run(redis_socket: str, tmp_path: Path, protocol: int, body: Any) -> None:
    await with_engine_pair(Pair, redis_socket, tmp_path, protocol, body)


@pytest.mark.parametrize("protocol", [2, 3])
async def test_corpus(redis_socket: str, tmp_path: Path, protocol: int) -> None:
    async def body(pair: Pair, engine: Engine) -> None:
        await corpus_in_process(pair, engine, corpus_blocks(), flush_every=17, after_block=scan_keys(b"3"))
    await _run(redis_socket, tmp_path, protocol, body)


@pytest.mark.parametrize("protocol", [2, 3])
async def test_random_sequences(redis_socket: str, tmp_path: Path, protocol: int) -> None:
    async def body(pair: Pair, engine: Engine) -> None:
        await random_in_process(pair, engine, _random_command, seeds=SEEDS, steps=STEPS, flush_chance=0.03,
                                after_seed=scan_keys(b"2"))
    await _run(redis_socket, tmp_path, protocol, body)


async def test_scan_large_keyspace(redis_socket: str, tmp_path: Path) -> None:
    """SCAN over more keys than one page, split between SQLite and the memtable, with MATCH and TYPE."""
    async def body(pair: Pair, engine: Engine) -> None:
        for j in range(300):
            pair.run([b"SET", b"key:%03d" % j, b"v"], "fill")
        await engine.flush()
        for j in range(300, 420):
            pair.run([b"HSET", b"key:%03d" % j, b"f", b"v"], "fill")
        for j in range(0, 420, 7):
            pair.run([b"DEL", b"key:%03d" % j], "fill")
        pair.run([b"SET", b"", b"empty key"], "fill")
        for opts in ([], [b"COUNT", b"1"], [b"COUNT", b"50"], [b"MATCH", b"key:1*"], [b"TYPE", b"hash"],
                     [b"MATCH", b"*", b"COUNT", b"7"], [b"MATCH", b"key:[0-1]?5", b"TYPE", b"string"]):
            pair.scan_all(opts, "scan")
        pair.run([b"DBSIZE"], "dbsize")
        pair.run([b"KEYS", b"key:?9?"], "keys")
    await _run(redis_socket, tmp_path, 2, body)


async def test_glob_patterns(redis_socket: str, tmp_path: Path) -> None:
    """KEYS with random patterns over awkward keys: memd's glob translation vs stringmatchlen."""
    rng = random.Random(7)
    alphabet = b"ab-]^\\[*?\x00\xff\x80"
    keys = {bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 5))) for _ in range(150)}
    keys |= {b"a", b"b", b"ab", b"ba", b"aab", b"-", b"]", b"[", b"\\", b"^", b"*", b"?", b"\xff", b"\x80a"}

    async def body(pair: Pair, engine: Engine) -> None:
        for key in sorted(keys):
            pair.run([b"SET", key, b"1"], "fill")
        pair.run([b"SET", b"", b"empty"], "fill")
        tokens = [b"a", b"b", b"*", b"?", b"[", b"]", b"^", b"-", b"\\", b"\xff", b"\x80", b"[a-b]", b"[^a]",
                  b"[\xff-a]", b"[a-\xff]", b"[]", b"[\\]]"]
        for _ in range(600):
            pattern = b"".join(rng.choice(tokens) for _ in range(rng.randint(0, 6)))
            pair.run([b"KEYS", pattern], f"pattern {pattern!r}")
    await _run(redis_socket, tmp_path, 2, body)
