"""List commands: LPUSH RPUSH LPUSHX RPUSHX LPOP RPOP LRANGE LTRIM LLEN LINDEX.

Redis 7.0 semantics (``t_list.c``), including LPOP/RPOP with a count: a
missing key answers a null *array* (``*-1``; ``_`` in RESP3), count 0 an
empty array, and a negative count "value is out of range, must be positive".
"""

from __future__ import annotations

from memd.commands import Context, command, wrong_arity
from memd.commands.strings import OK, ll
from memd.errors import CommandError
from memd.resp import NullArray

_POSITIVE = "value is out of range, must be positive"


@command("lpush", -3, write=True)
def lpush(ctx: Context, args: list[bytes]) -> object:
    return ctx.engine.keyspace.push(args[0], args[1:], left=True)


@command("rpush", -3, write=True)
def rpush(ctx: Context, args: list[bytes]) -> object:
    return ctx.engine.keyspace.push(args[0], args[1:], left=False)


@command("lpushx", -3, write=True)
def lpushx(ctx: Context, args: list[bytes]) -> object:
    return ctx.engine.keyspace.push(args[0], args[1:], left=True, only_existing=True)


@command("rpushx", -3, write=True)
def rpushx(ctx: Context, args: list[bytes]) -> object:
    return ctx.engine.keyspace.push(args[0], args[1:], left=False, only_existing=True)


def _pop(ctx: Context, args: list[bytes], name: str, left: bool) -> object:
    if len(args) > 2:
        raise wrong_arity(name)
    count: int | None = None
    if len(args) == 2:
        count = ll(args[1], _POSITIVE)  # Redis gives this message for a non-integer too
        if count < 0:
            raise CommandError(_POSITIVE)
    ks = ctx.engine.keyspace
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
    return ctx.engine.keyspace.lrange(args[0], start, stop)


@command("ltrim", 4, write=True)
def ltrim(ctx: Context, args: list[bytes]) -> object:
    start, stop = ll(args[1]), ll(args[2])
    ctx.engine.keyspace.ltrim(args[0], start, stop)
    return OK


@command("llen", 2)
def llen(ctx: Context, args: list[bytes]) -> object:
    return ctx.engine.keyspace.llen(args[0])


@command("lindex", 3)
def lindex(ctx: Context, args: list[bytes]) -> object:
    ks = ctx.engine.keyspace
    if ks.llen(args[0]) == 0:  # Redis looks the key up (and checks its type) before the index
        return None
    return ks.lindex(args[0], ll(args[1]))
