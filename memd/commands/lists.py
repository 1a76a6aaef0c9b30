"""List commands: LPUSH RPUSH LPUSHX RPUSHX LPOP RPOP LRANGE LTRIM LLEN LINDEX LSET LINSERT LREM
LPOS LMOVE RPOPLPUSH LMPOP.

Redis 7.0 semantics (``t_list.c``), including LPOP/RPOP with a count: a
missing key answers a null *array* (``*-1``; ``_`` in RESP3), count 0 an
empty array, and a negative count "value is out of range, must be positive".
Arguments are checked in Redis's order (some before the key is looked up,
some after), since that decides which error a bad command gets. The blocking
forms (BLPOP, BLMOVE, BLMPOP...) are not here.
"""

from __future__ import annotations

from memd.commands import Context, command, wrong_arity
from memd.commands.strings import OK, SYNTAX, ll
from memd.commands.zsetops import mpop_args
from memd.errors import CommandError
from memd.int64 import INT64_MIN
from memd.resp import NullArray

_POSITIVE = "value is out of range, must be positive"


@command("lpush", -3, write=True)
def lpush(ctx: Context, args: list[bytes]) -> object:
    return ctx.keyspace.push(args[0], args[1:], left=True)


@command("rpush", -3, write=True)
def rpush(ctx: Context, args: list[bytes]) -> object:
    return ctx.keyspace.push(args[0], args[1:], left=False)


@command("lpushx", -3, write=True)
def lpushx(ctx: Context, args: list[bytes]) -> object:
    return ctx.keyspace.push(args[0], args[1:], left=True, only_existing=True)


@command("rpushx", -3, write=True)
def rpushx(ctx: Context, args: list[bytes]) -> object:
    return ctx.keyspace.push(args[0], args[1:], left=False, only_existing=True)


def _pop(ctx: Context, args: list[bytes], name: str, left: bool) -> object:
    if len(args) > 2:
        raise wrong_arity(name)
    count: int | None = None
    if len(args) == 2:
        count = ll(args[1], _POSITIVE)  # Redis gives this message for a non-integer too
        if count < 0:
            raise CommandError(_POSITIVE)
    ks = ctx.keyspace
    if ks.llen(args[0]) == 0:  # WRONGTYPE before anything else; empty lists do not exist
        return None if count is None else NullArray
    if count == 0:
        return []
    popped = ks.pop(args[0], left=left, count=count)
    if count is None:
        return None if not popped else popped[0]
    return popped


@command("lpop", -2, write=True)
def lpop(ctx: Context, args: list[bytes]) -> object:
    return _pop(ctx, args, "lpop", True)


@command("rpop", -2, write=True)
def rpop(ctx: Context, args: list[bytes]) -> object:
    return _pop(ctx, args, "rpop", False)


@command("lrange", 4)
def lrange(ctx: Context, args: list[bytes]) -> object:
    start, stop = ll(args[1]), ll(args[2])
    return ctx.keyspace.lrange(args[0], start, stop)


@command("ltrim", 4, write=True)
def ltrim(ctx: Context, args: list[bytes]) -> object:
    start, stop = ll(args[1]), ll(args[2])
    ctx.keyspace.ltrim(args[0], start, stop)
    return OK


@command("llen", 2)
def llen(ctx: Context, args: list[bytes]) -> object:
    return ctx.keyspace.llen(args[0])


@command("lindex", 3)
def lindex(ctx: Context, args: list[bytes]) -> object:
    ks = ctx.keyspace
    if ks.llen(args[0]) == 0:  # Redis looks the key up (and checks its type) before the index
        return None
    return ks.lindex(args[0], ll(args[1]))


# ---- writes in the middle, searches, moves ---------------------------------------------------

@command("lset", 4, write=True)
def lset(ctx: Context, args: list[bytes]) -> object:
    ks = ctx.keyspace
    if ks.llen(args[0]) == 0:  # Redis: the key (and its type), then the index
        raise CommandError("no such key")
    ks.lset(args[0], ll(args[1]), args[2])
    return OK


@command("linsert", 5, write=True)
def linsert(ctx: Context, args: list[bytes]) -> object:
    where = args[1].lower()
    if where not in (b"before", b"after"):
        raise CommandError(SYNTAX)
    return ctx.keyspace.linsert(args[0], where == b"before", args[2], args[3])


@command("lrem", 4, write=True)
def lrem(ctx: Context, args: list[bytes]) -> object:
    count = ll(args[1])
    return ctx.keyspace.lrem(args[0], count, args[2])


_RANK_ZERO = ("RANK can't be zero: use 1 to start from the first match, 2 from the second ... "
              "or use negative to start from the end of the list")


def _non_negative(raw: bytes, what: str) -> int:
    """Redis's ``getPositiveLongFromObjectOrReply`` with a message: the same text for a non-integer."""
    value = ll(raw, what)
    if value < 0:
        raise CommandError(what)
    return value


@command("lpos", -3)
def lpos(ctx: Context, args: list[bytes]) -> object:
    rank, count, maxlen = 1, None, 0
    i = 2
    while i < len(args):
        opt = args[i].lower()
        if i + 1 >= len(args) or opt not in (b"rank", b"count", b"maxlen"):
            raise CommandError(SYNTAX)
        raw = args[i + 1]
        if opt == b"rank":
            rank = ll(raw)
            if rank == 0:
                raise CommandError(_RANK_ZERO)
        elif opt == b"count":
            count = _non_negative(raw, "COUNT can't be negative")
        else:
            maxlen = _non_negative(raw, "MAXLEN can't be negative")
        i += 2
    if rank == INT64_MIN:
        # Redis negates the rank in a C long, which leaves LONG_MIN negative: the search runs
        # from the tail and every match counts (the COUNT test overflows the same way)
        rank, count = -1, (None if count is None else 0)
    found = ctx.keyspace.lpos(args[0], args[1], rank, count, maxlen)
    if count is not None:
        return found or []
    return found[0] if found else None


def _side(raw: bytes) -> bool:
    """LEFT -> True, RIGHT -> False, anything else a syntax error."""
    side = raw.lower()
    if side not in (b"left", b"right"):
        raise CommandError(SYNTAX)
    return side == b"left"


@command("lmove", 5, write=True)
def lmove(ctx: Context, args: list[bytes]) -> object:
    src_left, dst_left = _side(args[2]), _side(args[3])
    return ctx.keyspace.lmove(args[0], args[1], src_left, dst_left)


@command("rpoplpush", 3, write=True)
def rpoplpush(ctx: Context, args: list[bytes]) -> object:
    return ctx.keyspace.lmove(args[0], args[1], False, True)


@command("lmpop", -4, write=True)
def lmpop(ctx: Context, args: list[bytes]) -> object:
    keys, left, count = mpop_args(args, (b"left", b"right"))
    popped = ctx.keyspace.lmpop(keys, left, count)
    return NullArray if popped is None else [popped[0], popped[1]]
