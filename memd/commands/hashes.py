"""Hash commands: HSET HSETNX HMSET HGET HMGET HGETALL HKEYS HVALS HDEL HEXISTS HLEN HSTRLEN HINCRBY
HINCRBYFLOAT.

Redis 7.0 semantics (``t_hash.c``). HINCRBYFLOAT shares INCRBYFLOAT's
long-double arithmetic (:mod:`memd.longdouble`).
"""

from __future__ import annotations

from memd import longdouble
from memd.commands import Context, command, wrong_arity
from memd.commands.elemscan import scan_command
from memd.commands.sets import MAX_DRAWS  # (the same refusal of huge negative counts)
from memd.commands.strings import OK, SYNTAX, ll
from memd.engine.records import T_HASH
from memd.errors import CommandError
from memd.int64 import INT64_MAX, INT64_MIN


def _pairs(args: list[bytes], name: str) -> list[tuple[bytes, bytes]]:
    if len(args) % 2 == 0:  # key + field/value pairs is always odd
        raise wrong_arity(name)
    return list(zip(args[1::2], args[2::2]))


@command("hset", -4, write=True)
def hset(ctx: Context, args: list[bytes]) -> object:
    return ctx.keyspace.hset(args[0], _pairs(args, "hset"))


@command("hmset", -4, write=True)
def hmset(ctx: Context, args: list[bytes]) -> object:
    ctx.keyspace.hset(args[0], _pairs(args, "hmset"))
    return OK


@command("hsetnx", 4, write=True)
def hsetnx(ctx: Context, args: list[bytes]) -> object:
    ks = ctx.keyspace
    if ks.hget(args[0], args[1]) is not None:
        return 0
    ks.hset(args[0], [(args[1], args[2])])
    return 1


@command("hget", 3)
def hget(ctx: Context, args: list[bytes]) -> object:
    return ctx.keyspace.hget(args[0], args[1])


@command("hmget", -3)
def hmget(ctx: Context, args: list[bytes]) -> object:
    return ctx.keyspace.hmget(args[0], args[1:])


@command("hgetall", 2)
def hgetall(ctx: Context, args: list[bytes]) -> object:
    return ctx.keyspace.hgetall(args[0])  # dict: RESP3 map, RESP2 flat array


@command("hkeys", 2)
def hkeys(ctx: Context, args: list[bytes]) -> object:
    return list(ctx.keyspace.hgetall(args[0]))


@command("hvals", 2)
def hvals(ctx: Context, args: list[bytes]) -> object:
    return list(ctx.keyspace.hgetall(args[0]).values())


@command("hdel", -3, write=True)
def hdel(ctx: Context, args: list[bytes]) -> object:
    return ctx.keyspace.hdel(args[0], args[1:])


@command("hexists", 3)
def hexists(ctx: Context, args: list[bytes]) -> object:
    return 0 if ctx.keyspace.hget(args[0], args[1]) is None else 1


@command("hlen", 2)
def hlen(ctx: Context, args: list[bytes]) -> object:
    return ctx.keyspace.hlen(args[0])


@command("hstrlen", 3)
def hstrlen(ctx: Context, args: list[bytes]) -> object:
    value = ctx.keyspace.hget(args[0], args[1])
    return 0 if value is None else len(value)


@command("hincrby", 4, write=True)
def hincrby(ctx: Context, args: list[bytes]) -> object:
    delta = ll(args[2])  # Redis parses the increment before looking at the key
    return ctx.keyspace.hincrby(args[0], args[1], delta)  # WRONGTYPE, the field's value, overflow


@command("hincrbyfloat", 4, write=True)
def hincrbyfloat(ctx: Context, args: list[bytes]) -> object:
    incr = longdouble.parse(args[2])  # Redis checks the increment before looking at the key
    if incr is None:
        raise CommandError(longdouble.NOT_FLOAT)
    if not longdouble.isfinite(incr):
        raise CommandError("value is NaN or Infinity")
    return ctx.keyspace.hincrbyfloat(args[0], args[1], args[2])  # WRONGTYPE, the field's value, the sum


# ---- HRANDFIELD, HSCAN ------------------------------------------------------------------------

_RANDOM_RANGE = "value is out of range, value must between -9223372036854775807 and 9223372036854775807"


@command("hrandfield", -2)
def hrandfield(ctx: Context, args: list[bytes]) -> object:
    """One random field, or with a count distinct ones (``count`` > 0) or draws (``count`` < 0).

    WITHVALUES replies a flat field, value array in RESP2 and [field, value]
    pairs in RESP3, as Redis 7.0 does. Picks: :mod:`memd.engine.randpick`. A
    negative count beyond ``MAX_DRAWS`` is refused, as SRANDMEMBER's is.
    """
    ks = ctx.keyspace
    if len(args) == 1:
        n = ks.hlen(args[0])
        return ks.random_subs(args[0], n, 1, distinct=True)[0] if n else None
    count = ll(args[1])
    if count == INT64_MIN:
        raise CommandError(_RANDOM_RANGE)
    if len(args) > 3 or len(args) == 3 and args[2].lower() != b"withvalues":
        raise CommandError(SYNTAX)
    with_values = len(args) == 3
    if with_values and not -(INT64_MAX // 2) <= count <= INT64_MAX // 2:
        raise CommandError("value is out of range")
    n = ks.hlen(args[0])
    if n == 0 or count == 0:
        return []
    if -count > MAX_DRAWS:
        raise CommandError("value is out of range")
    if not with_values:
        return ks.random_subs(args[0], n, abs(count), distinct=count > 0)
    picked = ks.random_items(args[0], n, abs(count), distinct=count > 0)
    if ctx.protocol == 3:
        return [[f, v] for f, v in picked]
    return [x for pair in picked for x in pair]


@command("hscan", -3)
def hscan(ctx: Context, args: list[bytes]) -> object:
    return scan_command(ctx, args, T_HASH, with_values=True)
