"""Differential test of the list, hash and set families against a real redis-server 7.0.

Covers LSET LINSERT LREM LPOS LMOVE RPOPLPUSH LMPOP, HRANDFIELD HSCAN, SPOP
SRANDMEMBER SMOVE SINTER SUNION SDIFF (and STORE forms) SINTERCARD SSCAN,
mixed with the older commands of every type, through the fixtures of
test_differential_handlers.py (memd's handlers in-process) and
test_differential_server.py (a real daemon: MULTI/EXEC, pipelines).

Deterministic commands are compared byte for byte (set replies after
sorting). Commands whose reply Redis leaves to chance are checked by named
properties instead:

- *membership*: every member or field returned is in the collection (and a
  WITHVALUES value is that field's value);
- *counts*: as many elements as Redis returns for the same command on the
  same state (same reply kind: bulk, array, RESP3 set);
- *no duplicates* when the count is positive;
- *distribution*: draws are uniform (a chi-square bound far in the tail);
- *full coverage* of HSCAN/SSCAN: a whole iteration returns exactly what
  Redis's does; an element present for a whole iteration during which
  others come and go and the buffer is flushed is returned at least once.

SPOP changes the set differently on each side, so Redis is brought to
memd's state afterwards (SREM of what memd popped; a copy of the key shows
what Redis itself answers). Restarts, with and without a final flush, must
give back the state Redis holds. redis-server is a hard requirement.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import tests.integration.test_differential_handlers as handlers
from memd.engine.engine import Engine
from tests.integration.daemon import Daemon
from tests.integration.diffkit import (
    Check,
    corpus_in_process,
    random_in_process,
    random_over_daemon,
    scan_keys,
    send,
    split_corpus,
    with_engine_pair,
)
from tests.integration.test_differential_handlers import (  # noqa: F401  (redis_socket is a fixture)
    FIELDS,
    MEMBERS,
    MemdSide,
    Pair,
    _random_command,
    cmd,
    parse,
    redis_socket,
)
from tests.integration.test_differential_server import Conn, memd_socket  # noqa: F401  (memd_socket: a fixture)
from tests.integration.test_differential_server import Pair as ServerPair

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(180)]

SEEDS = int(os.environ.get("MEMD_DIFF_SEEDS", "8"))
STEPS = 300
RANDOM_REPLIES = {b"spop", b"srandmember", b"hrandfield"}
SET_REPLIES = {b"sinter", b"sunion", b"sdiff"}


@pytest.fixture(autouse=True)
def _set_replies_unordered(monkeypatch: pytest.MonkeyPatch) -> None:
    """SINTER/SUNION/SDIFF answer sets: compared after sorting, as SMEMBERS is."""
    monkeypatch.setattr(handlers, "UNORDERED", handlers.UNORDERED | SET_REPLIES)


# ---- properties of random replies -------------------------------------------------------------

def _items(raw: bytes) -> tuple[bytes, Any]:
    kind, body = parse(raw)
    return kind, body


def _flat(values: list[Any]) -> list[Any]:
    """RESP3 WITHVALUES pairs ([f, v] arrays) -> the flat RESP2 list, to check one way."""
    out: list[Any] = []
    for kind, body in values:
        if kind == b"*":
            out += [b for _, b in body]
        else:
            out.append(body)
    return out


def random_reply_problem(args: list[bytes], expected: bytes, got: bytes, members: set[bytes] | dict[bytes, bytes]
                         ) -> str | None:
    """Why memd's reply to a random command breaks a property Redis's reply shows, or None."""
    if expected.startswith(b"-") or got.startswith(b"-") or expected in (b"$-1\r\n", b"_\r\n", b"*-1\r\n"):
        return None if expected == got else "errors and nulls must be equal"
    ekind, ebody = _items(expected)
    gkind, gbody = _items(got)
    if ekind != gkind:
        return f"reply kind {gkind!r}, Redis {ekind!r}"
    if ekind == b"$":
        return None if gbody in members else "membership: not a member"
    if len(ebody) != len(gbody):
        return f"counts: {len(gbody)} elements, Redis {len(ebody)}"
    values = _flat(gbody)
    with_values = len(args) > 3
    names = values[::2] if with_values else values
    if any(n not in members for n in names):
        return "membership: an element is not a member"
    if with_values and any(members[f] != v for f, v in zip(values[::2], values[1::2])):  # type: ignore[index]
        return "membership: a WITHVALUES value is not the field's"
    count = int(args[2]) if len(args) > 2 else 1
    if count > 0 and len(set(names)) != len(names):
        return "no duplicates: a positive count returned one twice"
    return None


class CollectionsPair(Pair):
    """The handlers' pair, plus random commands checked by property and element SCANs compared whole."""

    def contents(self, key: bytes) -> set[bytes] | dict[bytes, bytes]:
        """The set's members or the hash's fields on Redis (the two sides hold the same state)."""
        kind, body = parse(self.redis.call([b"TYPE", key]))
        if body == b"hash":
            flat = [b for _, b in parse(self.redis.call([b"HGETALL", key]))[1]]
            return dict(zip(flat[::2], flat[1::2]))
        if body == b"set":
            return {b for _, b in parse(self.redis.call([b"SMEMBERS", key]))[1]}
        return set()

    def run(self, args: list[bytes], where: str) -> None:
        name = args[0].lower()
        if name not in RANDOM_REPLIES or len(args) < 2:
            super().run(args, where)
            return
        self.count += 1
        key = args[1]
        members = self.contents(key)
        if name == b"spop":
            # what Redis answers, on a copy of the key: SPOP changes each side differently
            self.redis.call([b"DEL", b"{probe}"])
            self.redis.call([b"COPY", key, b"{probe}"])
            expected = self.redis.call([b"SPOP", b"{probe}", *args[2:]])
            self.redis.call([b"DEL", b"{probe}"])
        else:
            expected = self.redis.call(args)
        got = self.memd.call(args)
        problem = random_reply_problem(args, expected, got, members)
        if problem:
            self.mismatches.append(f"[{where} resp{self.protocol}] {args!r}: {problem}\n    redis: {expected!r}\n"
                                   f"    memd:  {got!r}")
        elif name == b"spop" and not got.startswith(b"-"):
            kind, body = parse(got)
            popped = [body] if kind == b"$" else [b for _, b in (body or [])]
            popped = [p for p in popped if p is not None]
            if popped:
                self.redis.call([b"SREM", key, *popped])  # Redis now holds memd's state

    def scan_elements(self, name: bytes, key: bytes, opts: list[bytes], where: str) -> None:
        """A whole HSCAN/SSCAN iteration on each side: full coverage, the same elements."""
        self.count += 1
        seen: list[Any] = []
        for side in (self.redis, self.memd):
            found: set[Any] = set()
            cursor = b"0"
            for _ in range(10_000):
                raw = side.call([name, key, cursor, *opts])
                if raw.startswith(b"-"):
                    found = {raw}
                    break
                _, (cur, page) = parse(raw)
                cursor = cur[1]
                items = [b for _, b in page[1]]
                found.update(zip(items[::2], items[1::2]) if name == b"HSCAN" else items)
                if cursor == b"0":
                    break
            else:
                raise AssertionError(f"{name!r} {key!r} {opts!r} did not finish")
            seen.append(found)
        if seen[0] != seen[1]:
            self.mismatches.append(f"[{where} resp{self.protocol}] {name!r} {key!r} {opts!r}\n"
                                   f"    redis: {sorted(seen[0])}\n    memd:  {sorted(seen[1])}")

    def scan_command(self, command: tuple[Any, ...], where: str) -> None:
        """A generated ``(name, key, opts)``: a whole HSCAN/SSCAN iteration compared."""
        name, key, opts = command
        self.scan_elements(name.encode(), key.encode(), [o.encode() for o in opts], where)

    def compare_state(self, where: str) -> None:
        """Every key, its type, content and whether it has a TTL: the same on both sides."""
        self.count += 1
        states = [dump(side.call) for side in (self.redis, self.memd)]
        if states[0] != states[1]:
            self.mismatches.append(f"[{where} resp{self.protocol}] state differs\n    redis: {states[0]}\n"
                                   f"    memd:  {states[1]}")


