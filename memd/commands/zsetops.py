"""Sorted-set commands beyond ranges: ZPOPMIN ZPOPMAX ZMPOP, ZREMRANGEBYRANK ZREMRANGEBYSCORE
ZREMRANGEBYLEX ZLEXCOUNT, ZUNION ZINTER ZDIFF and their STORE forms, ZINTERCARD, ZRANDMEMBER,
ZSCAN.

Redis 7.0 semantics (``t_zset.c``), including the order Redis checks things
in: a range is parsed before the key is looked up, the input keys of a set
operation are looked up (WRONGTYPE) before its options are parsed, and
ZSCAN looks at its options only when the key exists.

Set operations take sets as inputs too (each member scored 1), sort their
inputs by cardinality as Redis does (a SUM of doubles depends on the order
it adds them in), and turn a NaN (``inf - inf``, ``0 * inf``) into 0.
"""

from __future__ import annotations

import random
from typing import Any

from memd.commands import Context, command, parse_int
from memd.commands.keys import decode_cursor, encode_cursor, glob_match, scan_options
from memd.commands.strings import NOT_INT, SYNTAX, ll
from memd.commands.zsets import _lex_bound, _lex_items, _norm, _range_bound, parse_score
from memd.errors import CommandError
from memd.int64 import INT64_MAX
from memd.resp import NullArray

# ZSCAN of a set this small answers in one reply (cursor 0), as Redis does for a set it keeps
# as a listpack (128 members of up to 64 bytes: zset-max-listpack-entries / -value)
_ZSCAN_WHOLE_ENTRIES = 128
_ZSCAN_WHOLE_VALUE = 64
ZRANDMEMBER_MAX = 1 << 24  # members a negative ZRANDMEMBER count may ask for (see zrandmember)


def range_long(raw: bytes, lo: int, hi: int, msg: str | None = None) -> int:
    """Redis's ``getRangeLongFromObjectOrReply``: ``msg`` (when given) for a non-integer too."""
    value = parse_int(raw, msg or NOT_INT)
    if not lo <= value <= hi:
        raise CommandError(msg or f"value is out of range, value must between {lo} and {hi}")
    return value


def _pairs(ctx: Context, items: list[tuple[bytes, float]], nested: bool) -> list[Any]:
    """(member, score) pairs as Redis replies them: nested [[m, s], ...] or flat [m, s, ...]."""
    if nested:
        return [[member, score] for member, score in items]
    out: list[Any] = []
    for member, score in items:
        out += (member, score)
    return out


def _withscores(ctx: Context, items: list[tuple[bytes, float]], withscores: bool) -> list[Any]:
    if not withscores:
        return [member for member, _ in items]
    return _pairs(ctx, items, ctx.protocol >= 3)


# ---- ZPOPMIN / ZPOPMAX / ZMPOP -----------------------------------------------------------

def _zpop(ctx: Context, args: list[bytes], top: bool) -> object:
    if len(args) > 2:
        raise CommandError(SYNTAX)
    count = -1 if len(args) == 1 else range_long(args[1], 0, INT64_MAX, "value is out of range, must be positive")
    items = ctx.keyspace.zpop(args[0], 1 if count == -1 else count, top)
    if not items:
        return []
    return _pairs(ctx, items, ctx.protocol >= 3 and count != -1)


@command("zpopmin", -2, write=True)
def zpopmin(ctx: Context, args: list[bytes]) -> object:
    return _zpop(ctx, args, False)


@command("zpopmax", -2, write=True)
def zpopmax(ctx: Context, args: list[bytes]) -> object:
    return _zpop(ctx, args, True)


def mpop_args(args: list[bytes], sides: tuple[bytes, bytes]) -> tuple[list[bytes], bool, int]:
    """``numkeys key... WHERE [COUNT n]`` (after the timeout) as Redis's lmpop/zmpopGenericCommand
    reads it: (keys, whether the first of ``sides`` was named, count). LMPOP, ZMPOP and their
    blocking forms share it."""
    numkeys = range_long(args[0], 1, INT64_MAX, "numkeys should be greater than 0")
    where = numkeys + 1
    if where >= len(args):
        raise CommandError(SYNTAX)
    side = args[where].lower()
    if side not in sides:
        raise CommandError(SYNTAX)
    count = -1
    j = where + 1
    while j < len(args):
        if count == -1 and args[j].lower() == b"count" and j + 1 < len(args):
            count = range_long(args[j + 1], 1, INT64_MAX, "count should be greater than 0")
            j += 2
        else:
            raise CommandError(SYNTAX)
    return args[1:where], side == sides[0], max(count, 1)



@command("zmpop", -4, write=True)
def zmpop(ctx: Context, args: list[bytes]) -> object:
    keys, low, count = mpop_args(args, (b"min", b"max"))
    ks = ctx.keyspace
    for key in keys:
        items = ks.zpop(key, count, not low)  # WRONGTYPE from the first key that exists
        if items is not None:
            return [key, _pairs(ctx, items, True)]
    return NullArray


# ---- removing ranges, ZLEXCOUNT ------------------------------------------------------------

