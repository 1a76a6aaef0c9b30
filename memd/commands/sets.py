"""Set commands: SADD SREM SMEMBERS SISMEMBER SMISMEMBER SCARD (Redis 7.0, ``t_set.c``)."""

from __future__ import annotations

from memd.commands import Context, command


@command("sadd", -3, write=True)
def sadd(ctx: Context, args: list[bytes]) -> object:
    return ctx.engine.keyspace.sadd(args[0], args[1:])


@command("srem", -3, write=True)
def srem(ctx: Context, args: list[bytes]) -> object:
    return ctx.engine.keyspace.srem(args[0], args[1:])


@command("smembers", 2)
def smembers(ctx: Context, args: list[bytes]) -> object:
    return ctx.engine.keyspace.smembers(args[0])  # set: RESP3 '~', RESP2 array


@command("sismember", 3)
def sismember(ctx: Context, args: list[bytes]) -> object:
    return 1 if ctx.engine.keyspace.sismember(args[0], args[1]) else 0  # an integer, even in RESP3


@command("smismember", -3)
def smismember(ctx: Context, args: list[bytes]) -> object:
    ks = ctx.engine.keyspace
    if ks.scard(args[0]) == 0:  # type check; a missing key is an empty set
        return [0] * (len(args) - 1)
    return [1 if ks.sismember(args[0], m) else 0 for m in args[1:]]


@command("scard", 2)
def scard(ctx: Context, args: list[bytes]) -> object:
    return ctx.engine.keyspace.scard(args[0])
