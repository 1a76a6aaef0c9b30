"""Differential test of the sorted-set family: a memd daemon against redis-server 7.0, byte for byte.

Reuses test_differential_server.py's daemon, connections and reply comparison
(MULTI-aware): a corpus of edge cases for every sorted-set command (ZPOPMIN,
ZMPOP, ZREMRANGEBY*, ZUNION/ZINTER/ZDIFF and their STORE forms, ZINTERCARD,
ZRANGESTORE, ZLEXCOUNT, ZSCAN of a small set...), then seeded random
sequences over a few keys holding sorted sets, sets and strings, some inside
MULTI/EXEC and pipelined, on RESP2 and RESP3, with memd's buffer flushed to
SQLite now and then so reads merge the store's score index with the buffer.

ZRANDMEMBER is random: it is checked by named properties (membership, counts,
no repeats with a positive count, scores equal to ZSCORE's, distribution).
A larger set checks ZSCAN's paging (every member exactly as stored, each at
least once) and score-ordered reads over a set split between SQLite and the
buffer. redis-server is a hard requirement: without it this test fails.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator

import pytest

from tests.integration.diffkit import corpus_over_daemon, random_over_daemon, split_corpus
from tests.integration.test_differential_handlers import cmd, parse
from tests.integration.test_differential_server import (  # noqa: F401  (fixtures)
    Pair,
    memd_socket,
    pair,
    redis_socket,
    transaction,
)

pytestmark = pytest.mark.timeout(120)

SEEDS = 10
STEPS = 200

CORPUS = r"""
# pops
ZADD z 1 a 2 b 3 c 4 d 5 e
ZPOPMIN z
ZPOPMAX z
ZPOPMIN z 2
ZPOPMAX z 0
ZPOPMIN z -1
ZPOPMIN z abc
ZPOPMIN z 1 2
ZPOPMAX z 10
EXISTS z
ZPOPMIN nokey
ZPOPMIN nokey 3
ZPOPMAX nokey 0
SET str v
ZPOPMIN str
ZPOPMIN str 0
ZADD z 1 a 2 b 3 c
ZADD y 10 x
ZMPOP 1 z MIN
ZMPOP 2 nokey z MAX COUNT 5
ZMPOP 2 nokey y MIN COUNT 1
ZMPOP 1 nokey MIN
ZMPOP 0 z MIN
ZMPOP -1 z MIN
ZMPOP abc z MIN
ZMPOP 1 z
ZMPOP 2 z MIN
ZMPOP 1 z MID
ZMPOP 1 z MIN COUNT 0
ZMPOP 1 z MIN COUNT -1
ZMPOP 1 z MIN COUNT x
ZMPOP 1 z MIN COUNT 1 COUNT 2
ZMPOP 1 z MIN BOGUS
ZMPOP 2 str z MIN
ZMPOP 2 nokey str MIN
ZADD z 1 a
ZMPOP 2 z str MIN
# removing ranges
ZADD z 1 a 2 b 3 c 4 d 5 e 6 f
ZREMRANGEBYRANK z 0 0
ZREMRANGEBYRANK z -1 -1
ZREMRANGEBYRANK z 5 10
ZREMRANGEBYRANK z 2 1
ZREMRANGEBYRANK z a 1
ZREMRANGEBYRANK nokey 0 -1
ZREMRANGEBYRANK str 0 -1
ZRANGE z 0 -1 WITHSCORES
ZREMRANGEBYSCORE z (2 4
ZREMRANGEBYSCORE z abc 4
ZREMRANGEBYSCORE str abc 4
ZREMRANGEBYSCORE str 1 4
ZREMRANGEBYSCORE nokey -inf +inf
ZREMRANGEBYSCORE z 10 1
ZRANGE z 0 -1 WITHSCORES
ZREMRANGEBYSCORE z -inf +inf
EXISTS z
ZADD lx 0 a 0 b 0 c 0 d 0 e 0 f
ZREMRANGEBYLEX lx [b (d
ZREMRANGEBYLEX lx - (a
ZREMRANGEBYLEX lx x y
ZREMRANGEBYLEX str [a [b
ZREMRANGEBYLEX nokey - +
ZRANGE lx 0 -1
ZLEXCOUNT lx - +
ZLEXCOUNT lx [d +
ZLEXCOUNT lx (a [e
ZLEXCOUNT lx a b
ZLEXCOUNT nokey - +
ZLEXCOUNT str - +
ZREMRANGEBYLEX lx - +
EXISTS lx
# set operations
ZADD z1 1 a 2 b 3 c
ZADD z2 10 b 20 c 30 d
SADD s1 a d x
ZUNION 2 z1 z2
ZUNION 2 z1 z2 WITHSCORES
ZUNION 3 z1 z2 s1 WITHSCORES
ZUNION 2 z1 z2 WEIGHTS 2 0.5 WITHSCORES
ZUNION 2 z1 z2 AGGREGATE MIN WITHSCORES
ZUNION 2 z1 z2 AGGREGATE max WITHSCORES
ZUNION 2 z1 z2 AGGREGATE avg
ZUNION 2 z1 z2 WEIGHTS 1
ZUNION 2 z1 z2 WEIGHTS 1 x
ZUNION 2 z1 z2 WEIGHTS 1 nan
ZUNION 2 z1 z2 WEIGHTS 1 inf WITHSCORES
ZUNION 2 z1 z2 WEIGHTS 0 inf WITHSCORES
ZUNION 0 z1
ZUNION -1 z1
ZUNION x z1
ZUNION 3 z1 z2
ZUNION 1 z1 BOGUS
ZUNION 2 z1 str
ZUNION 2 z1 str BOGUS
ZUNION 2 z1 nokey WITHSCORES
ZUNION 1 nokey
ZINTER 2 z1 z2
ZINTER 2 z1 z2 WITHSCORES
ZINTER 2 z1 s1 WITHSCORES
ZINTER 2 z1 z2 WEIGHTS 1 -1 WITHSCORES
ZINTER 2 z1 z2 AGGREGATE MAX WITHSCORES
ZINTER 2 z1 nokey
ZINTER 2 z1 z1 WITHSCORES
ZINTER 2 z1 str
ZDIFF 2 z1 z2
ZDIFF 2 z1 z2 WITHSCORES
ZDIFF 2 z1 s1 WITHSCORES
ZDIFF 2 z1 z1
ZDIFF 1 z1 WITHSCORES
ZDIFF 2 z1 z2 WEIGHTS 1 1
ZDIFF 2 z1 z2 AGGREGATE SUM
ZDIFF 2 nokey z1
ZINTERCARD 2 z1 z2
ZINTERCARD 2 z1 z2 LIMIT 1
ZINTERCARD 2 z1 z2 LIMIT 0
ZINTERCARD 2 z1 z2 LIMIT -1
ZINTERCARD 2 z1 z2 LIMIT x
ZINTERCARD 2 z1 z2 WITHSCORES
ZINTERCARD 0 z1
ZINTERCARD 1 str
ZINTERCARD 2 z1 s1
ZUNIONSTORE dst 2 z1 z2
ZRANGE dst 0 -1 WITHSCORES
ZUNIONSTORE dst 2 z1 z2 WEIGHTS 1 2 AGGREGATE MIN
ZRANGE dst 0 -1 WITHSCORES
ZUNIONSTORE dst 2 z1 z2 WITHSCORES
ZUNIONSTORE str 1 z1
TYPE str
ZINTERSTORE dst 2 z1 z2
ZRANGE dst 0 -1 WITHSCORES
ZINTERSTORE dst 2 z1 nokey
EXISTS dst
ZINTERSTORE dst 2 z1 nokey
ZDIFFSTORE dst 2 z1 z2
ZRANGE dst 0 -1 WITHSCORES
ZDIFFSTORE dst 2 z1 z1
EXISTS dst
SET str v
SET ttl v EX 1000
ZUNIONSTORE ttl 1 z1
TTL ttl
ZUNIONSTORE z1 2 z1 z2
ZRANGE z1 0 -1 WITHSCORES
ZUNIONSTORE neg 1 z1 WEIGHTS -0
ZRANGE neg 0 -1 WITHSCORES
ZSCORE neg a
ZADD inf1 inf a -inf b
ZADD inf2 -inf a inf b
ZUNION 2 inf1 inf2 WITHSCORES
ZINTER 2 inf1 inf2 WITHSCORES
ZINTER 2 inf1 inf2 AGGREGATE MIN WITHSCORES
ZUNIONSTORE x 2 inf1 inf2
ZRANGE x 0 -1 WITHSCORES
ZADD f 0.1 a 0.2 b
ZADD g 0.3 a 1e17 b
SADD h a b
ZUNION 3 f g h WITHSCORES
ZUNION 3 h g f WITHSCORES
ZUNIONSTORE fs 2 f g
ZSCORE fs a
ZSCAN fs 0
# zrangestore
ZADD z 1 a 2 b 3 c 4 d 5 e
ZRANGESTORE dst z 0 2
ZRANGE dst 0 -1 WITHSCORES
ZRANGESTORE dst z 1 3 REV
ZRANGE dst 0 -1 WITHSCORES
ZRANGESTORE dst z (1 +inf BYSCORE LIMIT 1 2
ZRANGE dst 0 -1 WITHSCORES
ZRANGESTORE dst z +inf (1 BYSCORE REV LIMIT 0 2
ZRANGE dst 0 -1 WITHSCORES
ZRANGESTORE dst z [b [d BYLEX
ZRANGE dst 0 -1 WITHSCORES
ZRANGESTORE dst z 0 -1 WITHSCORES
ZRANGESTORE dst z 0 -1 LIMIT 0 1
ZRANGESTORE dst z a b BYSCORE
ZRANGESTORE dst z 10 20
EXISTS dst
ZRANGESTORE dst nokey 0 -1
ZRANGESTORE dst str 0 -1
ZRANGESTORE str z 0 0
TYPE str
ZRANGESTORE dst z
# scan and random of a small set
ZADD z 1 a 2.5 b -3 c 1e17 d 0.1 e inf f
ZSCAN z 0
ZSCAN z 0 COUNT 1
ZSCAN z 0 MATCH [a-c]
ZSCAN z 0 MATCH * COUNT 100
ZSCAN z 0 COUNT 0
ZSCAN z 0 COUNT x
ZSCAN z 0 BOGUS
ZSCAN z 0 TYPE zset
ZSCAN z x
ZSCAN z -1
ZSCAN nokey 0
ZSCAN nokey 0 COUNT 0
ZSCAN str 0
ZSCAN str 0 BOGUS
ZRANDMEMBER nokey
ZRANDMEMBER nokey 5
ZRANDMEMBER nokey 5 WITHSCORES
ZRANDMEMBER str
ZRANDMEMBER str 1
ZRANDMEMBER z 0
ZRANDMEMBER z 0 WITHSCORES
ZRANDMEMBER z 10
ZRANDMEMBER z 10 WITHSCORES
ZRANDMEMBER z 6 WITHSCORES
ZRANDMEMBER z x
ZRANDMEMBER z 1 BOGUS
ZRANDMEMBER z 1 WITHSCORES x
ZRANDMEMBER z -9223372036854775808
ZRANDMEMBER z 9223372036854775807 WITHSCORES
ZRANDMEMBER z -9223372036854775807 WITHSCORES
# counts and ranks
ZADD z 1 a 1 b 1 c 2 d 3 e
ZCOUNT z 1 1
ZCOUNT z (1 3
ZCOUNT z -inf (1
ZCOUNT z (3 +inf
ZCOUNT z 3 1
ZCOUNT z (1 (1
ZCOUNT z inf +inf
ZCOUNT z -inf -inf
ZRANK z c
ZREVRANK z c
ZRANK z e
ZREVRANK z a
ZRANGE z (1 (3 BYSCORE
ZRANGE z (1 (3 BYSCORE REV
ZRANGE z 3 (1 BYSCORE REV
ZRANGE z -1 -3
ZRANGE z -3 -1 REV WITHSCORES
ZRANGE z 1 -2 REV
"""


def corpus_blocks() -> list[list[str]]:
    return split_corpus(CORPUS)


def test_corpus(pair: Pair) -> None:
    corpus_over_daemon(pair, corpus_blocks(), flush_every=7)  # (its ZRANDMEMBERs ask for the whole set)


# ---- random sequences ---------------------------------------------------------------------------

KEYS = ["z0", "z1", "z2", "s0", "str"]
MEMBERS = ["a", "b", "c", "d", "e", "f", "", "m\x00x"]
SCORES = ["0", "1", "-1", "2.5", "3", "10", "-0", "inf", "-inf", "1e17", "0.1"]
BOUNDS = ["-inf", "+inf", "0", "1", "(1", "2.5", "(2.5", "10", "(10", "-1", "inf", "(inf", "(-inf"]
LEX = ["-", "+", "[b", "(b", "[d", "(d", "[", "(", "[m"]
INTS = ["0", "1", "-1", "2", "-2", "3", "5", "-5", "10"]


def random_command(rng: random.Random) -> list[str]:
    k = rng.choice(KEYS)
    m = lambda: rng.choice(MEMBERS)  # noqa: E731
    b = lambda: rng.choice(BOUNDS)  # noqa: E731
    i = lambda: rng.choice(INTS)  # noqa: E731
    lex = lambda: rng.choice(LEX)  # noqa: E731
    many = lambda g: [g() for _ in range(rng.randint(1, 3))]  # noqa: E731

    def srcs() -> list[str]:
        keys = [rng.choice(KEYS + ["nokey"]) for _ in range(rng.randint(1, 3))]
        return [str(len(keys)), *keys]

    def setop_opts(n: int, store: bool) -> list[str]:
        opts: list[str] = []
        if rng.random() < 0.4:
            opts += ["WEIGHTS", *[rng.choice(["1", "2", "-1", "0.5", "0", "inf"]) for _ in range(n)]]
        if rng.random() < 0.4:
            opts += ["AGGREGATE", rng.choice(["SUM", "MIN", "MAX"])]
        if not store and rng.random() < 0.6:
            opts.append("WITHSCORES")
        return opts

    def setop() -> list[str]:
        name = rng.choice(["ZUNION", "ZINTER", "ZDIFF", "ZUNIONSTORE", "ZINTERSTORE", "ZDIFFSTORE", "ZINTERCARD"])
        args = srcs()
        n = int(args[0])
        if name == "ZINTERCARD":
            return [name, *args, *rng.choice([[], ["LIMIT", rng.choice(["0", "1", "2"])]])]
        store = name.endswith("STORE")
        opts = setop_opts(n, store)
        if name.startswith("ZDIFF"):
            opts = [o for o in opts if o == "WITHSCORES"]
        return [name, *([rng.choice(KEYS)] if store else []), *args, *opts]

    def rangestore() -> list[str]:
        kind = rng.choice(["", "BYSCORE", "BYLEX"])
        lo, hi = {"": (i(), i()), "BYSCORE": (b(), b()), "BYLEX": (lex(), lex())}[kind]
        opts = [kind] if kind else []
        if rng.random() < 0.3:
            opts.append("REV")
        if kind and rng.random() < 0.4:
            opts += ["LIMIT", rng.choice(["0", "1"]), rng.choice(["1", "2", "-1"])]
        return ["ZRANGESTORE", rng.choice(KEYS), k, lo, hi, *opts]

    choices = [
        lambda: ["ZADD", k, *[x for _ in range(rng.randint(1, 4)) for x in (rng.choice(SCORES), m())]],
        lambda: ["ZADD", k, *[x for _ in range(rng.randint(1, 4)) for x in (rng.choice(SCORES), m())]],
        lambda: ["ZINCRBY", k, rng.choice(SCORES), m()],
        lambda: ["ZREM", k, *many(m)],
        lambda: ["SADD", k, *many(m)],
        lambda: ["SET", k, "v"] if rng.random() < 0.3 else ["DEL", k],
        lambda: [rng.choice(["ZPOPMIN", "ZPOPMAX"]), k, *rng.choice([[], [rng.choice(["0", "1", "2", "10"])]])],
        lambda: ["ZMPOP", *srcs(), rng.choice(["MIN", "MAX"]), *rng.choice([[], ["COUNT", rng.choice(["1", "3"])]])],
        lambda: ["ZREMRANGEBYRANK", k, i(), i()],
        lambda: ["ZREMRANGEBYSCORE", k, b(), b()],
        lambda: ["ZREMRANGEBYLEX", k, lex(), lex()],
        lambda: ["ZLEXCOUNT", k, lex(), lex()],
        setop,
        setop,
        rangestore,
        lambda: ["ZCOUNT", k, b(), b()],
        lambda: [rng.choice(["ZRANK", "ZREVRANK"]), k, m()],
        lambda: ["ZMSCORE", k, *many(m)],
        lambda: ["ZRANGE", k, b(), b(), "BYSCORE", *rng.choice([[], ["REV"]]),
                 *rng.choice([[], ["LIMIT", rng.choice(["0", "1", "2"]), rng.choice(["1", "2", "-1"])]]),
                 *rng.choice([[], ["WITHSCORES"]])],
        lambda: [rng.choice(["ZRANGEBYSCORE", "ZREVRANGEBYSCORE"]), k, b(), b(),
                 *rng.choice([[], ["WITHSCORES"], ["LIMIT", "1", "2"], ["WITHSCORES", "LIMIT", "0", "-1"]])],
        lambda: ["ZRANGE", k, i(), i(), *rng.choice([[], ["REV"], ["WITHSCORES"]])],
        lambda: ["ZCARD", k],
        lambda: ["ZRANGE", k, "0", "-1", "WITHSCORES"],
    ]
    return rng.choice(choices)()


def single(rng: random.Random) -> list[bytes]:
    return [a.encode() for a in random_command(rng)]


def test_random_sequences(pair: Pair) -> None:
    """Seeded random sorted-set commands, some inside MULTI/EXEC and pipelined, flushes between."""
    def step(rng: random.Random, where: str) -> None:
        roll = rng.random()
        if roll < 0.08:
            cmds = [[b"MULTI"], *(single(rng) for _ in range(rng.randint(1, 5))), [b"EXEC"]]
            for args in cmds:
                pair.run(args, where + " tx")
        elif roll < 0.14:
            pair.pipeline([single(rng) for _ in range(rng.randint(2, 8))], where + " batch")
        else:
            pair.run(single(rng), where)

    def read_every_key(pair: Pair, where: str) -> None:
        for key in KEYS:
            pair.run([b"ZRANGE", key.encode(), b"0", b"-1", b"WITHSCORES"], where)
    random_over_daemon(pair, step, seeds=SEEDS, steps=STEPS, seed_base=7000, flush_chance=0.04,
                       after_seed=read_every_key)


def test_transactions_mixed(pair: Pair) -> None:
    """The shared generator's transactions (any type) interleaved with sorted-set writes."""
    rng = random.Random(99 + pair.protocol)
    for step in range(60):
        for args in transaction(rng):
            pair.run(args, f"mixed {step}")
        pair.run(single(rng), f"mixed {step}")
    pair.assert_clean()


# ---- larger sets: paging, and reads over the store's index + the buffer ---------------------------

def _members(raw: bytes) -> list[bytes]:
    kind, items = parse(raw)
    return [item[1] for item in items]


def test_large_set_ranges(pair: Pair) -> None:
    """1,000 members, half flushed to SQLite, then changes in the buffer: every ordered read agrees."""
    rng = random.Random(5)
    for j in range(0, 1000, 100):
        pair.run([b"ZADD", b"big", *[x for n in range(j, j + 100) for x in
                                      (b"%d" % rng.randint(-50, 50), b"m%04d" % n)]], "fill")
    pair.memd_flush()
    for j in range(200):  # rescore, remove and add over the flushed members
        n = rng.randrange(1200)
        if rng.random() < 0.3:
            pair.run([b"ZREM", b"big", b"m%04d" % n], "change")
        else:
            pair.run([b"ZADD", b"big", b"%d" % rng.randint(-60, 60), b"m%04d" % n], "change")
    for round_ in range(2):
        for lo, hi in (("-inf", "+inf"), ("(0", "10"), ("-5", "(5"), ("55", "60"), ("(-60", "-50")):
            pair.run(cmd(f"ZRANGEBYSCORE big {lo} {hi} LIMIT 0 10"), "range")
            pair.run(cmd(f"ZRANGEBYSCORE big {lo} {hi} WITHSCORES LIMIT 100 7"), "range")
            pair.run(cmd(f"ZREVRANGEBYSCORE big {hi} {lo} LIMIT 3 10"), "range")
            pair.run(cmd(f"ZCOUNT big {lo} {hi}"), "count")
        for n in range(0, 1200, 37):
            pair.run([b"ZRANK", b"big", b"m%04d" % n], "rank")
            pair.run([b"ZREVRANK", b"big", b"m%04d" % n], "rank")
        for start, stop in (("0", "9"), ("500", "510"), ("-10", "-1"), ("-600", "-590"), ("990", "2000")):
            pair.run(cmd(f"ZRANGE big {start} {stop} WITHSCORES"), "rank range")
            pair.run(cmd(f"ZRANGE big {start} {stop} REV"), "rank range")
        pair.run(cmd("ZPOPMIN big 3"), "pop")
        pair.run(cmd("ZPOPMAX big 2"), "pop")
        pair.run(cmd("ZREMRANGEBYSCORE big (40 45"), "rem")
        pair.run(cmd("ZREMRANGEBYRANK big 100 120"), "rem")
        pair.run(cmd("ZCARD big"), "card")
        pair.memd_flush()
    pair.assert_clean()


def test_large_set_lex(pair: Pair) -> None:
    """1,000 members of one score (BYLEX's use), half flushed: lex reads go through the index."""
    rng = random.Random(11)
    words = sorted({bytes(rng.choice(b"abcdefgh") for _ in range(rng.randint(1, 4))) for _ in range(1400)})
    for j in range(0, len(words), 200):
        pair.run([b"ZADD", b"lex", *[x for w in words[j:j + 200] for x in (b"0", w)]], "fill")
    pair.memd_flush()
    pair.run([b"ZREM", b"lex", *words[::9]], "change")
    pair.run([b"ZADD", b"lex", b"0", b"zz", b"0", b"", b"0", b"b\x00"], "change")
    bounds = [b"-", b"+", b"[a", b"(a", b"[bc", b"(bc", b"[d", b"(dh", b"[h", b"(hhhh", b"[", b"(", b"[b\x00"]
    for _ in range(80):
        lo, hi = rng.choice(bounds), rng.choice(bounds)
        pair.run([b"ZRANGEBYLEX", b"lex", lo, hi, b"LIMIT", rng.choice([b"0", b"3", b"-1"]), b"5"], "lex")
        pair.run([b"ZREVRANGEBYLEX", b"lex", hi, lo, b"LIMIT", b"2", b"4"], "lex")
        pair.run([b"ZLEXCOUNT", b"lex", lo, hi], "lex")
        pair.run([b"ZRANGE", b"lex", lo, hi, b"BYLEX", b"REV", b"LIMIT", b"0", b"3"], "lex")
    pair.run(cmd("ZREMRANGEBYLEX lex [c (e"), "rem")
    pair.run(cmd("ZRANGESTORE dst lex [a (b BYLEX"), "store")
    pair.run(cmd("ZRANGE dst 0 -1"), "store")
    pair.run(cmd("ZLEXCOUNT lex - +"), "count")
    pair.run(cmd("ZADD lex 1 zzz"), "mixed scores: the walk over every member")
    pair.run(cmd("ZRANGEBYLEX lex [a [b LIMIT 0 5"), "mixed")
    pair.run(cmd("ZLEXCOUNT lex - +"), "mixed")
    pair.assert_clean()


def _zscan_all(conn: object, key: bytes, opts: list[bytes]) -> tuple[Counter[bytes], dict[bytes, bytes]]:
    seen: Counter[bytes] = Counter()
    scores: dict[bytes, bytes] = {}
    cursor = b"0"
    for _ in range(10_000):
        kind, (cur, page) = parse(conn.call([b"ZSCAN", key, cursor, *opts]))  # type: ignore[attr-defined]
        cursor = cur[1]
        items = [item[1] for item in page[1]]
        for member, score in zip(items[::2], items[1::2]):
            seen[member] += 1
            scores[member] = score
        if cursor == b"0":
            return seen, scores
    raise AssertionError("ZSCAN did not finish")


def test_zscan_large(pair: Pair) -> None:
    """ZSCAN over 600 members split between SQLite and the buffer: every member, with its score
    written as Redis writes a big set's (``%.17Lg``)."""
    for j in range(0, 600, 100):
        pair.run([b"ZADD", b"big", *[x for n in range(j, j + 100) for x in (b"%d.5" % n, b"m%04d" % n)]], "fill")
    pair.memd_flush()
    pair.run(cmd("ZREM big m0001 m0300"), "change")
    pair.run(cmd("ZADD big 7 m0002 8 new1 9 a 1e17 huge 0.1 tenth -inf low"), "change")
    for opts in ([], [b"COUNT", b"1"], [b"COUNT", b"50"], [b"MATCH", b"m01*"], [b"COUNT", b"1000"]):
        seen, scores = _zscan_all(pair.memd, b"big", opts)
        assert scores == _zscan_all(pair.redis, b"big", opts)[1], "the same members with the same score text"
        expected = _members(pair.memd.call([b"ZRANGE", b"big", b"0", b"-1"]))
        if opts[:1] == [b"MATCH"]:
            expected = [m for m in expected if m.startswith(b"m01")]
        assert set(seen) == set(expected), opts
        for member in list(scores)[:50]:
            raw = pair.memd.call([b"ZSCORE", b"big", member])
            assert parse(raw)[1] == scores[member] or float(parse(raw)[1]) == float(scores[member])
    pair.assert_clean()


# ---- ZRANDMEMBER: properties -------------------------------------------------------------------

def _pairs(pair: Pair, raw: bytes) -> list[tuple[bytes, bytes]]:
    kind, items = parse(raw)
    if pair.protocol == 3:
        return [(it[1][0][1], it[1][1][1]) for it in items]
    flat = [it[1] for it in items]
    return list(zip(flat[::2], flat[1::2]))


@pytest.fixture
def members(pair: Pair) -> Iterator[dict[bytes, bytes]]:
    pair.run(cmd("ZADD r 1 a 2 b 3 c 4.5 d -1 e"), "setup")
    pair.memd_flush()
    pair.run(cmd("ZADD r 6 f"), "setup")
    kind, items = parse(pair.memd.call(cmd("ZRANGE r 0 -1 WITHSCORES")))
    if pair.protocol == 3:
        yield {it[1][0][1]: it[1][1][1] for it in items}
    else:
        flat = [it[1] for it in items]
        yield dict(zip(flat[::2], flat[1::2]))


def test_zrandmember_membership_and_shape(pair: Pair, members: dict[bytes, bytes]) -> None:
    for _ in range(30):
        kind, value = parse(pair.memd.call(cmd("ZRANDMEMBER r")))
        assert kind == b"$" and value in members
    for count in (1, 3, 6):
        picked = _members(pair.memd.call(cmd(f"ZRANDMEMBER r {count}")))
        assert len(picked) == count and len(set(picked)) == count, "no repeats with a positive count"
        assert set(picked) <= set(members)
    picked = _members(pair.memd.call(cmd("ZRANDMEMBER r 100")))
    assert picked == list(members)[::-1], "a count above the size is the whole set, from the top"
    huge = pair.memd.call(cmd("ZRANDMEMBER r -9223372036854775807"))
    assert huge.startswith(b"-ERR value is out of range"), "memd refuses a reply it would build whole"
    picked = _members(pair.memd.call(cmd("ZRANDMEMBER r -20")))
    assert len(picked) == 20 and set(picked) <= set(members), "a negative count may repeat"
    for count in ("4", "-9"):
        got = _pairs(pair, pair.memd.call(cmd(f"ZRANDMEMBER r {count} WITHSCORES")))
        assert len(got) == abs(int(count))
        assert all(members[m] == s for m, s in got), "each score is the member's"
        # the reply's shape is Redis's: compare with Redis on a one-member set, where nothing is random
    pair.run(cmd("ZADD one 2.5 x"), "shape")
    for line in ("ZRANDMEMBER one", "ZRANDMEMBER one 1", "ZRANDMEMBER one 3 WITHSCORES", "ZRANDMEMBER one -2",
                 "ZRANDMEMBER one -2 WITHSCORES", "ZRANDMEMBER one 1 WITHSCORES"):
        pair.run(cmd(line), "shape")
    pair.assert_clean()


def test_zrandmember_distribution(pair: Pair, members: dict[bytes, bytes]) -> None:
    """Every member is drawn, none far more often than the others (6 members, 3,000 draws)."""
    counts = Counter(_members(pair.memd.call(cmd("ZRANDMEMBER r -3000"))))
    assert set(counts) == set(members)
    assert all(350 <= n <= 650 for n in counts.values()), counts
