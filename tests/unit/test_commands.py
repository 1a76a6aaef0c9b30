"""Command handlers (strings, keys, hashes, lists, sets, sorted sets) through a tiny dispatcher.

The dispatcher does what the server does with one command: look it up in
COMMANDS, check the arity, call the handler, encode the reply (or error)
with ReplyEncoder. The engine runs on tmp_path with a fake clock, so expiry
is exact and nothing sleeps. Byte-for-byte agreement with a real
redis-server is the job of tests/integration/test_differential_handlers.py;
here every command, option and error path is pinned down on its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import memd.commands.hashes  # noqa: F401  (each module registers its commands)
import memd.commands.lists  # noqa: F401
import memd.commands.sets  # noqa: F401
import memd.commands.strings  # noqa: F401
import memd.commands.zsets  # noqa: F401
from memd.commands import COMMANDS, Context, check_arity, unknown_command
from memd.commands import keys as keys_mod
from memd.commands.zsets import _range_bound, parse_score
from memd.engine.engine import Engine
from memd.errors import CommandError
from memd.resp import NullArray, ReplyEncoder, SimpleString

pytestmark = pytest.mark.anyio

OK = SimpleString("OK")
WRONGTYPE = "WRONGTYPE Operation against a key holding the wrong kind of value"
NOT_INT = "ERR value is not an integer or out of range"
NOT_FLOAT = "ERR value is not a valid float"
SYNTAX = "ERR syntax error"
NOW_MS = 1_700_000_000_000


def b(x: str | bytes | int) -> bytes:
    return x if isinstance(x, bytes) else str(x).encode()


class Client:
    """One connection's view: dispatch like the server, with a protocol of its own."""

    def __init__(self, engine: Engine, clock: Any, protocol: int = 2) -> None:
        self.engine = engine
        self.clock = clock
        self.ctx = Context(engine=engine, protocol=protocol)
        self.encoder = ReplyEncoder(protocol)

    def __call__(self, *argv: str | bytes | int) -> Any:
        args = [b(a) for a in argv]
        cmd = COMMANDS.get(args[0].lower())
        if cmd is None:
            raise unknown_command(args)
        check_arity(cmd, len(args) - 1)
        return cmd.handler(self.ctx, args[1:])

    def err(self, *argv: str | bytes | int) -> str:
        with pytest.raises(CommandError) as info:
            self(*argv)
        return f"{info.value.prefix} {info.value}"

    def raw(self, *argv: str | bytes | int) -> bytes:
        try:
            reply = self(*argv)
        except CommandError as exc:
            reply = exc
        return self.encoder.encode(reply)

    def resp3(self) -> Client:
        return Client(self.engine, self.clock, 3)


@pytest.fixture
async def r(tmp_path: Path, fake_clock: Any) -> AsyncIterator[Client]:
    async with Engine(str(tmp_path / "data"), clock=fake_clock, flush_max_age=3600.0) as engine:
        yield Client(engine, fake_clock)


def test_every_command_is_registered_with_its_redis_arity_and_write_flag() -> None:
    expected = {
        "set": (-3, True), "setnx": (3, True), "setex": (4, True), "psetex": (4, True), "get": (2, False),
        "getdel": (2, True), "getset": (3, True), "getex": (-2, True), "mget": (-2, False),
        "mset": (-3, True), "msetnx": (-3, True), "incr": (2, True), "incrby": (3, True), "decr": (2, True),
        "decrby": (3, True), "append": (3, True), "strlen": (2, False),
        "del": (-2, True), "unlink": (-2, True), "exists": (-2, False), "type": (2, False),
        "expire": (-3, True), "pexpire": (-3, True), "expireat": (-3, True), "pexpireat": (-3, True),
        "ttl": (2, False), "pttl": (2, False), "expiretime": (2, False), "pexpiretime": (2, False),
        "persist": (2, True), "keys": (2, False), "scan": (-2, False), "dbsize": (1, False),
        "flushdb": (-1, True), "flushall": (-1, True),
        "hset": (-4, True), "hsetnx": (4, True), "hmset": (-4, True), "hget": (3, False), "hmget": (-3, False),
        "hgetall": (2, False), "hkeys": (2, False), "hvals": (2, False), "hdel": (-3, True),
        "hexists": (3, False), "hlen": (2, False), "hstrlen": (3, False), "hincrby": (4, True),
        "lpush": (-3, True), "rpush": (-3, True), "lpushx": (-3, True), "rpushx": (-3, True),
        "lpop": (-2, True), "rpop": (-2, True), "lrange": (4, False), "ltrim": (4, True), "llen": (2, False),
        "lindex": (3, False),
        "sadd": (-3, True), "srem": (-3, True), "smembers": (2, False), "sismember": (3, False),
        "smismember": (-3, False), "scard": (2, False),
        "zadd": (-4, True), "zincrby": (4, True), "zrem": (-3, True), "zcard": (2, False),
        "zscore": (3, False), "zmscore": (-3, False), "zrank": (3, False), "zrevrank": (3, False),
        "zcount": (4, False), "zrange": (-4, False), "zrevrange": (-4, False), "zrangebyscore": (-4, False),
        "zrevrangebyscore": (-4, False), "zrangebylex": (-4, False), "zrevrangebylex": (-4, False),
    }
    for name, (arity, write) in expected.items():
        cmd = COMMANDS[name.encode()]
        assert (cmd.arity, cmd.write) == (arity, write), name


async def test_arity_errors_name_the_command(r: Client) -> None:
    assert r.err("get") == "ERR wrong number of arguments for 'get' command"
    assert r.err("GET", "a", "b") == "ERR wrong number of arguments for 'get' command"
    assert r.err("set", "k") == "ERR wrong number of arguments for 'set' command"
    assert r.err("dbsize", "x") == "ERR wrong number of arguments for 'dbsize' command"
    assert r.err("zadd", "z", "1") == "ERR wrong number of arguments for 'zadd' command"
    # arities a handler checks itself
    assert r.err("mset", "a", "1", "b") == "ERR wrong number of arguments for 'mset' command"
    assert r.err("msetnx", "a", "1", "b") == "ERR wrong number of arguments for 'msetnx' command"
    assert r.err("hset", "h", "f", "v", "g") == "ERR wrong number of arguments for 'hset' command"
    assert r.err("hmset", "h", "f", "v", "g") == "ERR wrong number of arguments for 'hmset' command"
    assert r.err("lpop", "l", "1", "2") == "ERR wrong number of arguments for 'lpop' command"
    assert r.err("rpop", "l", "1", "2") == "ERR wrong number of arguments for 'rpop' command"


# ---- strings ---------------------------------------------------------------------------------

async def test_set_get_basics(r: Client) -> None:
    assert r("get", "k") is None
    assert r("set", "k", "v") == OK
    assert r("get", "k") == b"v"
    assert r("set", "k", "") == OK and r("get", "k") == b""
    assert r.raw("get", "nokey") == b"$-1\r\n" and r.resp3().raw("get", "nokey") == b"_\r\n"
    assert r.raw("set", "k", "v") == b"+OK\r\n"