def dump(call: Any) -> dict[bytes, Any]:
    """Type, content and TTL presence of every key, through commands only."""
    keys = sorted(b for _, b in parse(call([b"KEYS", b"*"]))[1])
    out: dict[bytes, Any] = {}
    for key in keys:
        type_ = parse(call([b"TYPE", key]))[1]
        reader = {b"list": [b"LRANGE", key, b"0", b"-1"], b"hash": [b"HGETALL", key],
                  b"set": [b"SMEMBERS", key], b"zset": [b"ZRANGE", key, b"0", b"-1", b"WITHSCORES"],
                  b"string": [b"GET", key]}[type_]
        raw = call(reader)
        content: Any = parse(raw)[1]
        if type_ in (b"hash", b"set") and isinstance(content, list):
            content = sorted(b for _, b in content)
        ttl = int(parse(call([b"PTTL", key]))[1])
        out[key] = (type_, content, ttl > 0)
    return out


# ---- fixed corpus ----------------------------------------------------------------------------

CORPUS = r"""
# LSET
LSET nokey 0 v
LSET nokey abc v
RPUSH l a b c
LSET l 0 x
LSET l -1 y
LSET l 3 z
LSET l -4 z
LSET l abc z
LSET l 9223372036854775807 v
LSET l -9223372036854775808 v
LSET l 1 ""
LRANGE l 0 -1
LPUSH l head
LSET l 0 newhead
LRANGE l 0 -1
SET str v
LSET str 0 v
LSET str abc v
# LINSERT
LINSERT nokey BEFORE a x
LINSERT nokey MIDDLE a x
RPUSH l a b c a
LINSERT l BEFORE a x
LINSERT l AFTER a y
LINSERT l after c z
LINSERT l before z "z before"
LINSERT l BEFORE nopivot x
LINSERT l MIDDLE a x
LRANGE l 0 -1
LINSERT l AFTER a2 end
LINSERT l AFTER a end
LINSERT l BEFORE x start
LRANGE l 0 -1
LLEN l
LINDEX l 0
LINDEX l -1
RPUSH l2 only
LINSERT l2 BEFORE only first
LINSERT l2 AFTER only last
LRANGE l2 0 -1
SET str v
LINSERT str BEFORE a b
LINSERT str MIDDLE a b
# LREM
RPUSH l a b a c a d a
LREM l 2 a
LRANGE l 0 -1
LREM l -1 a
LRANGE l 0 -1
LREM l 0 a
LRANGE l 0 -1
LREM l 0 nothing
LREM l abc a
LREM nokey 1 a
LREM nokey abc a
LREM l 0 b
LREM l 0 c
LREM l 0 d
EXISTS l
RPUSH l x y x y x y x
LREM l -2 x
LRANGE l 0 -1
LREM l 1 y
LRANGE l 0 -1
LPUSH l p q
LREM l 0 y
LRANGE l 0 -1
RPUSH l3 x x x
LREM l3 -9223372036854775808 x
EXISTS l3
SET str v
LREM str 0 a
LREM str abc a
# LPOS
RPUSH l a b c 1 2 3 c c
LPOS l c
LPOS l c RANK 2
LPOS l c RANK -1
LPOS l c RANK -2
LPOS l c RANK 5
LPOS l c RANK 0
LPOS l c COUNT 0
LPOS l c COUNT 2
LPOS l c COUNT 2 RANK -1
LPOS l c RANK 2 COUNT 0
LPOS l c MAXLEN 3
LPOS l c MAXLEN 3 COUNT 0
LPOS l c MAXLEN 1 RANK -1
LPOS l c MAXLEN 2 RANK -1 COUNT 0
LPOS l c rank -3 count 5 maxlen 8
LPOS l c COUNT -1
LPOS l c MAXLEN -1
LPOS l c COUNT abc
LPOS l c MAXLEN abc
LPOS l c RANK abc
LPOS l c RANK
LPOS l c COUNT
LPOS l c BOGUS 1
LPOS l c RANK 0 BOGUS
LPOS l c BOGUS 1 RANK 0
LPOS l nomatch
LPOS l nomatch COUNT 0
LPOS l 1
LPOS nokey a
LPOS nokey a COUNT 1
LPOS nokey a RANK 0
LPOS nokey a BOGUS
LPOS l c RANK -9223372036854775808
LPOS l c RANK -9223372036854775808 COUNT 1
LPOS l c RANK -9223372036854775808 COUNT 0
LPOS l c RANK 9223372036854775807
LPOS l c RANK -9223372036854775807
LPOS l c COUNT 9223372036854775807
LPOS l c MAXLEN 9223372036854775807
SET str v
LPOS str a
LPOS str a RANK 0
# LMOVE RPOPLPUSH
RPUSH src a b c
LMOVE src dst LEFT RIGHT
LMOVE src dst RIGHT LEFT
LRANGE src 0 -1
LRANGE dst 0 -1
LMOVE src src LEFT RIGHT
LMOVE dst dst RIGHT RIGHT
LMOVE dst dst left left
LMOVE dst dst LEFT RIGHT
LMOVE dst dst RIGHT LEFT
LRANGE dst 0 -1
LMOVE src dst UP LEFT
LMOVE src dst LEFT UP
LMOVE nokey dst LEFT LEFT
LMOVE nokey dst BOGUS LEFT
RPOPLPUSH src dst
RPOPLPUSH src dst
EXISTS src
RPOPLPUSH nokey dst
LRANGE dst 0 -1
SET str v
LMOVE dst str LEFT LEFT
LMOVE str dst LEFT LEFT
LMOVE nokey str LEFT LEFT
RPOPLPUSH dst str
RPOPLPUSH str dst
RPUSH one x
RPOPLPUSH one one
LRANGE one 0 -1
LMOVE one one LEFT RIGHT
EXPIRE one 100
LMOVE one one RIGHT LEFT
TTL one
LMOVE one other LEFT LEFT
EXISTS one
TTL other
RPUSH keep a b
EXPIRE keep 100
LMOVE other keep LEFT RIGHT
TTL keep
LRANGE keep 0 -1
# LMPOP
RPUSH l1 a b c
RPUSH l2 x y
LMPOP 2 nokey l1 LEFT
LMPOP 2 l1 l2 RIGHT COUNT 10
LMPOP 2 l1 l2 LEFT COUNT 1
LMPOP 2 l1 l2 LEFT
LMPOP 2 l1 l2 LEFT
LMPOP 1 nokey LEFT
LMPOP 0 l1 LEFT
LMPOP -1 l1 LEFT
LMPOP abc l1 LEFT
LMPOP 2 l1 LEFT
LMPOP 3 a b LEFT
LMPOP 1 l1 MIDDLE
LMPOP 1 l1 LEFT COUNT 0
LMPOP 1 l1 LEFT COUNT -1
LMPOP 1 l1 LEFT COUNT abc
LMPOP 1 l1 LEFT COUNT 1 COUNT 1
LMPOP 1 l1 LEFT COUNT
LMPOP 1 l1 LEFT BOGUS
LMPOP 1 l1 left count 1
LMPOP 1 nokey right COUNT 9223372036854775807
SET str v
LMPOP 2 nokey str LEFT
RPUSH l3 z
LMPOP 2 l3 str LEFT
LMPOP 2 str l3 LEFT
# HRANDFIELD and HSCAN errors
HSET h a 1 b 2 c 3
HRANDFIELD nokey
HRANDFIELD nokey 5
HRANDFIELD nokey -5 WITHVALUES
HRANDFIELD nokey 0
HRANDFIELD h 0
HRANDFIELD h 0 WITHVALUES
HRANDFIELD h abc
HRANDFIELD h 1 BOGUS
HRANDFIELD h 1 WITHVALUES extra
HRANDFIELD nokey 1 BOGUS
HRANDFIELD nokey abc
HRANDFIELD h -9223372036854775808
HRANDFIELD h 9223372036854775807 WITHVALUES
HRANDFIELD h -4611686018427387904 WITHVALUES
HRANDFIELD h 4611686018427387904 WITHVALUES
HRANDFIELD h 4611686018427387903 WITHVALUES
HRANDFIELD h 9223372036854775807
HRANDFIELD h
HRANDFIELD h 2
HRANDFIELD h 10
HRANDFIELD h -10
HRANDFIELD h 2 WITHVALUES
HRANDFIELD h 10 withvalues
HRANDFIELD h -7 WITHVALUES
HSCAN nokey 0
HSCAN nokey abc
HSCAN nokey 0 BOGUS
HSCAN nokey 0 COUNT 0
HSCAN h abc
HSCAN h " 0"
HSCAN h 1.5
HSCAN h 0 COUNT 0
HSCAN h 0 COUNT -1
HSCAN h 0 COUNT abc
HSCAN h 0 COUNT
HSCAN h 0 MATCH
HSCAN h 0 TYPE string
HSCAN h 0 NOVALUES
HSCAN h 0 MATCH * COUNT 0
SET str v
HSCAN str 0
HSCAN str abc
HSCAN str 0 BOGUS
HRANDFIELD str
HRANDFIELD str 1
HRANDFIELD str abc
# SPOP SRANDMEMBER
SADD s a b c d e
SPOP nokey
SPOP nokey 0
SPOP nokey 3
SPOP nokey -1
SPOP s 0
SPOP s -1
SPOP s abc
SPOP s 1 2
SPOP s
SPOP s 2
SCARD s
SPOP s 10
EXISTS s
SADD s a b c
SRANDMEMBER nokey
SRANDMEMBER nokey 3
SRANDMEMBER nokey -3
SRANDMEMBER nokey abc
SRANDMEMBER s
SRANDMEMBER s 0
SRANDMEMBER s 2
SRANDMEMBER s 5
SRANDMEMBER s -5
SRANDMEMBER s -1
SRANDMEMBER s abc
SRANDMEMBER s 1 2
SRANDMEMBER s -9223372036854775808
SRANDMEMBER s 9223372036854775807
SET str v
SPOP str
SPOP str 1
SPOP str abc
SRANDMEMBER str
SRANDMEMBER str 1
SRANDMEMBER str -9223372036854775808
# SMOVE
SADD a x y
SADD b y z
SMOVE a b x
SMOVE a b y
SMOVE a b nothere
EXISTS a
SMOVE b b z
SMOVE b b nothere
SMOVE nokey b x
SMOVE b newset z
SMEMBERS b
SMEMBERS newset
SET str v
SMOVE str b x
SMOVE b str x
SMOVE b str nothere
SMOVE nokey str x
SADD t m
EXPIRE t 100
SMOVE t u m
EXISTS t
TTL u
SADD v m2
EXPIRE v 100
SMOVE u v m
TTL v
# set algebra
SADD s1 a b c d
SADD s2 c d e
SADD s3 d e f
SINTER s1 s2
SINTER s1 s2 s3
SINTER s1 nokey
SINTER nokey s1
SINTER s1 s1
SINTER s1
SUNION s1 s2 s3
SUNION s1 nokey
SUNION nokey
SDIFF s1 s2
SDIFF s1 s2 s3
SDIFF s1 nokey
SDIFF nokey s1
SDIFF s1 s1
SDIFF s1 s2 s1
SDIFF s2 s1 s3
SINTERSTORE dst s1 s2
SMEMBERS dst
SUNIONSTORE dst s1 s3
SMEMBERS dst
SDIFFSTORE dst s1 s2
SMEMBERS dst
SINTERSTORE dst s1 nokey
EXISTS dst
SUNIONSTORE dst nokey
SDIFFSTORE dst s1 s1
SET dst v
SINTERSTORE dst s1 s2
TYPE dst
SET dst v EX 100
SUNIONSTORE dst s1
TTL dst
SADD e1 x
EXPIRE e1 100
SINTERSTORE e1 e1 s1
EXISTS e1
SUNIONSTORE s1 s1 s2
SMEMBERS s1
SET str v
SINTER s1 str
SINTER nokey str
SINTER str nokey
SUNION s1 str
SDIFF s1 str
SDIFF nokey str
SDIFF str nokey
SINTERSTORE dst s1 str
SUNIONSTORE dst str
SDIFFSTORE dst nokey str
SINTERSTORE str s1
TYPE str
# SINTERCARD
SADD s1 a b c d
SADD s2 c d e
SINTERCARD 2 s1 s2
SINTERCARD 1 s1
SINTERCARD 2 s1 nokey
SINTERCARD 2 s1 s2 LIMIT 1
SINTERCARD 2 s1 s2 LIMIT 0
SINTERCARD 2 s1 s2 LIMIT 5
SINTERCARD 2 s1 s2 LIMIT -1
SINTERCARD 2 s1 s2 LIMIT abc
SINTERCARD 2 s1 s2 LIMIT
SINTERCARD 2 s1 s2 BOGUS 1
SINTERCARD 2 s1 s2 LIMIT 1 LIMIT 2
SINTERCARD 0 s1
SINTERCARD -1 s1
SINTERCARD abc s1
SINTERCARD 3 s1 s2
SINTERCARD 1 s1 s2
SINTERCARD 9223372036854775807 s1
SET str v
SINTERCARD 2 s1 str
SINTERCARD 2 nokey str
# SSCAN errors
SADD s a b c
SSCAN nokey 0
SSCAN nokey abc
SSCAN nokey 0 BOGUS
SSCAN s abc
SSCAN s 0 COUNT 0
SSCAN s 0 COUNT abc
SSCAN s 0 MATCH
SSCAN s 0 TYPE set
SSCAN s 0 BOGUS x
SET str v
SSCAN str 0
SSCAN str abc
# arity
LSET l 0
LINSERT l BEFORE a
LREM l 0
LPOS l
LMOVE a b LEFT
RPOPLPUSH a
LMPOP 1 a
HRANDFIELD
HSCAN h
SPOP
SRANDMEMBER
SMOVE a b
SINTER
SUNION
SDIFF
SINTERSTORE d
SUNIONSTORE d
SDIFFSTORE d
SINTERCARD 1
SSCAN s
"""


