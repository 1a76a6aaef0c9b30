"""Differential test of Redis's integer rule at its edges: memd against a real redis-server 7.0.

memd reads every Redis integer with one function (:mod:`memd.int64`); this
test pins what that function and each command around it answer, byte for
byte, where a copy would most likely drift: the int64 limits and one past
them, "-0", "+1", blanks, leading zeros, the empty string, 20+ digits,
"1e3", "0x10" and non-ASCII digits. Each value goes through every kind of
place Redis reads an integer (and, for ZINCRBY/ZADD, a float):

- an argument: INCRBY/DECRBY/HINCRBY increments, LRANGE/LTRIM/LINDEX/ZRANGE
  ranks, LIMIT offsets, LPOP counts, EXPIRE/PEXPIRE/EXPIREAT/PEXPIREAT and
  SET/SETEX/PSETEX/GETEX expiry times, SELECT and HELLO;
- a stored value: INCR/DECR of a string, HINCRBY of a hash field, read from
  the buffer and again after a flush to SQLite;
- a computed result: INCRBY/DECRBY/HINCRBY overflow, expiry-time overflow;
- the RESP framing: array and bulk lengths (through a real daemon).

In-process handlers on RESP2 and RESP3 (as test_differential_handlers.py),
then the same cases pipelined through a ``memd serve`` process, then raw
frames. redis-server is a hard requirement: without it this test fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import memd.commands.connection  # noqa: F401  (registers SELECT and HELLO for the in-process side)
from memd.engine.engine import Engine
from tests.integration.test_differential_handlers import Pair as HandlerPair
from tests.integration.test_differential_handlers import (  # noqa: F401  (redis_socket is a fixture)
    pack,
    redis_socket,
    same,
)
from tests.integration.test_differential_server import Conn, memd_socket  # noqa: F401  (memd_socket: fixture)
from tests.integration.test_differential_server import Pair as ServerPair

pytestmark = pytest.mark.timeout(120)

INT64_MAX, INT64_MIN = (1 << 63) - 1, -(1 << 63)

# Spelled out, not computed with memd's own code: each is an edge of Redis's string2ll.
INT_EDGES: list[bytes] = [
    b"9223372036854775807", b"9223372036854775806", b"9223372036854775808",  # LLONG_MAX, -1, +1
    b"-9223372036854775808", b"-9223372036854775807", b"-9223372036854775809",  # LLONG_MIN, +1, -1
    b"9223372036854775", b"9223372036854776", b"-9223372036854775", b"-9223372036854776",  # LLONG_MAX/1000
    b"0", b"-0", b"+1", b"+0", b"-", b"+", b"", b" 1", b"1 ", b"\t1", b"01", b"-01", b"00",
    b"99999999999999999999", b"-99999999999999999999", b"18446744073709551616", b"123456789012345678901",
    b"00000000000000000001", b"-0000000000000000001",
    b"1e3", b"0x10", b"1.0", b"1.", b"1_0", b"1\x00", b"\xd9\xa1",  # the last: ARABIC-INDIC DIGIT ONE
]
# ZINCRBY and ZADD read a float (string2d): the integer edges plus a float's own
FLOAT_EDGES: list[bytes] = INT_EDGES + [
    b"inf", b"-inf", b"+inf", b"nan", b"1e308", b"1e309", b"-1e309", b"1e-400", b"4.9e-324", b".5", b"0x1p3",
    b"1e", b"e1", b"--1", b"9007199254740993",
]

FLUSH = [b"<flush>"]  # a step that moves memd's buffer to SQLite (not sent to Redis)
Case = list[list[bytes]]


def int_cases(e: bytes) -> list[Case]:
    """Command sequences (each after FLUSHALL) that read ``e`` as an integer."""
    cases: list[Case] = []
    # a stored string INCR/DECR/INCRBY read, from the buffer and from SQLite
    for flushed in ([], [FLUSH]):
        cases += [
            [[b"SET", b"k", e], *flushed, [b"INCR", b"k"], [b"GET", b"k"]],
            [[b"SET", b"k", e], *flushed, [b"DECR", b"k"], [b"GET", b"k"]],
            [[b"SET", b"k", e], *flushed, [b"INCRBY", b"k", b"-1"], [b"DECRBY", b"k", b"-2"], [b"GET", b"k"]],
            [[b"HSET", b"h", b"f", e], *flushed, [b"HINCRBY", b"h", b"f", b"1"], [b"HINCRBY", b"h", b"f", b"-2"],
             [b"HGET", b"h", b"f"]],
        ]
    # an increment, and the result's overflow
    for start in (None, b"1", b"-1", b"-2"):
        setup = [] if start is None else [[b"SET", b"k", start], [b"HSET", b"h", b"f", start]]
        cases += [
            [*setup, [b"INCRBY", b"k", e], [b"INCRBY", b"k", e], [b"GET", b"k"]],
            [*setup, [b"DECRBY", b"k", e], [b"DECRBY", b"k", e], [b"GET", b"k"]],
            [*setup, [b"HINCRBY", b"h", b"f", e], [b"HINCRBY", b"h", b"f", e], [b"HGET", b"h", b"f"]],
        ]
    # ranks and counts
    push = [b"RPUSH", b"l", b"a", b"b", b"c", b"d", b"e"]
    zadd = [b"ZADD", b"z", b"1", b"a", b"2", b"b", b"3", b"c", b"4", b"d"]
    for flushed in ([], [FLUSH]):
        cases += [
            [push, *flushed, [b"LRANGE", b"l", e, b"-1"], [b"LRANGE", b"l", b"0", e], [b"LRANGE", b"l", e, e],
             [b"LRANGE", b"l", b"-2", e], [b"LINDEX", b"l", e], [b"LPOP", b"l", e], [b"LRANGE", b"l", b"0", b"-1"]],
            [push, *flushed, [b"LTRIM", b"l", e, b"-1"], [b"LRANGE", b"l", b"0", b"-1"], [b"LLEN", b"l"]],
            [push, *flushed, [b"LTRIM", b"l", b"1", e], [b"LRANGE", b"l", b"0", b"-1"], [b"RPOP", b"l", e]],
            [zadd, *flushed, [b"ZRANGE", b"z", e, b"-1"], [b"ZRANGE", b"z", b"0", e, b"WITHSCORES"],
             [b"ZRANGE", b"z", e, e, b"REV"], [b"ZREVRANGE", b"z", e, b"-1"],
             [b"ZRANGE", b"z", b"-inf", b"+inf", b"BYSCORE", b"LIMIT", e, b"2"],
             [b"ZRANGE", b"z", b"-inf", b"+inf", b"BYSCORE", b"LIMIT", b"1", e],
             [b"ZRANGEBYSCORE", b"z", b"-inf", b"+inf", b"LIMIT", e, e],
             [b"ZRANGE", b"z", b"[a", b"+", b"BYLEX", b"LIMIT", b"0", e]],
        ]
    # expiry times: relative, absolute, seconds (x1000 may overflow), milliseconds (+now may overflow)
    for name in (b"EXPIRE", b"PEXPIRE", b"EXPIREAT", b"PEXPIREAT"):
        cases.append([[b"SET", b"k", b"v"], [name, b"k", e], [b"PTTL", b"k"], [b"EXISTS", b"k"]])
        cases.append([[b"SET", b"k", b"v"], [name, b"k", e, b"GT"], [name, b"nokey", e], [b"PTTL", b"k"]])
    for unit in (b"EX", b"PX", b"EXAT", b"PXAT"):
        cases.append([[b"SET", b"k", b"v", unit, e], [b"PTTL", b"k"], [b"GET", b"k"]])
        cases.append([[b"SET", b"k", b"v"], [b"GETEX", b"k", unit, e], [b"PTTL", b"k"]])
    cases.append([[b"SETEX", b"k", e, b"v"], [b"PTTL", b"k"]])
    cases.append([[b"PSETEX", b"k", e, b"v"], [b"PTTL", b"k"]])
    return cases


def float_cases(e: bytes) -> list[Case]:
    """Command sequences that read ``e`` as a sorted-set score (Redis's string2d, not string2ll)."""
    return [
        [[b"ZINCRBY", b"z", e, b"m"], [b"ZINCRBY", b"z", e, b"m"], [b"ZSCORE", b"z", b"m"]],
        [[b"ZADD", b"z", b"1", b"m"], [b"ZINCRBY", b"z", e, b"m"], [b"ZINCRBY", b"z", b"-inf", b"m"],
         [b"ZSCORE", b"z", b"m"]],
        [[b"ZADD", b"z", b"-1", b"m"], FLUSH, [b"ZINCRBY", b"z", e, b"m"], [b"ZRANGE", b"z", b"0", b"-1", b"WITHSCORES"]],
        [[b"ZADD", b"z", e, b"m"], [b"ZADD", b"z", b"INCR", e, b"m"], [b"ZSCORE", b"z", b"m"]],
    ]


def error_only_cases(e: bytes) -> list[list[bytes]]:
    """Commands whose successful replies differ by design (ids, versions, cursors): errors must match."""
    assert e not in (b"2", b"3"), "HELLO 2/3 would switch one side's protocol"
    return [[b"SELECT", e], [b"HELLO", e], [b"SCAN", b"0", b"COUNT", e]]


def all_cases() -> list[tuple[str, Case]]:
    out = [(f"int {e!r}", c) for e in INT_EDGES for c in int_cases(e)]
    return out + [(f"float {e!r}", c) for e in FLOAT_EDGES for c in float_cases(e)]


# ---- in-process handlers ------------------------------------------------------------------------------

def _check_error_only(pair: HandlerPair | ServerPair, args: list[bytes], where: str) -> None:
    pair.count += 1
    expected, got = pair.redis.call(args), pair.memd.call(args)
    if expected.startswith(b"-") or got.startswith(b"-"):
        ok = expected == got
    else:
        ok = True  # both succeeded: the reply's content differs by design
    if not ok:
        pair.mismatches.append(f"[{where} resp{pair.protocol}] {args!r}\n    redis: {expected!r}\n"
                               f"    memd:  {got!r}")


@pytest.mark.anyio
@pytest.mark.parametrize("protocol", [2, 3])
async def test_int64_edges_handlers(redis_socket: str, tmp_path: Path, protocol: int) -> None:
    async with Engine(str(tmp_path / "data")) as engine:
        pair = HandlerPair(redis_socket, engine, protocol)
        try:
            for where, case in all_cases():
                pair.run([b"FLUSHALL"], where)
                for step in case:
                    if step == FLUSH:
                        await engine.flush()  # the next reads merge SQLite with the buffer
                    else:
                        pair.run(step, where)
            for e in INT_EDGES:
                for args in error_only_cases(e):
                    _check_error_only(pair, args, f"errors {e!r}")
        finally:
            pair.close()
    assert pair.count > 5000, pair.count  # every case ran
    assert not pair.mismatches, f"{len(pair.mismatches)} of {pair.count} replies differ:\n" + \
        "\n".join(pair.mismatches[:40])


# ---- through a real daemon ------------------------------------------------------------------------------

@pytest.fixture
def server_pair(redis_socket: str, memd_socket: str) -> Iterator[ServerPair]:  # noqa: F811
    p = ServerPair(redis_socket, memd_socket, 2)
    try:
        yield p
    finally:
        p.close()


def test_int64_edges_server(server_pair: ServerPair) -> None:
    """The same cases through ``memd serve``: the RESP parser and the dispatch as clients meet them."""
    pair = server_pair
    for where, case in all_cases():
        pair.run([b"FLUSHALL"], where)
        batch: list[list[bytes]] = []
        for step in case:
            if step == FLUSH:
                pair.pipeline(batch, where)
                batch = []
                pair.memd_flush()
            else:
                batch.append(step)
        pair.pipeline(batch, where)
    for e in INT_EDGES:
        for args in error_only_cases(e):
            _check_error_only(pair, args, f"errors {e!r}")
    assert pair.count > 2500, pair.count
    pair.assert_clean()


QUIT = pack([b"QUIT"])


def _until_close(path: str, payload: bytes) -> bytes:
    c = Conn(path, 2)  # its socket timeout fails a server that never answers or never closes
    try:
        c.sock.sendall(payload)
        chunks = []
        while True:
            try:
                data = c.sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)
    finally:
        c.close()


# Array and bulk lengths are read with the same rule: each edge in each place, then QUIT. Not a
# length with a NUL in it: Redis looks for the line's end with strchr(), which stops at the NUL, so
# it waits for more bytes (up to 64 KiB) instead of reading the length at all.
FRAME_EDGES = [e for e in INT_EDGES if b"\x00" not in e]
FRAMES = [(f"array length {e!r}", b"*" + e + b"\r\n" + pack([b"PING"]) + QUIT) for e in FRAME_EDGES] + \
         [(f"bulk length {e!r}", b"*2\r\n$4\r\nECHO\r\n$" + e + b"\r\nhi\r\n" + QUIT) for e in FRAME_EDGES]


@pytest.mark.parametrize("name,payload", FRAMES, ids=[f[0] for f in FRAMES])
def test_int64_edges_framing(redis_socket: str, memd_socket: str, name: str, payload: bytes) -> None:  # noqa: F811
    """Every byte until the server closes: the replies, the protocol error, or the QUIT's +OK."""
    expected = _until_close(redis_socket, payload)
    got = _until_close(memd_socket, payload)
    assert got == expected, f"{name}:\n    redis: {expected[:300]!r}\n    memd:  {got[:300]!r}"
