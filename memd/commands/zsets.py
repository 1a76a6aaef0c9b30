"""Sorted-set commands: ZADD ZINCRBY ZREM ZCARD ZSCORE ZMSCORE ZRANK ZREVRANK ZCOUNT, and the
range family ZRANGE [BYSCORE|BYLEX] [REV] [LIMIT] [WITHSCORES], ZREVRANGE, ZRANGEBYSCORE,
ZREVRANGEBYSCORE, ZRANGEBYLEX, ZREVRANGEBYLEX, ZRANGESTORE (the rest of the family:
:mod:`memd.commands.zsetops`).

Redis 7.0 semantics (``t_zset.c``). Numbers are read the way Redis reads
them, which is not Python's ``float()``: a score (``string2d``) rejects
"1_0", overflow ("1e400") and underflow to zero ("1e-400") but accepts hex
("0x10"); a range bound (``zslParseRange``, bare ``strtod``) also accepts
leading blanks, the empty string (0) and overflow (as +-inf).

WITHSCORES replies: RESP2 a flat array (member, score as bulk string, ...);
RESP3 an array of [member, double] pairs, as Redis 7 does. Scores of -0 are
stored as 0, as Redis does for every sorted set it keeps as a listpack
(up to 128 members of up to 64 bytes).

BYLEX over members whose scores differ is unspecified in Redis; here it
walks the score order exactly like Redis's listpack code does.
"""

from __future__ import annotations

import re
from typing import Any

from memd.commands import Context, command
from memd.commands.strings import SYNTAX, ll
from memd.errors import CommandError

NOT_FLOAT = "value is not a valid float"