def corpus_blocks() -> list[list[str]]:
    return split_corpus(CORPUS)


def scan_every_collection(pair: CollectionsPair, where: str, count: bytes = b"2") -> None:
    """HSCAN/SSCAN each hash and set of Redis's keyspace whole, with and without MATCH."""
    for key in sorted(b for _, b in parse(pair.redis.call([b"KEYS", b"*"]))[1]):
        type_ = parse(pair.redis.call([b"TYPE", key]))[1]
        name = {b"hash": b"HSCAN", b"set": b"SSCAN"}.get(type_)
        if name is not None:
            pair.scan_elements(name, key, [b"COUNT", count], where)
            pair.scan_elements(name, key, [b"MATCH", b"*[a-c0-2]*", b"COUNT", count], where)


def collections_checks(count: bytes) -> Check:
    """After a block or a seed: each hash and set scanned whole, then the whole state compared."""
    def check(pair: CollectionsPair, where: str) -> None:
        scan_every_collection(pair, where, count=count)
        pair.compare_state(where)
    return check


async def _run(redis_socket: str, tmp_path: Path, protocol: int, body: Any) -> None:
    await with_engine_pair(CollectionsPair, redis_socket, tmp_path, protocol, body, noun="checks")


@pytest.mark.parametrize("protocol", [2, 3])
async def test_corpus(redis_socket: str, tmp_path: Path, protocol: int) -> None:
    async def body(pair: CollectionsPair, engine: Engine) -> None:
        await corpus_in_process(pair, engine, corpus_blocks(), flush_every=11, after_block=collections_checks(b"2"))
    await _run(redis_socket, tmp_path, protocol, body)