async def test_set_nx_xx_get(r: Client) -> None:
    assert r("set", "k", "1", "XX") is None
    assert r("set", "k", "1", "nx") == OK
    assert r("set", "k", "2", "NX") is None
    assert r("set", "k", "3", "XX") == OK and r("get", "k") == b"3"
    assert r("set", "k", "4", "GET") == b"3"
    assert r("set", "k", "5", "NX", "GET") == b"4" and r("get", "k") == b"4"  # not set, old value
    assert r("set", "k", "6", "XX", "GET") == b"4" and r("get", "k") == b"6"
    assert r("set", "new", "x", "XX", "GET") is None and r("exists", "new") == 0
    assert r("set", "new", "x", "GET") is None and r("get", "new") == b"x"
    assert r("set", "k", "7", "GET", "GET") == b"6"
    assert r.err("set", "k", "v", "NX", "XX") == SYNTAX
    assert r.err("set", "k", "v", "XX", "NX") == SYNTAX
    r("rpush", "l", "a")
    assert r.err("set", "l", "v", "GET") == WRONGTYPE
    assert r("set", "l", "v", "NX") is None  # NX sees any type
    assert r("set", "l", "v") == OK and r("type", "l") == "string"  # plain SET replaces any type


async def test_set_expiry_options(r: Client) -> None:
    assert r("set", "k", "v", "EX", 10) == OK and r("pttl", "k") == 10_000
    assert r("set", "k", "v", "PX", 1500) == OK and r("pttl", "k") == 1500
    assert r("set", "k", "v", "EXAT", NOW_MS // 1000 + 20) == OK and r("ttl", "k") == 20
    assert r("set", "k", "v", "PXAT", NOW_MS + 2500) == OK and r("pttl", "k") == 2500
    assert r("set", "k", "v", "ex", 10, "EX", 30) == OK and r("ttl", "k") == 30  # same option twice: last wins
    assert r("set", "k", "v2", "KEEPTTL") == OK and r("ttl", "k") == 30 and r("get", "k") == b"v2"
    assert r("set", "k", "v3") == OK and r("ttl", "k") == -1  # plain SET drops the TTL
    assert r("set", "fresh", "v", "KEEPTTL") == OK and r("ttl", "fresh") == -1
    assert r("set", "k", "v", "EXAT", 1) == OK and r("get", "k") is None  # already expired
    assert r("set", "k", "v", "PXAT", NOW_MS) == OK and r("exists", "k") == 0
    r.clock.advance(0)
    assert r("set", "k", "v", "PX", 1000) == OK
    r.clock.advance(1)
    assert r("get", "k") is None


async def test_set_option_errors(r: Client) -> None:
    for bad in (["EX"], ["EX", 10, "PX", 10], ["PX", 10, "EX", 10], ["EX", 10, "KEEPTTL"],
                ["KEEPTTL", "EX", 10], ["EXAT", 10, "PXAT", 10], ["BOGUS"], ["NX", "XX"], ["PERSIST"],
                ["EX", 10, "EXAT", 10]):
        assert r.err("set", "k", "v", *bad) == SYNTAX, bad
    for value in ("abc", "1.5", " 1", "01", "1_0", "+1", ""):
        assert r.err("set", "k", "v", "EX", value) == NOT_INT, value
    for opt, value in (("EX", 0), ("EX", -1), ("PX", 0), ("EXAT", 0), ("PXAT", -5), ("EX", 9223372036854776),
                       ("PX", 9223372036854775807), ("EX", 9223372036854775)):
        assert r.err("set", "k", "v", opt, value) == "ERR invalid expire time in 'set' command", (opt, value)
    assert r("set", "k", "v", "EXAT", 9223372036854775) == OK  # far, but representable
    assert r("exists", "k") == 1
    assert r.err("set", "k", "v", "EX", "x", "GET") == NOT_INT  # the expiry is checked before GET's type check


async def test_setnx_setex_psetex_getset(r: Client) -> None:
    assert r("setnx", "k", "a") == 1 and r("setnx", "k", "b") == 0 and r("get", "k") == b"a"
    assert r("setex", "k", 10, "v") == OK and r("ttl", "k") == 10 and r("get", "k") == b"v"
    assert r.err("setex", "k", 0, "v") == "ERR invalid expire time in 'setex' command"
    assert r.err("setex", "k", "x", "v") == NOT_INT
    assert r("psetex", "k", 1500, "v") == OK and r("pttl", "k") == 1500
    assert r.err("psetex", "k", -1, "v") == "ERR invalid expire time in 'psetex' command"
    assert r("getset", "k", "new") == b"v" and r("ttl", "k") == -1
    assert r("getset", "other", "x") is None and r("get", "other") == b"x"
    r("sadd", "s", "m")
    assert r.err("getset", "s", "x") == WRONGTYPE


async def test_get_getdel_getex_mget_wrong_type(r: Client) -> None:
    r("hset", "h", "f", "v")
    assert r.err("get", "h") == WRONGTYPE
    assert r.err("getdel", "h") == WRONGTYPE
    assert r.err("getex", "h") == WRONGTYPE
    r("set", "k", "v")
    assert r("mget", "k", "h", "nokey") == [b"v", None, None]  # MGET never fails on a type
    assert r("getdel", "k") == b"v" and r("getdel", "k") is None and r("exists", "k") == 0


async def test_getex(r: Client) -> None:
    assert r("getex", "nokey", "EX", 10) is None
    r("set", "k", "v")
    assert r("getex", "k") == b"v" and r("ttl", "k") == -1
    assert r("getex", "k", "EX", 10) == b"v" and r("ttl", "k") == 10
    assert r("getex", "k", "PX", 20_000) == b"v" and r("ttl", "k") == 20
    assert r("getex", "k", "PERSIST") == b"v" and r("ttl", "k") == -1
    assert r("getex", "k", "EXAT", NOW_MS // 1000 + 5) == b"v" and r("ttl", "k") == 5
    assert r("getex", "k", "PXAT", 1) == b"v" and r("exists", "k") == 0
    r("set", "k", "v")
    assert r.err("getex", "k", "EX", 10, "PERSIST") == SYNTAX
    assert r.err("getex", "k", "NX") == SYNTAX
    assert r.err("getex", "k", "KEEPTTL") == SYNTAX
    assert r.err("getex", "k", "EX") == SYNTAX
    assert r.err("getex", "k", "EX", 0) == "ERR invalid expire time in 'getex' command"
    assert r("getex", "nokey", "EX", 0) is None  # Redis looks the key up before the expiry value


async def test_mset_msetnx(r: Client) -> None:
    assert r("mset", "a", 1, "b", 2) == OK
    assert r("mget", "a", "b", "c") == [b"1", b"2", None]
    assert r("msetnx", "c", 3, "a", 9) == 0 and r("exists", "c") == 0
    assert r("msetnx", "c", 3, "d", 4) == 1 and r("mget", "c", "d") == [b"3", b"4"]
    r("expire", "a", 100)
    assert r("mset", "a", 5) == OK and r("ttl", "a") == -1


async def test_incr_decr(r: Client) -> None:
    assert r("incr", "n") == 1 and r("incrby", "n", 10) == 11
    assert r("decr", "n") == 10 and r("decrby", "n", 15) == -5 and r("get", "n") == b"-5"
    assert r("incrby", "n", -9223372036854775803) == -9223372036854775808
    assert r.err("decr", "n") == "ERR increment or decrement would overflow"
    assert r.err("decrby", "n", "-9223372036854775808") == "ERR decrement would overflow"
    for bad in ("abc", "1.5", "", " 1", "1 ", "+1", "01", "-0", "1_0", "9223372036854775808"):
        assert r.err("incrby", "n", bad) == NOT_INT, bad
    for stored in ("abc", "1.5", "", " 1", "+1", "01", "-0", "1_0", "9223372036854775808"):
        r("set", "s", stored)
        assert r.err("incr", "s") == NOT_INT, stored
    r("set", "s", "41", "EX", 100)
    assert r("incr", "s") == 42 and r("ttl", "s") == 100  # INCR keeps the TTL
    r("lpush", "l", "x")
    assert r.err("incr", "l") == WRONGTYPE
    assert r.err("incrby", "l", "x") == NOT_INT  # the increment is parsed before the key is looked up


async def test_append_strlen(r: Client) -> None:
    assert r("strlen", "k") == 0
    assert r("append", "k", "abc") == 3 and r("append", "k", "de") == 5 and r("get", "k") == b"abcde"
    assert r("strlen", "k") == 5
    r("expire", "k", 50)
    assert r("append", "k", "f") == 6 and r("ttl", "k") == 50
    r("sadd", "s", "m")
    assert r.err("append", "s", "x") == WRONGTYPE and r.err("strlen", "s") == WRONGTYPE


# ---- keys ------------------------------------------------------------------------------------

async def test_del_unlink_exists_type(r: Client) -> None:
    r("set", "s", "v")
    r("rpush", "l", "a")
    r("hset", "h", "f", "v")
    r("sadd", "st", "m")
    r("zadd", "z", 1, "m")
    assert [r("type", k) for k in ("s", "l", "h", "st", "z", "none")] == \
        ["string", "list", "hash", "set", "zset", "none"]
    assert isinstance(r("type", "s"), SimpleString) and r.raw("type", "z") == b"+zset\r\n"
    assert r("exists", "s", "s", "nokey", "l") == 3
    assert r("del", "s", "s", "nokey") == 1
    assert r("unlink", "l", "h") == 2
    assert r("dbsize") == 2


async def test_expire_family(r: Client) -> None:
    assert r("expire", "nokey", 10) == 0
    r("set", "k", "v")
    assert r("ttl", "k") == -1 and r("pttl", "k") == -1 and r("ttl", "nokey") == -2 and r("pttl", "nokey") == -2
    assert r("expire", "k", 10) == 1 and r("pttl", "k") == 10_000
    assert r("pexpire", "k", 2500) == 1 and r("pttl", "k") == 2500 and r("ttl", "k") == 3  # rounded
    assert r("expireat", "k", NOW_MS // 1000 + 100) == 1 and r("ttl", "k") == 100
    assert r("pexpireat", "k", NOW_MS + 1234) == 1 and r("pttl", "k") == 1234
    assert r("expiretime", "k") == (NOW_MS + 1234 + 500) // 1000 and r("pexpiretime", "k") == NOW_MS + 1234
    assert r("expiretime", "nokey") == -2
    r.clock.advance(1)
    assert r("pttl", "k") == 234
    assert r("persist", "k") == 1 and r("persist", "k") == 0 and r("persist", "nokey") == 0
    assert r("ttl", "k") == -1 and r("pexpiretime", "k") == -1
    assert r("expire", "k", 0) == 1 and r("exists", "k") == 0  # a past time deletes
    r("set", "k", "v")
    assert r("expire", "k", -5) == 1 and r("exists", "k") == 0
    r("set", "k", "v")
    assert r("pexpireat", "k", 1) == 1 and r("exists", "k") == 0


async def test_expire_flags(r: Client) -> None:
    r("set", "k", "v")
    assert r("expire", "k", 100, "XX") == 0
    assert r("expire", "k", 100, "GT") == 0  # no TTL counts as infinite
    assert r("expire", "k", 100, "LT") == 1
    assert r("expire", "k", 50, "NX") == 0
    assert r("expire", "k", 200, "xx") == 1 and r("ttl", "k") == 200
    assert r("expire", "k", 100, "GT") == 0 and r("expire", "k", 300, "GT") == 1
    assert r("expire", "k", 400, "LT") == 0 and r("expire", "k", 10, "lt") == 1 and r("ttl", "k") == 10
    assert r("expire", "k", 20, "XX", "GT") == 1 and r("ttl", "k") == 20
    incompatible = "ERR NX and XX, GT or LT options at the same time are not compatible"
    assert r.err("expire", "k", 10, "NX", "XX") == incompatible
    assert r.err("expire", "k", 10, "NX", "GT") == incompatible
    assert r.err("expire", "k", 10, "LT", "NX") == incompatible
    assert r.err("expire", "k", 10, "GT", "LT") == "ERR GT and LT options at the same time are not compatible"
    assert r.err("expire", "k", 10, "BOGUS") == "ERR Unsupported option BOGUS"
    assert r.err("pexpire", "k", 10, "nx", "bad") == "ERR Unsupported option bad"
    assert r.err("expire", "k", "x", "BOGUS") == "ERR Unsupported option BOGUS"  # flags before the number


async def test_expire_number_errors(r: Client) -> None:
    r("set", "k", "v")
    for name in ("expire", "pexpire", "expireat", "pexpireat"):
        assert r.err(name, "k", "abc") == NOT_INT
        assert r.err(name, "k", "1.5") == NOT_INT
    assert r.err("expire", "k", 9223372036854776) == "ERR invalid expire time in 'expire' command"
    assert r.err("expire", "k", -9223372036854776) == "ERR invalid expire time in 'expire' command"
    assert r.err("expireat", "k", 9223372036854776) == "ERR invalid expire time in 'expireat' command"
    assert r.err("pexpire", "k", 9223372036854775807) == "ERR invalid expire time in 'pexpire' command"
    assert r("pexpireat", "k", 9223372036854775807) == 1
    assert r("expire", "nokey", 9223372036854) == 0  # in range: answers for the key
    assert r.err("expire", "nokey", 9223372036854775) == "ERR invalid expire time in 'expire' command"  # + now
    assert r.err("expire", "nokey", 9223372036854775807) == "ERR invalid expire time in 'expire' command"
    assert r("expireat", "k", -9223372036854775) == 1 and r("exists", "k") == 0


async def test_flush_and_dbsize(r: Client) -> None:
    r("mset", "a", 1, "b", 2)
    r("sadd", "s", "x")
    assert r("dbsize") == 3
    assert r.err("flushdb", "bogus") == SYNTAX
    assert r.err("flushall", "sync", "async") == SYNTAX
    assert r("flushdb", "async") == OK and r("dbsize") == 0
    r("set", "a", 1)
    assert r("flushall", "SYNC") == OK and r("dbsize") == 0
    r("set", "a", 1)
    assert r("flushall") == OK and r("flushdb") == OK and r("keys", "*") == []


async def test_keys(r: Client) -> None:
    for key in ("a", "ab", "abc", "b", "a*", "", "h\x00llo", "hello", "hallo", "hxllo"):
        r("set", key, 1)
    r("set", "gone", 1, "EXAT", 1)
    assert sorted(r("keys", "*")) == sorted(b(k) for k in ("a", "ab", "abc", "b", "a*", "", "h\x00llo", "hello",
                                                          "hallo", "hxllo"))
    assert sorted(r("keys", "a*")) == [b"a", b"a*", b"ab", b"abc"]
    assert r("keys", "a\\*") == [b"a*"]
    assert sorted(r("keys", "h?llo")) == [b"h\x00llo", b"hallo", b"hello", b"hxllo"]
    assert sorted(r("keys", "h[ae]llo")) == [b"hallo", b"hello"]
    assert sorted(r("keys", "h[^e]llo")) == [b"h\x00llo", b"hallo", b"hxllo"]
    assert sorted(r("keys", "h[a-e]llo")) == [b"hallo", b"hello"]
    # only the exact pattern "*" matches the empty key: Redis's matcher never matches "" against "**"
    assert sorted(r("keys", "**")) == sorted(k for k in r("keys", "*") if k)
    assert b"" in r("keys", "*") and r("keys", "") == [b""]
    assert r("keys", "nomatch") == []


# Redis's stringmatchlen (util.c, nocase=0), ported line by line as the oracle for the regex translation
def _c(x: int) -> int:
    return x - 256 if x >= 128 else x


def stringmatchlen(p: bytes, s: bytes) -> bool:
    pat, string = p + b"\0", s + b"\0"

    def impl(pi: int, plen: int, si: int, slen: int, skip: list[bool]) -> bool:
        while plen and slen:
            c = pat[pi]
            if c == 42:
                while plen and pat[pi + 1] == 42:
                    pi += 1
                    plen -= 1
                if plen == 1:
                    return True
                while slen:
                    if impl(pi + 1, plen - 1, si, slen, skip):
                        return True
                    if skip[0]:
                        return False
                    si += 1
                    slen -= 1
                skip[0] = True
                return False
            elif c == 63:
                si += 1
                slen -= 1
            elif c == 91:
                pi += 1
                plen -= 1
                neg = pat[pi] == 94
                if neg:
                    pi += 1
                    plen -= 1
                match = False
                while True:
                    if pat[pi] == 92 and plen >= 2:
                        pi += 1
                        plen -= 1
                        if pat[pi] == string[si]:
                            match = True
                    elif pat[pi] == 93:
                        break
                    elif plen == 0:
                        pi -= 1
                        plen += 1
                        break
                    elif plen >= 3 and pat[pi + 1] == 45:
                        lo, hi, ch = _c(pat[pi]), _c(pat[pi + 2]), _c(string[si])
                        if lo > hi:
                            lo, hi = hi, lo
                        pi += 2
                        plen -= 2
                        if lo <= ch <= hi:
                            match = True
                    elif pat[pi] == string[si]:
                        match = True
                    pi += 1
                    plen -= 1
                if neg:
                    match = not match
                if not match:
                    return False
                si += 1
                slen -= 1
            else:
                if c == 92 and plen >= 2:
                    pi += 1
                    plen -= 1
                if pat[pi] != string[si]:
                    return False
                si += 1
                slen -= 1
            pi += 1
            plen -= 1
            if slen == 0:
                while pat[pi] == 42:
                    pi += 1
                    plen -= 1
                break
        return plen == 0 and slen == 0

    return impl(0, len(p), 0, len(s), [False])


_GLOB_BYTES = st.sampled_from(b"ab*?[]^-\\\x00\xff\x80")


@settings(max_examples=3000, deadline=None)
@given(st.lists(_GLOB_BYTES, max_size=8).map(bytes), st.lists(_GLOB_BYTES, max_size=6).map(bytes))
def test_glob_matches_redis_stringmatchlen(pattern: bytes, subject: bytes) -> None:
    assert keys_mod.glob_match(pattern, subject) == stringmatchlen(pattern, subject)


def test_glob_edge_cases_and_no_exponential_blowup() -> None:
    m = keys_mod.glob_match
    assert m(b"[a-]", b"]") and m(b"[a-]", b"a") and m(b"[a-]", b"^") and not m(b"[a-]", b"-")
    assert m(b"[]", b"x") is False and m(b"[^]", b"x") and m(b"[", b"x") is False and m(b"[^", b"x")
    assert m(b"[abc", b"b") and m(b"\\", b"\\") and m(b"a\\", b"a\\") and m(b"\\a", b"a")
    assert m(b"[\\]]", b"]") and m(b"[z-a]", b"m")
    assert m(b"[a-\xff]", b"\xff") and m(b"[a-\xff]", b"0") and not m(b"[a-\xff]", b"b")  # signed chars
    assert not m(b"*", b"") and not m(b"**", b"") and m(b"", b"") and not m(b"", b"a")
    assert m(b"*a*a*a*a*a*a*a*a*b", b"a" * 2000 + b"b") and not m(b"*a*a*a*a*a*a*a*a*b", b"a" * 2000)
    assert keys_mod.glob_regex.cache_info().currsize > 0


async def test_scan_pages_cursor_match_type(r: Client) -> None:
    for j in range(25):
        r("set", f"s{j:02}", "v")
    for j in range(10):
        r("hset", f"h{j}", "f", "v")
    seen: list[bytes] = []
    cursor = b"0"
    pages = 0
    while True:
        cursor, page = r("scan", cursor, "COUNT", 4)
        assert len(page) <= 4
        seen += page
        pages += 1
        if cursor == b"0":
            break
        int(cursor)  # a decimal integer, as clients expect
    assert sorted(seen) == sorted(seen := list(dict.fromkeys(seen))) and len(seen) == 35 and pages >= 9
    assert r("scan", "0")[1] == sorted(seen)[:10]  # COUNT defaults to 10
    everything = r("scan", "0", "COUNT", 1000)
    assert everything[0] == b"0" and len(everything[1]) == 35
    assert r("scan", "0", "MATCH", "h*", "COUNT", 1000)[1] == [b"h%d" % j for j in range(10)]
    assert r("scan", "0", "TYPE", "HASH", "COUNT", 1000)[1] == [b"h%d" % j for j in range(10)]
    assert r("scan", "0", "TYPE", "list", "COUNT", 1000)[1] == []
    assert r("scan", "0", "MATCH", "s0?", "TYPE", "string", "COUNT", 1000)[1] == [b"s%02d" % j for j in range(10)]
    for bad in ("abc", " 0", "1x", "-", "+", "0x10"):
        assert r.err("scan", bad) == "ERR invalid cursor", bad
    for zero in ("", "-0", "+0", "000"):
        assert r("scan", zero, "COUNT", 1000)[0] == b"0"
    assert r("scan", "-1") == [b"0", []]  # a number that is no cursor of ours: the scan is over
    assert r("scan", "12345") == [b"0", []]
    assert r.err("scan", "0", "COUNT", 0) == SYNTAX
    assert r.err("scan", "0", "COUNT", -1) == SYNTAX
    assert r.err("scan", "0", "COUNT", "x") == NOT_INT
    assert r.err("scan", "0", "COUNT") == SYNTAX
    assert r.err("scan", "0", "MATCH") == SYNTAX
    assert r.err("scan", "0", "BOGUS", "x") == SYNTAX
    assert r.err("scan", "x", "COUNT", 0) == "ERR invalid cursor"  # the cursor is checked first


async def test_scan_survives_flushes_and_writes(r: Client) -> None:
    for j in range(40):
        r("set", f"k{j:02}", "v")
    await r.engine.flush()
    cursor, page = r("scan", "0", "COUNT", 10)
    seen = set(page)
    r("del", "k35")  # deleted during the scan: may or may not be returned
    r("set", "k99", "v")  # added during the scan: likewise
    await r.engine.flush()
    while cursor != b"0":
        cursor, page = r("scan", cursor, "COUNT", 10)
        seen |= set(page)
    assert {b"k%02d" % j for j in range(40) if j != 35} <= seen


async def test_scan_cursor_round_trip_and_long_keys(r: Client) -> None:
    for key in (b"", b"\x00", b"\x00\x00a", b"abc", b"\xff" * 50):
        assert keys_mod.decode_cursor(keys_mod.encode_cursor(key)) == key
    assert keys_mod.encode_cursor(None) == b"0"
    prefix = b"p" * (keys_mod.CURSOR_KEY_MAX + 10)
    long_keys = [prefix + b"%02d" % j for j in range(12)]
    for key in long_keys:
        r("set", key, "v")
    r("set", "zz", "v")
    cursor = b"0"
    seen: set[bytes] = set()
    for _ in range(100):
        cursor, page = r("scan", cursor, "COUNT", 3)
        assert len(cursor) < 4300  # any client can int() it
        seen |= set(page)
        if cursor == b"0":
            break
    assert seen == set(long_keys) | {b"zz"} and cursor == b"0"


# ---- hashes ----------------------------------------------------------------------------------

async def test_hash_commands(r: Client) -> None:
    assert r("hset", "h", "f1", "v1", "f2", "v2") == 2
    assert r("hset", "h", "f1", "x", "f3", "v3", "f3", "v4") == 1
    assert r("hget", "h", "f1") == b"x" and r("hget", "h", "f3") == b"v4" and r("hget", "h", "no") is None
    assert r("hget", "nokey", "f") is None
    assert r("hmget", "h", "f1", "no", "f2") == [b"x", None, b"v2"]
    assert r("hmget", "nokey", "a", "b") == [None, None]
    assert r("hgetall", "h") == {b"f1": b"x", b"f2": b"v2", b"f3": b"v4"}
    assert r("hgetall", "nokey") == {}
    assert r.raw("hgetall", "nokey") == b"*0\r\n" and r.resp3().raw("hgetall", "nokey") == b"%0\r\n"
    assert r.resp3().raw("hgetall", "h").startswith(b"%3\r\n")
    assert sorted(r("hkeys", "h")) == [b"f1", b"f2", b"f3"] and sorted(r("hvals", "h")) == [b"v2", b"v4", b"x"]
    assert r("hkeys", "nokey") == [] and r("hvals", "nokey") == []
    assert r("hlen", "h") == 3 and r("hlen", "nokey") == 0
    assert r("hexists", "h", "f1") == 1 and r("hexists", "h", "no") == 0 and r("hexists", "nokey", "f") == 0
    assert r("hstrlen", "h", "f2") == 2 and r("hstrlen", "h", "no") == 0
    assert r("hsetnx", "h", "f1", "y") == 0 and r("hsetnx", "h", "f9", "y") == 1 and r("hget", "h", "f9") == b"y"
    assert r("hmset", "h", "f1", "z") == OK and r("hget", "h", "f1") == b"z"
    assert r("hdel", "h", "f1", "f1", "no") == 1 and r("hdel", "nokey", "f") == 0
    assert r("hdel", "h", "f2", "f3", "f9") == 3 and r("exists", "h") == 0  # emptied: gone


async def test_hincrby(r: Client) -> None:
    assert r("hincrby", "h", "n", 5) == 5 and r("hincrby", "h", "n", -7) == -2 and r("hget", "h", "n") == b"-2"
    assert r.err("hincrby", "h", "n", "x") == NOT_INT
    assert r.err("hincrby", "h", "n", "1_0") == NOT_INT
    r("hset", "h", "n", "9223372036854775807")
    assert r.err("hincrby", "h", "n", 1) == "ERR increment or decrement would overflow"
    for stored in ("abc", "1.5", "", " 1", "+1", "01", "-0", "1_0", "9223372036854775808"):
        r("hset", "h", "bad", stored)
        assert r.err("hincrby", "h", "bad", 1) == "ERR hash value is not an integer", stored
    r("set", "s", "v")
    assert r.err("hincrby", "s", "f", "x") == NOT_INT  # the increment first
    assert r.err("hincrby", "s", "f", 1) == WRONGTYPE


async def test_hash_wrong_type(r: Client) -> None:
    r("set", "s", "v")
    for argv in (("hset", "s", "f", "v"), ("hsetnx", "s", "f", "v"), ("hmset", "s", "f", "v"), ("hget", "s", "f"),
                 ("hmget", "s", "f"), ("hgetall", "s"), ("hkeys", "s"), ("hvals", "s"), ("hdel", "s", "f"),
                 ("hexists", "s", "f"), ("hlen", "s"), ("hstrlen", "s", "f")):
        assert r.err(*argv) == WRONGTYPE, argv


# ---- lists -----------------------------------------------------------------------------------

async def test_push_range_index_len(r: Client) -> None:
    assert r("lpush", "l", "a", "b", "c") == 3 and r("rpush", "l", "x", "y") == 5
    assert r("lrange", "l", 0, -1) == [b"c", b"b", b"a", b"x", b"y"]
    assert r("lrange", "l", -2, -1) == [b"x", b"y"] and r("lrange", "l", 2, 1) == []
    assert r("lrange", "l", -100, 100) == r("lrange", "l", 0, -1) and r("lrange", "l", 10, 20) == []
    assert r("lrange", "nokey", 0, -1) == []
    assert r.err("lrange", "l", "a", 1) == NOT_INT
    assert r("llen", "l") == 5 and r("llen", "nokey") == 0
    assert r("lindex", "l", 0) == b"c" and r("lindex", "l", -1) == b"y" and r("lindex", "l", 5) is None
    assert r.err("lindex", "l", "x") == NOT_INT
    assert r("lindex", "nokey", "x") is None  # the key is looked up before the index is parsed
    assert r("lpushx", "nokey", "a") == 0 and r("rpushx", "nokey", "a") == 0 and r("exists", "nokey") == 0
    assert r("lpushx", "l", "p") == 6 and r("rpushx", "l", "q", "r") == 8
    assert r("lrange", "l", 0, -1) == [b"p", b"c", b"b", b"a", b"x", b"y", b"q", b"r"]


async def test_pop(r: Client) -> None:
    r("rpush", "l", 1, 2, 3, 4, 5, 6)
    assert r("lpop", "l") == b"1" and r("rpop", "l") == b"6"
    assert r("lpop", "l", 2) == [b"2", b"3"] and r("rpop", "l", 1) == [b"5"]
    assert r("lpop", "l", 0) == []
    assert r("rpop", "l", 10) == [b"4"] and r("exists", "l") == 0
    assert r("lpop", "nokey") is None and r.raw("lpop", "nokey") == b"$-1\r\n"
    assert r("lpop", "nokey", 1) is NullArray and r.raw("rpop", "nokey", 2) == b"*-1\r\n"
    assert r.resp3().raw("lpop", "nokey", 1) == b"_\r\n" and r.resp3().raw("lpop", "nokey") == b"_\r\n"
    assert r("lpop", "nokey", 0) is NullArray
    positive = "ERR value is out of range, must be positive"
    assert r.err("lpop", "l", -1) == positive and r.err("rpop", "l", "x") == positive
    r("rpush", "l", "a", "b", "c")
    assert r("rpop", "l", 2) == [b"c", b"b"]  # from the tail, tail first


async def test_ltrim(r: Client) -> None:
    r("rpush", "l", 1, 2, 3, 4, 5, 6)
    assert r("ltrim", "l", 1, -2) == OK and r("lrange", "l", 0, -1) == [b"2", b"3", b"4", b"5"]
    assert r("ltrim", "l", 0, 100) == OK and r("llen", "l") == 4
    assert r("ltrim", "l", -2, -1) == OK and r("lrange", "l", 0, -1) == [b"4", b"5"]
    assert r("ltrim", "l", 5, 1) == OK and r("exists", "l") == 0
    assert r("ltrim", "nokey", 0, 1) == OK
    assert r.err("ltrim", "l", "a", 1) == NOT_INT


async def test_list_wrong_type(r: Client) -> None:
    r("set", "s", "v")
    for argv in (("lpush", "s", "a"), ("rpush", "s", "a"), ("lpushx", "s", "a"), ("rpushx", "s", "a"),
                 ("lpop", "s"), ("rpop", "s", 2), ("lpop", "s", 0), ("lrange", "s", 0, 1), ("ltrim", "s", 0, 1),
                 ("llen", "s"), ("lindex", "s", 0), ("lindex", "s", "x")):
        assert r.err(*argv) == WRONGTYPE, argv
    assert r.err("lpop", "s", -1) == "ERR value is out of range, must be positive"  # the count comes first


# ---- sets ------------------------------------------------------------------------------------

async def test_set_commands(r: Client) -> None:
    assert r("sadd", "s", "a", "b", "c", "a") == 3 and r("sadd", "s", "a", "d") == 1
    assert r("smembers", "s") == {b"a", b"b", b"c", b"d"} and r("smembers", "nokey") == set()
    assert r.raw("smembers", "nokey") == b"*0\r\n" and r.resp3().raw("smembers", "nokey") == b"~0\r\n"
    assert r("sismember", "s", "a") == 1 and r("sismember", "s", "z") == 0 and r("sismember", "nokey", "a") == 0
    assert r.resp3().raw("sismember", "s", "a") == b":1\r\n"  # an integer, not a RESP3 boolean
    assert r("smismember", "s", "a", "z") == [1, 0] and r("smismember", "nokey", "a", "b") == [0, 0]
    assert r("scard", "s") == 4 and r("scard", "nokey") == 0
    assert r("srem", "s", "a", "x", "a") == 1 and r("srem", "nokey", "a") == 0
    assert r("srem", "s", "b", "c", "d") == 3 and r("exists", "s") == 0
    r("set", "str", "v")
    for argv in (("sadd", "str", "a"), ("srem", "str", "a"), ("smembers", "str"), ("sismember", "str", "a"),
                 ("smismember", "str", "a"), ("scard", "str")):
        assert r.err(*argv) == WRONGTYPE, argv


# ---- sorted sets -----------------------------------------------------------------------------

async def test_zadd_flags(r: Client) -> None:
    assert r("zadd", "z", 1, "a", 2, "b", 3, "c") == 3
    assert r("zadd", "z", 1, "a") == 0
    assert r("zadd", "z", "CH", 5, "a", 2, "b", 9, "n") == 2  # a changed, n added; b unchanged
    assert r("zadd", "z", "NX", 10, "a", 4, "d") == 1 and r("zscore", "z", "a") == 5.0
    assert r("zadd", "z", "XX", 10, "a", 4, "e") == 0 and r("zscore", "z", "a") == 10.0
    assert r("zscore", "z", "e") is None
    assert r("zadd", "z", "GT", 1, "a") == 0 and r("zscore", "z", "a") == 10.0
    assert r("zadd", "z", "GT", "CH", 20, "a", 1, "b") == 1 and r("zscore", "z", "b") == 2.0
    assert r("zadd", "z", "LT", "CH", 30, "a", 1, "b", 7, "new") == 2  # b lowered, new added (GT/LT add)
    assert r("zadd", "z", "XX", "GT", "CH", 40, "a", 1, "absent") == 1 and r("zscore", "z", "absent") is None
    assert r("zadd", "z", 1, "dup", 2, "dup") == 1 and r("zscore", "z", "dup") == 2.0
    assert r("zadd", "nokey", "XX", 1, "a") == 0 and r("exists", "nokey") == 0


async def test_zadd_incr_and_zincrby(r: Client) -> None:
    assert r("zadd", "z", "INCR", 1.5, "a") == 1.5 and r("zadd", "z", "incr", 2, "a") == 3.5
    assert r.raw("zadd", "z", "INCR", 0, "a") == b"$3\r\n3.5\r\n" and r.resp3().raw("zscore", "z", "a") == b",3.5\r\n"
    assert r("zadd", "z", "INCR", "NX", 1, "a") is None and r("zadd", "z", "INCR", "XX", 1, "nom") is None
    assert r("zadd", "z", "INCR", "GT", -1, "a") is None and r("zadd", "z", "INCR", "LT", -1, "a") == 2.5
    assert r("zincrby", "z", 10, "a") == 12.5 and r("zincrby", "z", 1, "b") == 1.0
    assert r("zincrby", "z", "inf", "i") == float("inf")
    assert r.err("zincrby", "z", "-inf", "i") == "ERR resulting score is not a number (NaN)"
    assert r.err("zincrby", "z", "abc", "a") == NOT_FLOAT
    assert r.err("zincrby", "z", "nx", "a") == SYNTAX  # Redis parses ZINCRBY's increment as a ZADD option
    assert r.err("zadd", "z", "INCR", 1, "a", 2, "b") == "ERR INCR option supports a single increment-element pair"
    assert r("zadd", "z", 1, "zero") == 1 and r("zincrby", "z", "-0", "nz") == -0.0
    assert r.raw("zincrby", "z", "-0", "nz2") == b"$2\r\n-0\r\n"  # new member: the increment itself, as Redis
    assert r.raw("zscore", "z", "nz2") == b"$1\r\n0\r\n"  # but stored as 0
    assert r.raw("zadd", "z", "INCR", "-0", "nz2") == b"$1\r\n0\r\n"


async def test_zadd_errors(r: Client) -> None:
    assert r.err("zadd", "z", "XX", "NX", 1, "a") == "ERR XX and NX options at the same time are not compatible"
    gtltnx = "ERR GT, LT, and/or NX options at the same time are not compatible"
    for opts in (("GT", "LT"), ("GT", "NX"), ("NX", "LT")):
        assert r.err("zadd", "z", *opts, 1, "a") == gtltnx
    for argv in (("zadd", "z", "INCR", 1), ("zadd", "z", 1, "a", 2), ("zadd", "z", "NX", "CH", 1)):
        assert r.err(*argv) == SYNTAX, argv
    assert r.err("zadd", "z", "NX", "XX", 1) == SYNTAX  # pairs are counted before the flags are checked
    for bad in ("abc", "nan", "", " 1", "1 ", "1_0", "1e400", "-1e400", "1e-400", "0x", "1e", "--1", "inf1"):
        assert r.err("zadd", "z", bad, "a") == NOT_FLOAT, bad
    assert r.err("zadd", "z", 1, "a", "x", "b") == NOT_FLOAT and r("exists", "z") == 0  # all or nothing
    r("set", "s", "v")
    assert r.err("zadd", "s", "x", "a") == NOT_FLOAT and r.err("zadd", "s", 1, "a") == WRONGTYPE


def test_score_parsing_is_redis_string2d() -> None:
    ok = {"1": 1.0, "-2.5": -2.5, ".5": 0.5, "3.": 3.0, "1e3": 1000.0, "1E-3": 0.001, "inf": float("inf"),
          "+inf": float("inf"), "-Infinity": float("-inf"), "0x10": 16.0, "-0x1.8p1": -3.0, "0X.8": 0.5,
          "1e-310": 1e-310, "0e999": 0.0, "00.000": 0.0}
    for text, value in ok.items():
        assert parse_score(text.encode()) == value, text
    for text in ("nan", "-nan", "", " 1", "\t1", "1 ", "1_0", "1e400", "1e-400", "0x1p-2000", "0x1p2000", "1e",
                 "e1", ".", "+", "infinit", "1\x00"):
        with pytest.raises(CommandError):
            parse_score(text.encode())
    # range bounds are plain strtod: blanks first, "" and "(" are 0, overflow is infinite
    assert _range_bound(b"") == (0.0, False) and _range_bound(b"(") == (0.0, True)
    assert _range_bound(b" \t1") == (1.0, False) and _range_bound(b"(1e400") == (float("inf"), True)
    assert _range_bound(b"2\x00junk") == (2.0, False)
    for text in (b"abc", b"1 ", b"nan", b"((1", b"  "):
        assert _range_bound(text) is None, text


async def test_zscore_zcard_zrem_zrank_zmscore_zcount(r: Client) -> None:
    r("zadd", "z", 1, "a", 2, "b", 3, "c", "-inf", "lo")
    assert r("zscore", "z", "b") == 2.0 and r("zscore", "z", "x") is None and r("zscore", "nokey", "a") is None
    assert r.raw("zscore", "z", "lo") == b"$4\r\n-inf\r\n" and r.resp3().raw("zscore", "z", "lo") == b",-inf\r\n"
    assert r("zmscore", "z", "a", "x") == [1.0, None] and r("zmscore", "nokey", "a") == [None]
    assert r("zcard", "z") == 4 and r("zcard", "nokey") == 0
    assert r("zrank", "z", "lo") == 0 and r("zrank", "z", "c") == 3 and r("zrank", "z", "x") is None
    assert r("zrevrank", "z", "c") == 0 and r("zrank", "nokey", "a") is None
    assert r("zcount", "z", "-inf", "+inf") == 4 and r("zcount", "z", "(1", 3) == 2
    assert r.err("zcount", "z", "x", 1) == "ERR min or max is not a float" and r("zcount", "nokey", 0, 1) == 0
    assert r("zrem", "z", "a", "x", "a") == 1 and r("zrem", "nokey", "a") == 0
    assert r("zrem", "z", "b", "c", "lo") == 3 and r("exists", "z") == 0


async def test_zrange_by_rank(r: Client) -> None:
    r("zadd", "z", 1, "a", 2, "b", 3, "c", 3, "d")
    assert r("zrange", "z", 0, -1) == [b"a", b"b", b"c", b"d"]
    assert r("zrange", "z", 0, -1, "REV") == [b"d", b"c", b"b", b"a"] == r("zrevrange", "z", 0, -1)
    assert r("zrange", "z", 1, 2, "withscores") == [b"b", 2.0, b"c", 3.0]
    assert r.raw("zrange", "z", 0, 0, "WITHSCORES") == b"*2\r\n$1\r\na\r\n$1\r\n1\r\n"
    assert r.resp3()("zrange", "z", 0, 1, "WITHSCORES") == [[b"a", 1.0], [b"b", 2.0]]
    assert r.resp3().raw("zrange", "z", 0, 0, "WITHSCORES") == b"*1\r\n*2\r\n$1\r\na\r\n,1\r\n"
    assert r("zrange", "z", 5, 10) == [] and r("zrange", "z", -2, -1) == [b"c", b"d"]
    assert r("zrange", "nokey", 0, -1) == [] and r("zrange", "nokey", 0, -1, "WITHSCORES") == []
    assert r.err("zrange", "z", "a", 1) == NOT_INT
    assert r.err("zrange", "z", 0, -1, "LIMIT", 0, 1) == \
        "ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX"
    assert r("zrange", "z", 0, -1, "LIMIT", 5, -1) == [b"a", b"b", b"c", b"d"]  # count -1 is "no LIMIT"
    for bad in (("LIMIT", 0), ("BOGUS",), ("BYSCORE", "BYLEX"), ("REV", "REV")):
        assert r.err("zrange", "z", 0, -1, *bad) == SYNTAX, bad
    assert r.err("zrevrange", "z", 0, -1, "REV") == SYNTAX
    assert r.err("zrevrange", "z", 0, -1, "BYSCORE") == SYNTAX
    r("set", "s", "v")
    assert r.err("zrange", "s", 0, -1) == WRONGTYPE and r.err("zrange", "s", "a", 1) == NOT_INT


async def test_zrange_by_score(r: Client) -> None:
    r("zadd", "z", 1, "a", 2, "b", 3, "c", 4, "d", "+inf", "top")
    assert r("zrange", "z", "-inf", "+inf", "BYSCORE") == [b"a", b"b", b"c", b"d", b"top"]
    assert r("zrangebyscore", "z", "(1", 3) == [b"b", b"c"] and r("zrangebyscore", "z", 1, "(3") == [b"a", b"b"]
    assert r("zrangebyscore", "z", "(1", "(1") == [] and r("zrangebyscore", "z", 3, 1) == []
    assert r("zrangebyscore", "z", "inf", "inf") == [b"top"]
    assert r("zrangebyscore", "z", "-inf", "+inf", "LIMIT", 1, 2) == [b"b", b"c"]
    assert r("zrangebyscore", "z", "-inf", "+inf", "LIMIT", 1, -1) == [b"b", b"c", b"d", b"top"]
    assert r("zrangebyscore", "z", "-inf", "+inf", "LIMIT", -1, 2) == []
    assert r("zrangebyscore", "z", "-inf", "+inf", "LIMIT", 1, 0) == []
    assert r("zrangebyscore", "z", "-inf", "+inf", "LIMIT", 10, 2) == []
    assert r("zrangebyscore", "z", 2, 3, "WITHSCORES") == [b"b", 2.0, b"c", 3.0]
    assert r("zrange", "z", 3, 1, "BYSCORE", "REV") == [b"c", b"b", b"a"] == r("zrevrangebyscore", "z", 3, 1)
    assert r("zrevrangebyscore", "z", "+inf", "-inf", "LIMIT", 1, 2) == [b"d", b"c"]
    assert r("zrevrangebyscore", "z", "(4", "(1") == [b"c", b"b"]
    assert r("zrangebyscore", "z", "", "(1") == [] and r("zrangebyscore", "z", " 1", 1) == [b"a"]
    assert r.err("zrangebyscore", "z", "x", 1) == "ERR min or max is not a float"
    assert r.err("zrangebyscore", "z", "nan", 1) == "ERR min or max is not a float"
    assert r.err("zrangebyscore", "z", 0, 1, "REV") == SYNTAX
    assert r.err("zrangebyscore", "z", 0, 1, "LIMIT", "x", 1) == NOT_INT
    assert r("zrangebyscore", "nokey", 0, 1) == []


async def test_zrange_by_lex(r: Client) -> None:
    r("zadd", "z", 0, "a", 0, "b", 0, "c", 0, "d", 0, "e")
    assert r("zrangebylex", "z", "-", "+") == [b"a", b"b", b"c", b"d", b"e"]
    assert r("zrangebylex", "z", "[b", "(d") == [b"b", b"c"] and r("zrangebylex", "z", "(b", "[d") == [b"c", b"d"]
    assert r("zrangebylex", "z", "+", "-") == [] and r("zrangebylex", "z", "-", "-") == []
    assert r("zrangebylex", "z", "[a", "[a") == [b"a"] and r("zrangebylex", "z", "(a", "(a") == []
    assert r("zrangebylex", "z", "-", "+", "LIMIT", 1, 2) == [b"b", b"c"]
    assert r("zrangebylex", "z", "-", "+", "LIMIT", -1, 2) == []
    assert r("zrevrangebylex", "z", "+", "-", "LIMIT", 1, 2) == [b"d", b"c"]
    assert r("zrange", "z", "[d", "[b", "BYLEX", "REV") == [b"d", b"c", b"b"]
    bad_item = "ERR min or max not valid string range item"
    for lo, hi in (("a", "+"), ("", "+"), ("+x", "+"), ("-", "b")):
        assert r.err("zrangebylex", "z", lo, hi) == bad_item, (lo, hi)
    assert r.err("zrangebylex", "z", "-", "+", "WITHSCORES") == \
        "ERR syntax error, WITHSCORES not supported in combination with BYLEX"
    r("zadd", "mixed", 1, "a", 0, "b", 2, "c", 1, "d")  # order b a d c: the walk follows it, as Redis's does
    assert r("zrangebylex", "mixed", "-", "+") == [b"b", b"a", b"d", b"c"]
    assert r("zrangebylex", "mixed", "[b", "[c") == [b"b", b"a"]  # stops at the first member past "c"
    assert r("zrangebylex", "nokey", "-", "+") == []


async def test_zset_wrong_type(r: Client) -> None:
    r("set", "s", "v")
    for argv in (("zadd", "s", 1, "a"), ("zincrby", "s", 1, "a"), ("zrem", "s", "a"), ("zcard", "s"),
                 ("zscore", "s", "a"), ("zmscore", "s", "a"), ("zrank", "s", "a"), ("zrevrank", "s", "a"),
                 ("zcount", "s", 0, 1), ("zrange", "s", 0, 1), ("zrevrange", "s", 0, 1),
                 ("zrangebyscore", "s", 0, 1), ("zrevrangebyscore", "s", 1, 0), ("zrangebylex", "s", "-", "+"),
                 ("zrevrangebylex", "s", "+", "-")):
        assert r.err(*argv) == WRONGTYPE, argv


# ---- every layer -----------------------------------------------------------------------------

async def test_replies_are_the_same_after_a_flush_to_sqlite(r: Client) -> None:
    r("set", "s", "v", "EX", 100)
    r("rpush", "l", "a", "b", "c")
    r("hset", "h", "f", "1")
    r("sadd", "st", "x", "y")
    r("zadd", "z", 1, "a", 2, "b")
    probes = [("get", "s"), ("ttl", "s"), ("lrange", "l", 0, -1), ("hgetall", "h"), ("smembers", "st"),
              ("zrange", "z", 0, -1, "WITHSCORES"), ("dbsize",), ("keys", "*"), ("scan", 0), ("type", "z")]
    before = [r(*p) for p in probes]
    await r.engine.flush()
    assert [r(*p) for p in probes] == before
    assert r("hincrby", "h", "f", 1) == 2 and r("lpop", "l") == b"a" and r("zincrby", "z", 1, "a") == 2.0