def _score_range(lo_raw: bytes, hi_raw: bytes) -> tuple[float, bool, float, bool]:
    lo, hi = _range_bound(lo_raw), _range_bound(hi_raw)
    if lo is None or hi is None:
        raise CommandError("min or max is not a float")
    return lo[0], lo[1], hi[0], hi[1]


def _lex_range(lo_raw: bytes, hi_raw: bytes) -> tuple[tuple[bytes | int, bool], tuple[bytes | int, bool]]:
    lo, hi = _lex_bound(lo_raw), _lex_bound(hi_raw)
    if lo is None or hi is None:
        raise CommandError("min or max not valid string range item")
    return lo, hi


@command("zremrangebyrank", 4, write=True)
def zremrangebyrank(ctx: Context, args: list[bytes]) -> object:
    start, stop = ll(args[1]), ll(args[2])
    return ctx.keyspace.zremrange_by_rank(args[0], start, stop)


@command("zremrangebyscore", 4, write=True)
def zremrangebyscore(ctx: Context, args: list[bytes]) -> object:
    return ctx.keyspace.zremrange_by_score(args[0], *_score_range(args[1], args[2]))


@command("zremrangebylex", 4, write=True)
def zremrangebylex(ctx: Context, args: list[bytes]) -> object:
    lo, hi = _lex_range(args[1], args[2])
    ks = ctx.keyspace
    found = ks.zrange_by_lex(args[0], lo, hi)
    members = [member for member, _ in (_lex_items(ks.zitems(args[0]), lo, hi, False, 0, -1) if found is None
                                        else found)]
    return ks.zrem(args[0], members) if members else 0


@command("zlexcount", 4)
def zlexcount(ctx: Context, args: list[bytes]) -> object:
    lo, hi = _lex_range(args[1], args[2])
    ks = ctx.keyspace
    n = ks.zlexcount(args[0], lo, hi)
    return len(_lex_items(ks.zitems(args[0]), lo, hi, False, 0, -1)) if n is None else n


# ---- ZUNION / ZINTER / ZDIFF, their STORE forms, ZINTERCARD --------------------------------

_UNION, _INTER, _DIFF = "union", "inter", "diff"


def _aggregate(how: bytes, a: float, b: float) -> float:
    """Redis's ``zunionInterAggregate``: a SUM that is NaN (inf + -inf) is 0."""
    if how == b"sum":
        total = a + b
        return 0.0 if total != total else total
    if how == b"min":
        return b if b < a else a
    return b if b > a else a


def _setop(ctx: Context, name: str, args: list[bytes], op: str, dst: bytes | None = None,
           card_only: bool = False) -> object:
    """``args`` starts at numkeys (the destination, if any, is ``dst``)."""
    setnum = ll(args[0])
    if setnum < 1:
        raise CommandError(f"at least 1 input key is needed for '{name}' command")
    if setnum > len(args) - 1:
        raise CommandError(SYNTAX)
    ks = ctx.keyspace
    keys = args[1:1 + setnum]
    sources = [ks.zsource(k) or {} for k in keys]
    weights = [1.0] * setnum
    how = b"sum"
    withscores = False
    limit = 0
    j = 1 + setnum
    while j < len(args):
        opt = args[j].lower()
        remaining = len(args) - j
        if op != _DIFF and not card_only and remaining >= setnum + 1 and opt == b"weights":
            weights = [parse_score(w, "weight value is not a float") for w in args[j + 1:j + 1 + setnum]]
            j += 1 + setnum
        elif op != _DIFF and not card_only and remaining >= 2 and opt == b"aggregate":
            how = args[j + 1].lower()
            if how not in (b"sum", b"min", b"max"):
                raise CommandError(SYNTAX)
            j += 2
        elif dst is None and not card_only and opt == b"withscores":
            withscores = True
            j += 1
        elif card_only and remaining >= 2 and opt == b"limit":
            limit = range_long(args[j + 1], 0, INT64_MAX, "LIMIT can't be negative")
            j += 2
        else:
            raise CommandError(SYNTAX)
    inputs = list(zip(sources, weights, keys))
    if op != _DIFF:
        inputs.sort(key=lambda src: len(src[0]))  # stable, as glibc's qsort (a merge sort) is here
    result = _combine(op, inputs, how, card_only, limit)
    if card_only:
        return len(result)
    items = sorted(result.items(), key=lambda it: (it[1], it[0]))
    if dst is not None:
        return ks.zstore(dst, [(member, _norm(score)) for member, score in items])
    return _withscores(ctx, items, withscores)