# ---- random sequences ------------------------------------------------------------------------

LIST_KEYS, HASH_KEYS, SET_KEYS = ["l0", "l1", "l2"], ["h0", "h1", "h2"], ["s0", "s1", "s2"]
ALL_KEYS = LIST_KEYS + HASH_KEYS + SET_KEYS + ["k0", "k1", "k2", "k3", "k4"]  # k*: the handlers' generator's
ITEMS = ["a", "b", "c", "", "1", "m0", "f0", "x\r\ny"]  # few values: LREM, LPOS and LINSERT find them


def random_collection_command(rng: random.Random, *, deterministic: bool = False
                              ) -> list[str] | tuple[str, str, list[str]]:
    """A command of the list, hash or set family (now and then any other), or an element scan
    ``(HSCAN|SSCAN, key, options)``; with ``deterministic`` no random reply and no scan.

    Each family mostly works on its own keys, sometimes on any key (WRONGTYPE, missing keys).
    """
    def pick(pool: list[str]) -> Any:
        return lambda: rng.choice(pool) if rng.random() < 0.88 else rng.choice(ALL_KEYS)
    lk, hk, sk = pick(LIST_KEYS), pick(HASH_KEYS), pick(SET_KEYS)
    item = lambda: rng.choice(ITEMS)  # noqa: E731
    side = lambda: rng.choice(["LEFT", "RIGHT", "left", "right"] * 8 + ["UP"])  # noqa: E731
    small = lambda: rng.choice(["0", "1", "2", "3", "-1", "-2", "10", "-10", "x", ""]  # noqa: E731
                               if rng.random() < 0.3 else ["1", "2", "3", "-1", "-2", "5", "-5"])
    lkeys = lambda: [lk() for _ in range(rng.randint(1, 3))]  # noqa: E731
    skeys = lambda: [sk() for _ in range(rng.randint(1, 3))]  # noqa: E731

    def lpos_opts() -> list[str]:
        opts: list[str] = []
        for _ in range(rng.choice([0, 0, 1, 2, 3])):
            opt = rng.choice(["RANK", "COUNT", "MAXLEN", "BOGUS"])
            opts += [opt, rng.choice({"RANK": ["1", "2", "-1", "-2", "0", "x"], "COUNT": ["0", "1", "2", "-1"],
                                      "MAXLEN": ["0", "1", "3", "-1"], "BOGUS": ["1"]}[opt])]
        return opts

    while True:
        if rng.random() < 0.12:
            base = _random_command(rng)
            if isinstance(base, tuple):
                continue  # keyspace SCAN: the handlers' own test covers it
            return base
        choices: list[Any] = [
            lambda: [rng.choice(["RPUSH", "LPUSH", "RPUSH"]), lk(), *[item() for _ in range(rng.randint(1, 4))]],
            lambda: ["LSET", lk(), small(), item()],
            lambda: ["LINSERT", lk(), rng.choice(["BEFORE", "AFTER", "after"] * 4 + ["MIDDLE"]), item(), item()],
            lambda: ["LREM", lk(), small(), item()],
            lambda: ["LPOS", lk(), item(), *lpos_opts()],
            lambda: ["LMOVE", lk(), lk(), side(), side()],
            lambda: ["RPOPLPUSH", lk(), lk()],
            lambda: (lambda ks: ["LMPOP", rng.choice([str(len(ks))] * 8 + ["0", "9"]), *ks, side(),
                                 *rng.choice([[], [], ["COUNT", small()]])])(lkeys()),
            lambda: [rng.choice(["LPOP", "RPOP"]), lk(), *rng.choice([[], ["2"]])],
            lambda: ["LRANGE", lk(), "0", "-1"],
            lambda: ["HSET", hk(), *[x for _ in range(rng.randint(1, 3)) for x in (rng.choice(FIELDS), item())]],
            lambda: ["HDEL", hk(), rng.choice(FIELDS)],
            lambda: ["HGETALL", hk()],
            lambda: ["SADD", sk(), *[rng.choice(MEMBERS) for _ in range(rng.randint(1, 4))]],
            lambda: ["SADD", sk(), *[rng.choice(MEMBERS) for _ in range(rng.randint(1, 4))]],
            lambda: ["SREM", sk(), rng.choice(MEMBERS)],
            lambda: ["SMOVE", sk(), sk(), rng.choice(MEMBERS)],
            lambda: [rng.choice(["SINTER", "SUNION", "SDIFF"]), *skeys()],
            lambda: [rng.choice(["SINTERSTORE", "SUNIONSTORE", "SDIFFSTORE"]), sk(), *skeys()],
            lambda: (lambda ks: ["SINTERCARD", str(len(ks)), *ks,
                                 *rng.choice([[], ["LIMIT", rng.choice(["0", "1", "2", "-1"])]])])(skeys()),
            lambda: ["SMEMBERS", sk()],
        ]
        if not deterministic:
            choices += [
                lambda: ["SPOP", sk(), *rng.choice([[], [small()]])],
                lambda: ["SRANDMEMBER", sk(), *rng.choice([[], [small()]])],
                lambda: ["HRANDFIELD", hk(), *rng.choice([[], [small()], [small(), "WITHVALUES"]])],
                lambda: ("HSCAN", hk(), [*rng.choice([[], ["MATCH", rng.choice(["*", "f*", "f[0-1]", "?"])]]),
                                         "COUNT", rng.choice(["1", "2", "10"])]),
                lambda: ("SSCAN", sk(), [*rng.choice([[], ["MATCH", rng.choice(["*", "m*", "m[0-1]", "?"])]]),
                                         "COUNT", rng.choice(["1", "2", "10"])]),
            ]
        return rng.choice(choices)()  # type: ignore[no-any-return]


