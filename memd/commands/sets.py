"""Set commands: SADD SREM SMEMBERS SISMEMBER SMISMEMBER SCARD SPOP SRANDMEMBER SMOVE SINTER SUNION
SDIFF SINTERSTORE SUNIONSTORE SDIFFSTORE SINTERCARD SSCAN (Redis 7.0, ``t_set.c``).

Replies that are sets in Redis (SPOP with a count, SINTER, SUNION, SDIFF)
are Python sets: RESP3 ``~``, RESP2 arrays. SRANDMEMBER with a count is an
array (it may repeat members). A negative SRANDMEMBER count asks for that
many draws; memd refuses more than :data:`MAX_DRAWS` of them with "value is
out of range" rather than build a reply of billions of elements (Redis
would try, until its output buffer limit or memory ran out).
"""

from __future__ import annotations

from memd.commands import Context, command
from memd.commands.elemscan import scan_command
from memd.commands.strings import SYNTAX, ll
from memd.engine.records import T_SET
from memd.errors import CommandError
from memd.int64 import INT64_MIN

MAX_DRAWS = 1 << 24
_POSITIVE = "value is out of range, must be positive"


@command("sadd", -3, write=True)
def sadd(ctx: Context, args: list[bytes]) -> object:
    return ctx.keyspace.sadd(args[0], args[1:])


@command("srem", -3, write=True)
def srem(ctx: Context, args: list[bytes]) -> object:
    return ctx.keyspace.srem(args[0], args[1:])


@command("smembers", 2)
def smembers(ctx: Context, args: list[bytes]) -> object:
    return ctx.keyspace.smembers(args[0])  # set: RESP3 '~', RESP2 array


@command("sismember", 3)
def sismember(ctx: Context, args: list[bytes]) -> object:
    return 1 if ctx.keyspace.sismember(args[0], args[1]) else 0  # an integer, even in RESP3


@command("smismember", -3)
def smismember(ctx: Context, args: list[bytes]) -> object:
    ks = ctx.keyspace
    if ks.scard(args[0]) == 0:  # type check; a missing key is an empty set
        return [0] * (len(args) - 1)
    return [1 if ks.sismember(args[0], m) else 0 for m in args[1:]]


@command("scard", 2)
def scard(ctx: Context, args: list[bytes]) -> object:
    return ctx.keyspace.scard(args[0])


@command("spop", -2, write=True)
def spop(ctx: Context, args: list[bytes]) -> object:
    if len(args) > 2:
        raise CommandError(SYNTAX)
    ks = ctx.keyspace
    if len(args) == 1:
        popped = ks.spop(args[0], None)
        return popped[0] if popped else None
    count = ll(args[1], _POSITIVE)  # Redis parses the count before it looks the key up
    if count < 0:
        raise CommandError(_POSITIVE)
    return set(ks.spop(args[0], count) or ())


@command("srandmember", -2)
def srandmember(ctx: Context, args: list[bytes]) -> object:
    if len(args) > 2:
        raise CommandError(SYNTAX)
    ks = ctx.keyspace
    if len(args) == 1:
        picked = ks.srandmember(args[0], None)
        return picked[0] if picked else None
    count = ll(args[1])
    if count == INT64_MIN:  # Redis's range is [-LONG_MAX, LONG_MAX]: -count must fit
        raise CommandError("value is out of range, value must between -9223372036854775807 and "
                           "9223372036854775807")
    if ks.scard(args[0]) and -count > MAX_DRAWS:
        raise CommandError("value is out of range")
    return ks.srandmember(args[0], count) or []


@command("smove", 4, write=True)
def smove(ctx: Context, args: list[bytes]) -> object:
    return 1 if ctx.keyspace.smove(args[0], args[1], args[2]) else 0


@command("sinter", -2)
def sinter(ctx: Context, args: list[bytes]) -> object:
    return set(ctx.keyspace.sinter(args))


@command("sunion", -2)
def sunion(ctx: Context, args: list[bytes]) -> object:
    return set(ctx.keyspace.sunion(args))


@command("sdiff", -2)
def sdiff(ctx: Context, args: list[bytes]) -> object:
    return set(ctx.keyspace.sdiff(args))


@command("sinterstore", -3, write=True)
def sinterstore(ctx: Context, args: list[bytes]) -> object:
    ks = ctx.keyspace
    return ks.sstore(args[0], ks.sinter(args[1:]))


@command("sunionstore", -3, write=True)
def sunionstore(ctx: Context, args: list[bytes]) -> object:
    ks = ctx.keyspace
    return ks.sstore(args[0], ks.sunion(args[1:]))


@command("sdiffstore", -3, write=True)
def sdiffstore(ctx: Context, args: list[bytes]) -> object:
    ks = ctx.keyspace
    return ks.sstore(args[0], ks.sdiff(args[1:]))


@command("sintercard", -3)
def sintercard(ctx: Context, args: list[bytes]) -> object:
    numkeys = ll(args[0], "numkeys should be greater than 0")
    if numkeys < 1:
        raise CommandError("numkeys should be greater than 0")
    if numkeys > len(args) - 1:
        raise CommandError("Number of keys can't be greater than number of args")
    limit = 0
    i = numkeys + 1
    while i < len(args):
        if args[i].lower() != b"limit" or i + 1 >= len(args):
            raise CommandError(SYNTAX)
        limit = ll(args[i + 1], "LIMIT can't be negative")
        if limit < 0:
            raise CommandError("LIMIT can't be negative")
        i += 2
    return len(ctx.keyspace.sinter(args[1:numkeys + 1], limit))


@command("sscan", -3)
def sscan(ctx: Context, args: list[bytes]) -> object:
    return scan_command(ctx, args, T_SET, with_values=False)