def _combine(op: str, inputs: list[tuple[dict[bytes, float], float, bytes]], how: bytes, card_only: bool,
             limit: int) -> dict[bytes, float]:
    """Redis's loops of ``zunionInterDiffGenericCommand``, in its order of additions."""
    out: dict[bytes, float] = {}
    first, w0, _ = inputs[0]
    if op == _INTER:
        for member, score in first.items():
            value = w0 * score
            if value != value:
                value = 0.0
            for src, w, _ in inputs[1:]:
                other = src.get(member)
                if other is None:
                    break
                value = _aggregate(how, value, other * w)
            else:
                out[member] = value
                if card_only and limit and len(out) >= limit:
                    break
    elif op == _UNION:
        for src, w, _ in inputs:
            for member, score in src.items():
                value = w * score
                if value != value:
                    value = 0.0
                cur = out.get(member)
                out[member] = value if cur is None else _aggregate(how, cur, value)
    else:
        if any(key == inputs[0][2] for _, _, key in inputs[1:]):
            return out  # the first set less itself
        out = {m: s for m, s in first.items() if not any(m in src for src, _, _ in inputs[1:])}
    return out


@command("zunion", -3)
def zunion(ctx: Context, args: list[bytes]) -> object:
    return _setop(ctx, "zunion", args, _UNION)


@command("zinter", -3)
def zinter(ctx: Context, args: list[bytes]) -> object:
    return _setop(ctx, "zinter", args, _INTER)


@command("zdiff", -3)
def zdiff(ctx: Context, args: list[bytes]) -> object:
    return _setop(ctx, "zdiff", args, _DIFF)


@command("zintercard", -3)
def zintercard(ctx: Context, args: list[bytes]) -> object:
    return _setop(ctx, "zintercard", args, _INTER, card_only=True)


@command("zunionstore", -4, write=True)
def zunionstore(ctx: Context, args: list[bytes]) -> object:
    return _setop(ctx, "zunionstore", args[1:], _UNION, dst=args[0])


@command("zinterstore", -4, write=True)
def zinterstore(ctx: Context, args: list[bytes]) -> object:
    return _setop(ctx, "zinterstore", args[1:], _INTER, dst=args[0])


@command("zdiffstore", -4, write=True)
def zdiffstore(ctx: Context, args: list[bytes]) -> object:
    return _setop(ctx, "zdiffstore", args[1:], _DIFF, dst=args[0])


# ---- ZRANDMEMBER ---------------------------------------------------------------------------

@command("zrandmember", -2)
def zrandmember(ctx: Context, args: list[bytes]) -> object:
    ks = ctx.keyspace
    if len(args) == 1:
        items = ks.zitems(args[0])
        return random.choice(items)[0] if items else None
    count = range_long(args[1], -INT64_MAX, INT64_MAX)
    if len(args) > 3 or len(args) == 3 and args[2].lower() != b"withscores":
        raise CommandError(SYNTAX)
    withscores = len(args) == 3
    if withscores and not -INT64_MAX // 2 <= count <= INT64_MAX // 2:
        raise CommandError("value is out of range")
    items = ks.zitems(args[0])
    if not items or count == 0:
        return []
    if count < -ZRANDMEMBER_MAX:
        # Redis streams any size of reply; memd builds a reply whole, and 2^63 members would take
        # the daemon down: refuse, as Redis refuses a count it cannot double with WITHSCORES
        raise CommandError(f"value is out of range, a negative count must be at least -{ZRANDMEMBER_MAX}")
    if count < 0:  # repeats allowed, in random order
        picked = random.choices(items, k=-count)
    elif count >= len(items):
        picked = items[::-1]  # the whole set, from the top (Redis's set iterator walks from the tail)
    else:
        picked = random.sample(items, count)
    return _withscores(ctx, picked, withscores)


# ---- ZSCAN ---------------------------------------------------------------------------------

def _d2string(score: float) -> bytes:
    """Redis's ``d2string``, how a listpack keeps a score: an integral score within +-2^62 as an
    integer, anything else ``%.17g``."""
    if score.is_integer() and abs(score) <= INT64_MAX // 2:
        return b"%d" % int(score)
    return b"%.17g" % score


@command("zscan", -3)
def zscan(ctx: Context, args: list[bytes]) -> object:
    after = decode_cursor(args[1])
    ks = ctx.keyspace
    n = ks.zcard(args[0])  # WRONGTYPE before the options, as Redis
    if n == 0:
        return [b"0", []]
    count, pattern, _ = scan_options(args[2:])
    if n <= _ZSCAN_WHOLE_ENTRIES:
        items = ks.zitems(args[0])
        if all(len(member) <= _ZSCAN_WHOLE_VALUE for member, _ in items):
            return [b"0", _scan_reply(items, pattern)]
    if not isinstance(after, bytes) and after is not None:
        return [b"0", []]  # a well-formed number that is none of our cursors
    page, resume = ks.zscan(args[0], after, count)
    return [encode_cursor(resume), _scan_reply(page, pattern, whole=False)]


def _scan_reply(items: list[tuple[bytes, float]], pattern: bytes | None, whole: bool = True) -> list[bytes]:
    """Member, score as text: Redis writes a listpack's score with ``d2string`` and a big set's
    (a skiplist's) with ``%.17Lg`` (1e17 is ``100000000000000000`` in one, ``1e+17`` in the other)."""
    out: list[bytes] = []
    for member, score in items:
        if pattern is None or glob_match(pattern, member):
            out += (member, _d2string(score) if whole else b"%.17g" % score)
    return out