async def _random_steps(pair: CollectionsPair, engine: Engine, rng: random.Random, steps: int, where: str) -> None:
    for step in range(steps):
        send(pair, random_collection_command(rng), f"{where} step {step}")
        if rng.random() < 0.04:
            await engine.flush()


@pytest.mark.parametrize("protocol", [2, 3])
async def test_random_sequences(redis_socket: str, tmp_path: Path, protocol: int) -> None:
    async def body(pair: CollectionsPair, engine: Engine) -> None:
        await random_in_process(pair, engine, random_collection_command, seeds=SEEDS, steps=STEPS,
                                flush_chance=0.04, after_seed=collections_checks(b"1"))
    await _run(redis_socket, tmp_path, protocol, body)


# ---- full coverage of an element SCAN while the collection changes --------------------------

@pytest.mark.parametrize("type_", ["hash", "set"])
async def test_scan_covers_elements_present_throughout(tmp_path: Path, type_: str) -> None:
    """Elements present for a whole HSCAN/SSCAN are returned (at least once) while others are added
    and removed between pages and the buffer is flushed; nothing that never existed is returned."""
    rng = random.Random(5)
    name = b"HSCAN" if type_ == "hash" else b"SSCAN"
    add = (lambda m: [b"HSET", b"c", m, b"v" + m]) if type_ == "hash" else (lambda m: [b"SADD", b"c", m])
    rem = b"HDEL" if type_ == "hash" else b"SREM"
    async with Engine(str(tmp_path / "data")) as engine:
        side = MemdSide(engine, 2)
        stable = {b"s%04d" % j for j in range(400)} | {b"", b"\x00", b"\xff" * 3, b"L" * 1500 + b"1",
                                                          b"L" * 1500 + b"2", b"L" * 1024}
        transient = [b"t%04d" % j for j in range(400)]
        for m in sorted(stable)[:200] + transient[:200]:
            side.call(add(m))
        await engine.flush()  # half in SQLite, half in the buffer
        for m in sorted(stable)[200:] + transient[200:]:
            side.call(add(m))
        ever = stable | set(transient)
        for count in (b"1", b"7", b"50"):
            seen: set[bytes] = set()
            cursor = b"0"
            for page in range(5000):
                _, (cur, items) = parse(side.call([name, b"c", cursor, b"COUNT", count]))
                cursor = cur[1]
                flat = [b for _, b in items[1]]
                fields = flat[::2] if type_ == "hash" else flat
                seen.update(fields)
                # churn: transient elements come and go, new ones appear, sometimes a flush
                for _ in range(3):
                    t = rng.choice(transient)
                    side.call([rem, b"c", t] if rng.random() < 0.5 else add(t))
                fresh = b"n%06d" % rng.randrange(10**6)
                ever.add(fresh)
                side.call(add(fresh))
                if page % 13 == 0:
                    await engine.flush()
                if cursor == b"0":
                    break
            else:
                raise AssertionError("the scan did not finish")
            assert stable <= seen, f"COUNT {count!r}: missed {sorted(stable - seen)[:5]}"
            assert seen <= ever, f"COUNT {count!r}: returned {sorted(seen - ever)[:5]}"