_DEC = rb"[+-]?(?P<dm>[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_HEX = rb"[+-]?0[xX](?P<hm>[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)(?:[pP][+-]?[0-9]+)?"
_INF = rb"[+-]?[iI][nN][fF](?:[iI][nN][iI][tT][yY])?"
_NUMBER = re.compile(rb"(?P<inf>" + _INF + rb")|(?P<hex>" + _HEX + rb")|(?P<dec>" + _DEC + rb")")
_BLANKS = b" \t\n\v\f\r"
_INFS = (float("inf"), float("-inf"))


def _strtod(text: bytes) -> tuple[float, bool] | None:
    """C ``strtod`` consuming all of ``text`` (no blanks): (value, out of range) or None.

    Out of range is C's ERANGE with a result of +-HUGE_VAL (overflow) or 0
    (underflow): ``strtod`` still returns those values, ``string2d`` refuses them.
    """
    m = _NUMBER.fullmatch(text)
    if m is None:
        return None
    negative = text[:1] == b"-"
    if m.group("inf"):
        return (-1.0 if negative else 1.0) * float("inf"), False
    try:
        value = float.fromhex(text.decode()) if m.group("hex") else float(text)
    except OverflowError:
        return (-1.0 if negative else 1.0) * float("inf"), True
    if value in _INFS:
        return value, True
    if value == 0.0:
        mantissa = m.group("hm") if m.group("hex") else m.group("dm")
        if mantissa.strip(b"0.") != b"":
            return value, True  # a nonzero number that underflowed to zero
    return value, False


def parse_score(raw: bytes, what: str = NOT_FLOAT) -> float:
    """Redis ``string2d``: whole string, no leading blank, no overflow/underflow, never NaN."""
    if not raw or raw[0] in _BLANKS:
        raise CommandError(what)
    parsed = _strtod(raw)
    if parsed is None or parsed[1]:
        raise CommandError(what)
    return parsed[0]


def _range_bound(raw: bytes) -> tuple[float, bool] | None:
    """One ``zslParseRange`` bound: (value, exclusive) or None when it is not a float."""
    raw = raw.split(b"\0", 1)[0]  # Redis hands strtod a C string
    exclusive = raw[:1] == b"("
    if exclusive:
        raw = raw[1:]
    if not raw:
        return 0.0, exclusive  # strtod("") converts nothing, and nothing is left over
    body = raw.lstrip(_BLANKS)
    if not body:
        return None
    parsed = _strtod(body)
    if parsed is None:
        return None
    return parsed[0], exclusive


def _lex_bound(raw: bytes) -> tuple[bytes | int, bool] | None:
    """``zslParseLexRangeItem``: (value or -1/+1 for "-"/"+", exclusive) or None."""
    head = raw[:1]
    if head == b"+" and raw.split(b"\0", 1)[0] == b"+":
        return 1, True
    if head == b"-" and raw.split(b"\0", 1)[0] == b"-":
        return -1, True
    if head == b"(":
        return raw[1:], True
    if head == b"[":
        return raw[1:], False
    return None


def _lex_cmp(a: bytes | int, b: bytes | int) -> int:
    """``sdscmplex``: -1 ("-") is below every string, 1 ("+") above."""
    if a is b or a == b:
        return 0
    if a == -1 or b == 1:
        return -1
    if a == 1 or b == -1:
        return 1
    assert isinstance(a, bytes) and isinstance(b, bytes)
    return -1 if a < b else 1


def _norm(score: float) -> float:
    return score + 0.0  # -0.0 -> 0.0 (see module docstring)


# ---- ZADD / ZINCRBY --------------------------------------------------------------------------

def _zadd(ctx: Context, args: list[bytes], incr: bool) -> object:
    nx = xx = gt = lt = ch = False
    i = 1
    while i < len(args):
        opt = args[i].lower()
        if opt == b"nx":
            nx = True
        elif opt == b"xx":
            xx = True
        elif opt == b"ch":
            ch = True
        elif opt == b"incr":
            incr = True
        elif opt == b"gt":
            gt = True
        elif opt == b"lt":
            lt = True
        else:
            break
        i += 1
    rest = args[i:]
    if not rest or len(rest) % 2:
        raise CommandError(SYNTAX)
    if nx and xx:
        raise CommandError("XX and NX options at the same time are not compatible")
    if gt and nx or lt and nx or gt and lt:
        raise CommandError("GT, LT, and/or NX options at the same time are not compatible")
    if incr and len(rest) > 2:
        raise CommandError("INCR option supports a single increment-element pair")
    scores = [parse_score(rest[j]) for j in range(0, len(rest), 2)]
    ks = ctx.keyspace
    # Redis answers INCR on a new member with the increment itself, -0 included (it stores 0)
    negzero_new = incr and str(scores[0]) == "-0.0" and ks.zscore(args[0], rest[1]) is None
    pairs = [(_norm(score), member) for score, member in zip(scores, rest[1::2])]
    result = ks.zadd(args[0], pairs, nx=nx, xx=xx, gt=gt, lt=lt, ch=ch, incr=incr)
    if incr:
        if result is None:
            return None
        return -0.0 if negzero_new else float(result)
    return result


@command("zadd", -4, write=True)
def zadd(ctx: Context, args: list[bytes]) -> object:
    return _zadd(ctx, args, False)


@command("zincrby", 4, write=True)
def zincrby(ctx: Context, args: list[bytes]) -> object:
    return _zadd(ctx, args, True)  # Redis parses options here too: "ZINCRBY k nx m" is a syntax error


# ---- single members ------------------------------------------------------------------------

@command("zrem", -3, write=True)
def zrem(ctx: Context, args: list[bytes]) -> object:
    return ctx.keyspace.zrem(args[0], args[1:])


@command("zcard", 2)
def zcard(ctx: Context, args: list[bytes]) -> object:
    return ctx.keyspace.zcard(args[0])


@command("zscore", 3)
def zscore(ctx: Context, args: list[bytes]) -> object:
    return ctx.keyspace.zscore(args[0], args[1])


@command("zmscore", -3)
def zmscore(ctx: Context, args: list[bytes]) -> object:
    ks = ctx.keyspace
    if ks.zcard(args[0]) == 0:  # type check; a missing key answers nulls
        return [None] * (len(args) - 1)
    return [ks.zscore(args[0], m) for m in args[1:]]


def _rank(ctx: Context, args: list[bytes], rev: bool) -> object:
    return ctx.keyspace.zrank(args[0], args[1], rev)


@command("zrank", 3)
def zrank(ctx: Context, args: list[bytes]) -> object:
    return _rank(ctx, args, False)


@command("zrevrank", 3)
def zrevrank(ctx: Context, args: list[bytes]) -> object:
    return _rank(ctx, args, True)


@command("zcount", 4)
def zcount(ctx: Context, args: list[bytes]) -> object:
    lo, hi = _range_bound(args[1]), _range_bound(args[2])
    if lo is None or hi is None:
        raise CommandError("min or max is not a float")
    return ctx.keyspace.zcount(args[0], lo[0], lo[1], hi[0], hi[1])


# ---- ranges --------------------------------------------------------------------------------

_RANK, _SCORE, _LEX = "rank", "score", "lex"


def _lex_items(items: list[tuple[bytes, float]], lo: tuple[bytes | int, bool], hi: tuple[bytes | int, bool],
               rev: bool, offset: int, limit: int) -> list[tuple[bytes, float]]:
    """Redis's listpack walk (``zzlFirstInLexRange`` / ``zzlLastInLexRange`` + offset/limit)."""
    def gte_min(v: bytes) -> bool:
        c = _lex_cmp(v, lo[0])
        return c > 0 if lo[1] else c >= 0

    def lte_max(v: bytes) -> bool:
        c = _lex_cmp(v, hi[0])
        return c < 0 if hi[1] else c <= 0

    cmp = _lex_cmp(lo[0], hi[0])
    if not items or cmp > 0 or cmp == 0 and (lo[1] or hi[1]):
        return []
    if not gte_min(items[-1][0]) or not lte_max(items[0][0]):
        return []
    seq = items[::-1] if rev else items
    enter, stay = (lte_max, gte_min) if rev else (gte_min, lte_max)
    start = next((j for j, it in enumerate(seq) if enter(it[0])), None)
    if start is None or not stay(seq[start][0]):
        return []
    if offset < 0:
        return []  # Redis walks a negative offset off the end
    out = []
    for member, score in seq[start + offset:]:
        if limit == 0 or not stay(member):
            break
        out.append((member, score))
        limit -= 1
    return out


def _zrange(ctx: Context, args: list[bytes], rangetype: str | None, rev: bool | None,
            dst: bytes | None = None) -> object:
    """Every ZRANGE form; with ``dst`` (ZRANGESTORE) the range replaces ``dst`` instead of being
    returned (``args`` then starts at the source key)."""
    withscores = False
    offset, limit = 0, -1
    j, n = 3, len(args)
    while j < n:
        opt = args[j].lower()
        if opt == b"withscores" and dst is None:
            withscores = True
        elif opt == b"limit" and n - j - 1 >= 2:
            offset, limit = ll(args[j + 1]), ll(args[j + 2])
            j += 2
        elif rev is None and opt == b"rev":
            rev = True
        elif rangetype is None and opt == b"bylex":
            rangetype = _LEX
        elif rangetype is None and opt == b"byscore":
            rangetype = _SCORE
        else:
            raise CommandError(SYNTAX)
        j += 1
    rev = bool(rev)
    rangetype = rangetype or _RANK
    if limit != -1 and rangetype == _RANK:
        raise CommandError("syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX")
    if withscores and rangetype == _LEX:
        raise CommandError("syntax error, WITHSCORES not supported in combination with BYLEX")
    min_raw, max_raw = (args[2], args[1]) if rev and rangetype != _RANK else (args[1], args[2])
    ks = ctx.keyspace
    items: list[tuple[bytes, float]]
    if rangetype == _RANK:
        start, stop = ll(min_raw), ll(max_raw)
        items = ks.zrange_by_rank(args[0], start, stop, rev)
    elif rangetype == _SCORE:
        lo, hi = _range_bound(min_raw), _range_bound(max_raw)
        if lo is None or hi is None:
            raise CommandError("min or max is not a float")
        items = ks.zrange_by_score(args[0], lo[0], lo[1], hi[0], hi[1], rev, offset, limit)
    else:
        llo, lhi = _lex_bound(min_raw), _lex_bound(max_raw)
        if llo is None or lhi is None:
            raise CommandError("min or max not valid string range item")
        found = ks.zrange_by_lex(args[0], llo, lhi, rev, offset, limit)
        items = _lex_items(ks.zitems(args[0]), llo, lhi, rev, offset, limit) if found is None else found
    if dst is not None:
        return ks.zstore(dst, items)
    if not withscores:
        return [member for member, _ in items]
    if ctx.protocol >= 3:
        return [[member, score] for member, score in items]
    out: list[Any] = []
    for member, score in items:
        out += (member, score)
    return out


@command("zrange", -4)
def zrange(ctx: Context, args: list[bytes]) -> object:
    return _zrange(ctx, args, None, None)


@command("zrevrange", -4)
def zrevrange(ctx: Context, args: list[bytes]) -> object:
    return _zrange(ctx, args, _RANK, True)


@command("zrangebyscore", -4)
def zrangebyscore(ctx: Context, args: list[bytes]) -> object:
    return _zrange(ctx, args, _SCORE, False)


@command("zrevrangebyscore", -4)
def zrevrangebyscore(ctx: Context, args: list[bytes]) -> object:
    return _zrange(ctx, args, _SCORE, True)


@command("zrangebylex", -4)
def zrangebylex(ctx: Context, args: list[bytes]) -> object:
    return _zrange(ctx, args, _LEX, False)


@command("zrevrangebylex", -4)
def zrevrangebylex(ctx: Context, args: list[bytes]) -> object:
    return _zrange(ctx, args, _LEX, True)


@command("zrangestore", -5, write=True)
def zrangestore(ctx: Context, args: list[bytes]) -> object:
    return _zrange(ctx, args[1:], None, None, dst=args[0])
