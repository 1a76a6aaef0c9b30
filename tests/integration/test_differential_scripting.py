"""Differential test of Lua scripting (EVAL, EVALSHA, *_RO, SCRIPT) against a real redis-server 7.0.

The corpus runs in process (memd's handlers, the script on the calling thread, the pair of
test_differential_handlers) and over a real daemon (the script in the worker thread, pipelines,
MULTI/EXEC, the pair of test_differential_server), on RESP2 and RESP3. Each line is a command
split like a shell line; scripts are quoted.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from memd.commands import load_all
from memd.engine.engine import Engine
from tests.integration.diffkit import cmd, corpus_in_process, corpus_over_daemon, split_corpus, with_engine_pair
from tests.integration.test_differential_handlers import Pair as HandlerPair
from tests.integration.test_differential_handlers import redis_socket  # noqa: F401  (a fixture)
from tests.integration.test_differential_server import memd_socket  # noqa: F401  (a fixture)
from tests.integration.test_differential_server import Pair as ServerPair

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]
load_all()  # every command, as the daemon has them: scripts call (or are refused) any of them

CORPUS = r"""
# conversions Lua -> reply
EVAL "return 1" 0
EVAL "return 3.99" 0
EVAL "return -3.99" 0
EVAL "return 'hello'" 0
EVAL "return true" 0
EVAL "return false" 0
EVAL "return nil" 0
EVAL "return {1,2,3,'x',{4,5}}" 0
EVAL "return {1,2,nil,3}" 0
EVAL "return {1,{true,false},'x', 2.5}" 0
EVAL "return {ok='FINE'}" 0
EVAL "return {err='MY custom error'}" 0
EVAL "return {err='NOCODE'}" 0
EVAL "return redis.status_reply('PONGISH')" 0
EVAL "return redis.error_reply('xx')" 0
EVAL "return redis.error_reply('-xx yy')" 0
EVAL "return redis.error_reply('MY custom')" 0
EVAL "return redis.error_reply(1)" 0
EVAL "return {double=3.5}" 0
EVAL "return 1e300*1e300" 0
EVAL "return 2^53+1" 0
EVAL "return {KEYS[1], KEYS[2], ARGV[1], ARGV[2], #KEYS, #ARGV}" 2 k1 k2 a1 a2
EVAL "return redis.sha1hex('')" 0
EVAL "return redis.sha1hex('abc')" 0
EVAL "return {redis.REDIS_VERSION, redis.LOG_WARNING, redis.REPL_ALL}" 0
# conversions reply -> Lua
SET s hello
RPUSH l a b c
HSET h f v
EVAL "return redis.call('get','s')" 0
EVAL "return type(redis.call('get','nosuch'))" 0
EVAL "return redis.call('get','nosuch')" 0
EVAL "return redis.call('lrange','l',0,-1)" 0
EVAL "return redis.call('set','x','y')" 0
EVAL "local r = redis.call('set','x','y') return r.ok" 0
EVAL "return redis.call('incr','n')" 0
EVAL "return redis.call('incrbyfloat','f','1.5')" 0
EVAL "return redis.call('hgetall','h')" 0
EVAL "return redis.call('exists','s','x','zz')" 0
EVAL "return redis.call('set','num',1.5)" 0
EVAL "return redis.call('get','num')" 0
EVAL "return redis.call('set','num',0.1)" 0
EVAL "return redis.call('get','num')" 0
EVAL "return redis.call('set','num',1e20)" 0
EVAL "return redis.call('get','num')" 0
EVAL "return redis.call('set','num',12345678)" 0
EVAL "return redis.call('get','num')" 0
# RESP3 inside the script
HSET h3 a 1
EVAL "redis.setresp(3) return redis.call('hgetall','h3')" 0
EVAL "redis.setresp(3) local r = redis.call('hgetall','h3') return r.map.a" 0
EVAL "redis.setresp(3) return type(redis.call('get','nosuch'))" 0
EVAL "redis.setresp(3) return redis.call('incrbyfloat','f3','2.5')" 0
EVAL "redis.setresp(3) return redis.call('incrbyfloat','f3','2.5').double" 0
EVAL "redis.setresp(3) return true" 0
EVAL "redis.setresp(3) return false" 0
EVAL "redis.setresp(3) return {map={a=1}}" 0
EVAL "redis.setresp(3) return {set={x=true}}" 0
EVAL "return {map={a=1}}" 0
EVAL "redis.setresp(4)" 0
EVAL "redis.setresp()" 0
# errors from commands, pcall
SET s notanumber
EVAL "return redis.call('incr','s')" 0
EVAL "return redis.pcall('incr','s')" 0
EVAL "local r = redis.pcall('incr','s') return r.err" 0
EVAL "return {pcall(redis.call, 'incr', 's')}" 0
EVAL "local ok, e = pcall(redis.call, 'incr', 's') return e" 0
EVAL "local ok, e = pcall(error, {err='X'}) return e" 0
EVAL "local ok, e = pcall(error, 'plain') return e" 0
EVAL "return redis.call('nosuch')" 0
EVAL "return redis.pcall('nosuch')" 0
EVAL "return redis.call('get')" 0
EVAL "return redis.call()" 0
EVAL "return redis.call('incr',{})" 0
EVAL "return redis.call('eval','return 1',0)" 0
EVAL "return redis.call('multi')" 0
EVAL "return redis.call('script', 'flush')" 0
EVAL "return redis.pcall('script', 'load', 'return 1')" 0
EVAL "return redis.pcall('config', 'get', 'maxmemory')" 0
EVAL "return redis.pcall('client', 'id')" 0
EVAL "return redis.pcall('script', 'help')[1]" 0
EVAL "return redis.pcall('lpush','s','x')" 0
EVAL "error('boom')" 0
EVAL "error({err='MY custom'})" 0
EVAL "error()" 0
EVAL "local t = nil; return t.x" 0
EVAL "syntax error here" 0
EVAL "return" -1
EVAL "return" 2 a
EVAL "return" x
EVALSHA 0000000000000000000000000000000000000000 0
EVALSHA abc 0
# sandbox
EVAL "x = 1" 0
EVAL "return y" 0
EVAL "string.x = 1" 0
EVAL "redis.call = nil" 0
EVAL "return os" 0
EVAL "return io" 0
EVAL "return require" 0
EVAL "return loadfile" 0
EVAL "return dofile" 0
EVAL "return debug" 0
EVAL "return print" 0
EVAL "return type(loadstring('return 1'))" 0
EVAL "return loadstring('return 7')()" 0
EVAL "return {loadstring(string.dump(function() return 1 end))}" 0
EVAL "local f = loadstring('zz = 1') return pcall(f)" 0
EVAL "return tostring(_G == _G._G)" 0
EVAL "return type(_G.redis)" 0
EVAL "local n = 0 for k, v in pairs(string) do n = n + 1 end return n" 0
EVAL "local f = function() return 1 end return type(f)" 0
EVAL "getmetatable('').__index = nil" 0
EVAL "return type(getmetatable(''))" 0
EVAL "return ('abc'):upper() .. ('x'):rep(3)" 0
EVAL "math.floor = nil" 0
EVAL "return math.floor(2.5)" 0
# libraries
EVAL "return cjson.encode({1,2,3})" 0
EVAL "return cjson.encode({a='x/y', b={1,2}})" 0
EVAL "return cjson.encode({})" 0
EVAL "return cjson.encode('a\"b\\c\n')" 0
EVAL "return cjson.encode({[1]=1,[2]=2,[4]=4})" 0
EVAL "return cjson.encode({[1]=1,[20]=2})" 0
EVAL "return cjson.encode(3.14159265358979)" 0
EVAL "return cjson.encode({true, false, cjson.null})" 0
EVAL "return cjson.encode(function() end)" 0
EVAL "return cjson.decode('[1,2,3]')" 0
EVAL "return cjson.decode('{\"a\":[1,2,{\"b\":\"c\"}]}').a[3].b" 0
EVAL "return cjson.decode('\"\\u00e9\"')" 0
EVAL "return cjson.decode('1.5')" 0
EVAL "return tostring(cjson.decode('null') == cjson.null)" 0
EVAL "return cjson.decode('x')" 0
EVAL "return cjson.encode(cjson.decode('{\"k\":[1,{\"z\":null}]}'))" 0
EVAL "return cmsgpack.pack(1, -1, 127, 128, 255, 256, 65536, -33, -200, 1.5, 0.1)" 0
EVAL "return cmsgpack.pack('abc', true, false, {1,2}, {a=1})" 0
EVAL "return cmsgpack.pack(string.rep('x', 40))" 0
EVAL "return {cmsgpack.unpack(cmsgpack.pack(1, 'two', {3, 4}, 5.5))}" 0
EVAL "return cmsgpack.unpack(cmsgpack.pack({a={b={1,2}}})).a.b" 0
EVAL "return {cmsgpack.unpack_one(cmsgpack.pack(1, 2, 3))}" 0
EVAL "return {cmsgpack.unpack_limit(cmsgpack.pack(1, 2, 3), 2)}" 0
EVAL "return cmsgpack.pack()" 0
EVAL "return {bit.band(0xff, 0x0f), bit.bor(1, 2, 4), bit.bxor(5, 3), bit.bnot(0), bit.lshift(1, 31), bit.rshift(-1, 28), bit.arshift(-256, 4)}" 0
EVAL "return {bit.tobit(0xffffffff), bit.tobit(2^32 + 5), bit.rol(0x12345678, 8), bit.ror(0x12345678, 8), bit.bswap(0x12345678)}" 0
EVAL "return {bit.tohex(255), bit.tohex(-1), bit.tohex(255, 2), bit.tohex(255, -4)}" 0
EVAL "return bit.band('x')" 0
EVAL "return struct.pack('>I2', 258)" 0
EVAL "return struct.pack('<i', -2)" 0
EVAL "return struct.pack('>bBhH', -1, 255, -2, 65535)" 0
EVAL "return {struct.unpack('>I2 <I4', struct.pack('>I2 <I4', 513, 70000))}" 0
EVAL "return {struct.unpack('s c3', struct.pack('s c3', 'abc', 'xyz'))}" 0
EVAL "return struct.size('>iId')" 0
EVAL "return {struct.unpack('>d', struct.pack('>d', 1.25))}" 0
EVAL "return struct.pack('i', 'x')" 0
EVAL "return math.floor(3.7)" 0
EVAL "return string.format('%05.1f', 3.14159)" 0
EVAL "return table.concat({'a','b','c'}, '-')" 0
EVAL "return tonumber('0x10')" 0
# script cache
SCRIPT FLUSH
SCRIPT LOAD "return 'loaded'"
EVALSHA 8a32e5bae0e3a5e2a7a4ad2a1b8ff2bb3b7bbb3e 0
SCRIPT EXISTS 8a32e5bae0e3a5e2a7a4ad2a1b8ff2bb3b7bbb3e 0000000000000000000000000000000000000000
SCRIPT LOAD "return 1 +"
SCRIPT LOAD "return KEYS[1]"
EVALSHA 94ed7d12daf5a3bc0e8b7b5d0b2de4a52d3a4a80 1 mykey
SCRIPT FLUSH ASYNC
SCRIPT FLUSH SYNC
SCRIPT FLUSH BOGUS
SCRIPT KILL
SCRIPT EXISTS 94ed7d12daf5a3bc0e8b7b5d0b2de4a52d3a4a80
SCRIPT NOSUCH
SCRIPT
# read-only variants and shebangs
SET ro v
EVAL_RO "return redis.call('get','ro')" 0
EVAL_RO "return redis.call('set','ro','w')" 0
EVAL_RO "return redis.pcall('del','ro')" 0
EVAL "#!lua flags=no-writes
return redis.call('set','ro','w')" 0
EVAL "#!lua flags=no-writes
return redis.call('get','ro')" 0
EVAL_RO "#!lua
return 1" 0
EVAL "#!lua flags=bogus
return 1" 0
EVAL "#!python
return 1" 0
EVAL "#!lua
return redis.call('set','ro','shebang')" 0
GET ro
# writes
EVAL "redis.call('set', KEYS[1], ARGV[1]); redis.call('expire', KEYS[1], 100); return redis.call('ttl', KEYS[1])" 1 key val
EVAL "for i = 1, 10 do redis.call('rpush', KEYS[1], i) end return redis.call('lrange', KEYS[1], 0, -1)" 1 list
EVAL "redis.call('set','partial','1'); error('after write')" 0
GET partial
EVAL "return redis.call('del', unpack(KEYS))" 3 key list partial
# databases: a script's SELECT is its own (Redis 7.0), the caller stays where it was
EVAL "redis.call('select', 1) redis.call('set', 'indb1', 'v') return redis.call('get', 'indb1')" 0
GET indb1
SELECT 1
GET indb1
EVAL "return redis.call('get', 'indb1')" 0
SELECT 0
EVAL "return redis.call('select', 99)" 0
"""


def _sha_lines(text: str) -> str:
    """The SHA1s above are written by hand: compute the real ones so a typo cannot pass silently."""
    import hashlib
    for body in ("return 'loaded'", "return KEYS[1]"):
        real = hashlib.sha1(body.encode()).hexdigest()
        text = text.replace({"return 'loaded'": "8a32e5bae0e3a5e2a7a4ad2a1b8ff2bb3b7bbb3e",
                             "return KEYS[1]": "94ed7d12daf5a3bc0e8b7b5d0b2de4a52d3a4a80"}[body], real)
    return text


def _blocks() -> list[list[str]]:
    """Lines of the corpus, a quoted script spanning lines joined back (shebang cases)."""
    lines: list[str] = []
    pending = ""
    for line in _sha_lines(CORPUS).strip().splitlines():
        pending = pending + "\n" + line if pending else line
        if pending.count('"') - pending.count('\\"') * 1 >= 0 and _balanced(pending):
            lines.append(pending)
            pending = ""
    return split_corpus("\n".join(x.replace("\n", "\\n") for x in lines))


def _balanced(text: str) -> bool:
    quote = False
    escaped = False
    for ch in text:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            quote = not quote
    return not quote


def words(line: str) -> list[bytes]:
    """A corpus line: shell-split, a literal backslash-n inside a quoted shebang script a newline."""
    return [w.replace(b"\\n", b"\n") if w.startswith(b"#!") else w for w in cmd(line)]


@pytest.mark.parametrize("protocol", [2, 3])
async def test_corpus_in_process(redis_socket: str, tmp_path: Path, protocol: int) -> None:  # noqa: F811
    async def body(pair: HandlerPair, engine: Engine) -> None:
        await corpus_in_process(pair, engine, _blocks(), flush_every=7, words=words)
    await with_engine_pair(HandlerPair, redis_socket, tmp_path, protocol, body)


# ---- over a real daemon: the worker thread, pipelines, MULTI/EXEC --------------------------------

@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
def pair(request: pytest.FixtureRequest, redis_socket: str, memd_socket: str) -> Iterator[ServerPair]:  # noqa: F811
    p = ServerPair(redis_socket, memd_socket, request.param)
    p.run(cmd("FLUSHALL"), "setup")
    p.run(cmd("SCRIPT FLUSH"), "setup")
    try:
        yield p
    finally:
        p.close()


def test_corpus_over_daemon(pair: ServerPair) -> None:
    corpus_over_daemon(pair, _blocks(), flush_every=5, words=words)


def test_corpus_pipelined(pair: ServerPair) -> None:
    corpus_over_daemon(pair, _blocks(), pipelined=True, words=words)


CONFIG = r"""
CONFIG SET lua-time-limit -1
CONFIG SET lua-time-limit abc
CONFIG SET lua-time-limit 4000
CONFIG GET lua-time-limit
CONFIG GET busy-reply-threshold
CONFIG SET busy-reply-threshold 5000
CONFIG GET lua-time-limit
"""


def test_config_lua_time_limit(pair: ServerPair) -> None:
    for line in CONFIG.strip().splitlines():
        pair.run(words(line), "config")
    pair.assert_clean()


TRANSACTIONS = r"""
MULTI
EVAL "return redis.call('incr', KEYS[1])" 1 counter
SET other 1
EVAL "return redis.call('incr', KEYS[1])" 1 counter
EVAL "return redis.call('nosuch')" 0
EXEC
MULTI
EVALSHA 0000000000000000000000000000000000000000 0
EXEC
MULTI
EVAL "return 1" x
EXEC
MULTI
EVAL_RO "return redis.call('get', 'counter')" 0
EXEC
"""


def test_scripts_inside_multi(pair: ServerPair) -> None:
    for line in TRANSACTIONS.strip().splitlines():
        pair.run(words(line), "multi")
    pair.assert_clean()


def test_random_scripts(pair: ServerPair) -> None:
    """Seeded sequences of small scripts over a few keys: writes, reads and errors interleaved."""
    bodies = [
        "return redis.call('incrby', KEYS[1], ARGV[1])",
        "return redis.call('get', KEYS[1])",
        "redis.call('rpush', KEYS[1], ARGV[1]) return redis.call('llen', KEYS[1])",
        "return redis.pcall('hset', KEYS[1], 'f', ARGV[1])",
        "if redis.call('exists', KEYS[1]) == 1 then return redis.call('type', KEYS[1]).ok end return false",
        "return redis.call('del', KEYS[1])",
        "return {redis.call('set', KEYS[1], ARGV[1], 'NX'), redis.call('get', KEYS[1])}",
    ]
    for seed in range(4):
        rng = random.Random(seed * 10 + pair.protocol)
        pair.run(cmd("FLUSHALL"), f"seed {seed}")
        for step in range(60):
            body = rng.choice(bodies)
            key = rng.choice(["a", "b", "c"]).encode()
            pair.run([b"EVAL", body.encode(), b"1", key, str(rng.randint(-5, 50)).encode()], f"seed {seed} step {step}")
    pair.assert_clean()


# ---- a real library's scripts: walrus (its Lua parts), memd against redis-server ---------------

def _walrus_session(path: str) -> list[object]:
    """walrus's Lua-based features (cas, Array, RateLimitLua, Model range queries by zset_score_filter)."""
    from walrus import Database, IntegerField, Model, TextField

    db = Database(unix_socket_path=path)
    db.flushall()
    out: list[object] = []
    db.set("k", "v1")
    out += [db.cas("k", "v1", "v2"), db.cas("k", "zz", "v3"), db.get("k")]
    array = db.Array("arr")
    array.extend(["a", "b", "c"])
    array.append("d")
    out += [list(array), array[1], array[-1]]
    array[1] = "B"
    out += [array.pop(), array.pop(0), list(array), len(array), "B" in array]
    limiter = db.rate_limit_lua("rl", limit=3, per=60)
    out.append([limiter.limit("user") for _ in range(5)])

    class Person(Model):
        __database__ = db
        name = TextField(primary_key=True)
        age = IntegerField(index=True)

    for name, age in (("ann", 25), ("bob", 31), ("cid", 40), ("dee", 31)):
        Person.create(name=name, age=age)
    out.append(sorted(p.name for p in Person.query(Person.age > 30)))
    out.append(sorted(p.name for p in Person.query(Person.age <= 31)))
    out.append(sorted(p.name for p in Person.query(Person.age.between(26, 35))))
    db.close()
    return out


def test_walrus_lua_features(redis_socket: str, memd_socket: str) -> None:  # noqa: F811
    assert _walrus_session(memd_socket) == _walrus_session(redis_socket)