# ---- distribution of random picks -------------------------------------------------------------

def _chi2(counts: Counter[bytes], cells: list[bytes]) -> float:
    """Pearson's statistic of ``counts`` against a uniform spread over ``cells``."""
    assert set(counts) <= set(cells), set(counts) - set(cells)  # membership
    expected = sum(counts.values()) / len(cells)
    return sum((counts[c] - expected) ** 2 / expected for c in cells)


def _chi2_limit(cells: int) -> float:
    """Far in the tail: mean + 7 standard deviations of chi-square with cells - 1 degrees (p < 1e-6)."""
    df = cells - 1
    return df + 7 * (2 * df) ** 0.5


async def test_random_picks_are_uniform(tmp_path: Path) -> None:
    """Distribution: SRANDMEMBER, HRANDFIELD and SPOP pick uniformly among the live elements of a
    collection spread over SQLite and the buffer (some stored elements deleted or overwritten in
    the buffer), by offset picks (small counts) and by one full read (large counts)."""
    async with Engine(str(tmp_path / "data")) as engine:
        side = MemdSide(engine, 2)
        stored = [b"m%02d" % j for j in range(30)]
        side.call([b"SADD", b"s", *stored])
        side.call([b"HSET", b"h", *[x for m in stored for x in (m, b"old")]])
        await engine.flush()
        fresh = [b"n%02d" % j for j in range(10)]
        side.call([b"SADD", b"s", *fresh])
        side.call([b"HSET", b"h", *[x for m in fresh + stored[:5] for x in (m, b"new")]])
        side.call([b"SREM", b"s", *stored[-5:]])
        side.call([b"HDEL", b"h", *stored[-5:]])
        live = stored[:-5] + fresh
        limit = _chi2_limit(len(live))

        def draws(args: list[bytes]) -> list[bytes]:
            return [b for _, b in parse(side.call(args))[1]]

        for key, name in ((b"s", b"SRANDMEMBER"), (b"h", b"HRANDFIELD")):
            small = Counter(x for _ in range(500) for x in draws([name, key, b"-32"]))  # offset picks
            assert _chi2(small, live) < limit, small
            large = Counter(draws([name, key, b"-16000"]))  # one full read
            assert _chi2(large, live) < limit, large
            subsets: Counter[bytes] = Counter()
            for _ in range(1500):
                chosen = draws([name, key, b"5"])
                assert len(set(chosen)) == 5  # no duplicates
                subsets.update(chosen)
            assert _chi2(subsets, live) < limit, subsets
        values = parse(side.call([b"HRANDFIELD", b"h", b"-32", b"WITHVALUES"]))[1]
        for f, v in zip(values[::2], values[1::2]):
            assert v[1] == (b"new" if f[1] in fresh + stored[:5] else b"old")
        pops: Counter[bytes] = Counter()
        for _ in range(1500):
            popped = parse(side.call([b"SPOP", b"s"]))[1]
            pops[popped] += 1
            assert side.call([b"SADD", b"s", popped]) == b":1\r\n"  # it had left the set
        assert _chi2(pops, live) < limit, pops


# ---- durability: the new writes survive a restart, with and without a final flush -------------

@pytest.mark.parametrize("final_flush", [False, True], ids=["replay", "flushed"])
async def test_state_survives_restart(redis_socket: str, tmp_path: Path, final_flush: bool) -> None:
    """Random writes of the three families, then a restart (crash-like: the WAL is replayed; or
    clean: everything read back from SQLite): memd's state equals Redis's, before and after."""
    data = str(tmp_path / "data")
    rng = random.Random(77 + final_flush)
    mismatches: list[str] = []
    async with Engine(data) as engine:
        pair = CollectionsPair(redis_socket, engine, 2)
        pair.run(cmd("FLUSHALL"), "setup")
        await _random_steps(pair, engine, rng, 600, "before restart")
        pair.compare_state("before restart")
        mismatches += pair.mismatches
        before = dump(pair.memd.call)
        if not final_flush:
            async def no_final_flush() -> None:
                pass
            engine._flush_all = no_final_flush  # type: ignore[method-assign]
    async with Engine(data) as engine:
        if not final_flush:
            assert engine.recovery_report is not None
        pair.memd = MemdSide(engine, 2)
        after = dump(pair.memd.call)
        assert after == before
        pair.mismatches = []
        pair.compare_state("after restart")
        await _random_steps(pair, engine, rng, 200, "after restart")
        pair.compare_state("after restart, more writes")
        mismatches += pair.mismatches
        pair.close()
    assert not mismatches, "\n".join(mismatches[:20])


def test_daemon_kill_keeps_acknowledged_writes() -> None:
    """Every new write command, acknowledged by a daemon with fsync=always, survives kill -9."""
    d = Daemon(fsync="always").start()
    try:
        c = Conn(d.socket, 2)
        script = """
            RPUSH l a b c d e f
            LINSERT l BEFORE d X
            LINSERT l AFTER a Y
            LREM l 1 c
            LSET l 0 first
            LMOVE l l2 RIGHT LEFT
            RPOPLPUSH l l2
            LMPOP 1 l LEFT COUNT 1
            SADD s1 a b c d
            SADD s2 c d e
            SMOVE s1 s2 a
            SINTERSTORE si s1 s2
            SUNIONSTORE su s1 s2
            SDIFFSTORE sd s2 s1
            SPOP s2
            HSET h f1 v1 f2 v2
        """
        for line in script.strip().splitlines():
            assert not c.call(cmd(line.strip())).startswith(b"-"), line
        before = dump(c.call)
        c.close()
        d.kill()
        d.start()
        c = Conn(d.socket, 2)
        try:
            assert dump(c.call) == before
        finally:
            c.close()
    finally:
        d.cleanup()


# ---- inside MULTI/EXEC, over a real daemon ----------------------------------------------------

@pytest.mark.parametrize("protocol", [2, 3])
def test_transactions(redis_socket: str, memd_socket: str, protocol: int) -> None:
    """Seeded transactions (and pipelined batches) of the families' deterministic commands."""
    pair = ServerPair(redis_socket, memd_socket, protocol)

    def step(rng: random.Random, where: str) -> None:
        cmds = [[a.encode() for a in random_collection_command(rng, deterministic=True)]  # type: ignore[union-attr]
                for _ in range(rng.randint(1, 6))]
        if rng.random() < 0.7:
            for args in [[b"MULTI"], *cmds, [b"EXEC"] if rng.random() < 0.9 else [b"DISCARD"]]:
                pair.run(args, where + " tx")
        else:
            pair.pipeline(cmds, where + " batch")

    def same_state(pair: ServerPair, where: str) -> None:
        scan_keys(b"3")(pair, where)
        states = [dump(side.call) for side in (pair.redis, pair.memd)]
        assert states[0] == states[1], f"{where.removesuffix(' end')}: state differs"
    try:
        random_over_daemon(pair, step, seeds=6, steps=60, seed_base=500, flush_chance=0.05, after_seed=same_state)
    finally:
        pair.close()


def test_spop_and_random_reads_inside_multi(memd_socket: str) -> None:
    """Inside MULTI: SPOP's members came from the set and left it (membership, counts, no
    duplicates); SRANDMEMBER and HRANDFIELD pick members; one EXEC, one consistent state."""
    c = Conn(memd_socket, 3)
    try:
        c.call(cmd("FLUSHALL"))
        c.call(cmd("SADD s a b c d e f"))
        c.call(cmd("HSET h f1 v1 f2 v2 f3 v3"))
        replies = c.pipeline([cmd("MULTI"), cmd("SPOP s 2"), cmd("SPOP s"), cmd("SMEMBERS s"),
                              cmd("SRANDMEMBER s -5"), cmd("HRANDFIELD h 2 WITHVALUES"), cmd("SCARD s"),
                              cmd("EXEC")])
        assert replies[0] == b"+OK\r\n" and all(r == b"+QUEUED\r\n" for r in replies[1:-1])
        _, results = parse(replies[-1])
        popped = {b for _, b in results[0][1]} | {results[1][1]}
        rest = {b for _, b in results[2][1]}
        assert len(popped) == 3 and not popped & rest
        assert popped | rest == {b"a", b"b", b"c", b"d", b"e", b"f"}
        assert len(results[3][1]) == 5 and {b for _, b in results[3][1]} <= rest
        pairs = results[4][1]
        assert len(pairs) == 2 and all(p[1][0][1] in (b"f1", b"f2", b"f3") for p in pairs)
        assert all(p[1][1][1] == b"v" + p[1][0][1][1:] for p in pairs)
        assert len({p[1][0][1] for p in pairs}) == 2
        assert results[5] == (b":", b"3")
    finally:
        c.close()
