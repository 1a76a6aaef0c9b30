"""Blocking pops: BLPOP BRPOP BLMOVE BRPOPLPUSH BLMPOP BZPOPMIN BZPOPMAX BZMPOP (Redis 7.0).

Each handler first does what its non-blocking form would (``t_list.c``
``blockingPopGenericCommand``, ``blmoveGenericCommand``; ``t_zset.c``
``blockingGenericZpopCommand``): arguments checked in Redis's order (the
timeout first for BLPOP/BZPOPMIN, last for BLMOVE/BLMPOP/BZMPOP), then the
keys in order, WRONGTYPE from the first key of another type, a pop from the
first non-empty one. Only when every key is empty does the command block:
the handler returns a :class:`Block`, which names the keys, the type they
must have, the timeout and how to serve the client from a key, and the
server parks the connection (:mod:`memd.blocking`). Handlers never await,
so the decision "empty now, block" is atomic like any command.

Where blocking is not allowed (inside EXEC, in a script: Redis's
CLIENT_DENY_BLOCKING) the command answers its timeout reply at once: a null
array, or a null bulk for BLMOVE / BRPOPLPUSH, as Redis does. Only a
connection's own context may park (``ctx.may_block``, which the server sets),
and not while its EXEC runs (``ctx.multi``): a context a script runner or a
test builds cannot, whoever builds it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from memd.commands import Context, command
from memd.commands.lists import _side
from memd.commands.zsetops import _pairs, mpop_args, range_long
from memd.engine.records import T_LIST, T_ZSET
from memd.errors import CommandError
from memd.longdouble import parse as parse_long_double
from memd.resp import NullArray

NOT_FLOAT = "timeout is not a float or out of range"
NEGATIVE = "timeout is negative"
# Redis casts ceil(seconds * 1000) to a C long long; past its range x86-64 yields LLONG_MIN
# (then "timeout is negative"). Inside it, a deadline so far that adding the clock wraps never
# comes either: such a timeout is "forever" in practice, and so it is here past this many seconds.
_NEVER_SECONDS = 1 << 40

Serve = Callable[[Context, bytes], Any]


class _Stay:
    """The type of :data:`STAY`."""

    def __repr__(self) -> str:
        return "STAY"


STAY = _Stay()  # a stream reader's serve found nothing for it: it stays parked


@dataclass(eq=False, slots=True)
class Block:
    """A blocking command found nothing to pop: what the server needs to park its client.

    ``serve(ctx, key)`` is called by the server when ``key`` holds a non-empty value of
    ``type``: it pops (one ``engine.apply``, one WAL record) and returns the reply. It may
    raise a CommandError (BLMOVE whose destination has become another type), which is then
    the client's reply: it is unblocked either way, as in Redis.

    A stream reader (``type`` T_STREAM, :mod:`memd.commands.streamblocking`) is asked
    whenever its key is signalled, whatever the key holds then: its ``serve`` checks for
    itself and returns :data:`STAY` to stay parked, or a reply (an error included).
    """

    keys: tuple[bytes, ...]  # each once, in argument order
    type: int  # T_LIST, T_ZSET or T_STREAM
    timeout: float  # seconds; 0 = forever
    serve: Serve


def parse_timeout(raw: bytes) -> float:
    """Redis's ``getTimeoutFromObjectOrReply`` in seconds: ceil to the millisecond; 0 = forever."""
    if raw.isdigit() and len(raw) < 12:  # whole seconds, what clients send (BLPOP q 0): exact, and 15x cheaper
        seconds = int(raw)
        return 0.0 if seconds > _NEVER_SECONDS else float(seconds)
    value = parse_long_double(raw)
    if value is None:
        raise CommandError(NOT_FLOAT)
    with np.errstate(all="ignore"):
        ms = np.ceil(value * np.longdouble(1000))
    if not np.isfinite(ms) or not -(2**63) <= ms < 2**63:
        raise CommandError(NEGATIVE)
    millis = int(ms)
    if millis < 0:
        raise CommandError(NEGATIVE)
    seconds = millis / 1000
    return 0.0 if seconds > _NEVER_SECONDS else seconds


def may_block(ctx: Context) -> bool:
    return ctx.may_block and ctx.multi is None


def _block(ctx: Context, keys: list[bytes], type_: int, timeout: float, serve: Serve, instead: Any) -> Any:
    """Park the client on ``keys``, or answer ``instead`` where blocking is not allowed."""
    if not may_block(ctx):
        return instead
    return Block(tuple(dict.fromkeys(keys)), type_, timeout, serve)


# ---- lists -----------------------------------------------------------------------------------

def _bpop(ctx: Context, args: list[bytes], left: bool) -> Any:
    timeout = parse_timeout(args[-1])
    keys = args[:-1]
    ks = ctx.keyspace
    for key in keys:
        popped = ks.pop(key, left=left)  # None: no such key; WRONGTYPE from the first of another type
        if popped:
            return [key, popped[0]]

    def serve(ctx: Context, key: bytes) -> Any:
        popped = ctx.keyspace.pop(key, left=left)
        assert popped
        return [key, popped[0]]
    return _block(ctx, keys, T_LIST, timeout, serve, NullArray)


@command("blpop", -3, write=True)
def blpop(ctx: Context, args: list[bytes]) -> Any:
    return _bpop(ctx, args, True)


@command("brpop", -3, write=True)
def brpop(ctx: Context, args: list[bytes]) -> Any:
    return _bpop(ctx, args, False)


def _bmove(ctx: Context, src: bytes, dst: bytes, src_left: bool, dst_left: bool, timeout: float) -> Any:
    # WRONGTYPE for src (or, when src has elements, for dst, as LMOVE); an empty src blocks
    # whatever dst is: its type is checked again when the client is served
    moved = ctx.keyspace.lmove(src, dst, src_left, dst_left)
    if moved is not None:
        return moved

    def serve(ctx: Context, key: bytes) -> Any:
        return ctx.keyspace.lmove(key, dst, src_left, dst_left)
    return _block(ctx, [src], T_LIST, timeout, serve, None)


@command("blmove", 6, write=True)
def blmove(ctx: Context, args: list[bytes]) -> Any:
    src_left, dst_left = _side(args[2]), _side(args[3])
    return _bmove(ctx, args[0], args[1], src_left, dst_left, parse_timeout(args[4]))


@command("brpoplpush", 4, write=True)
def brpoplpush(ctx: Context, args: list[bytes]) -> Any:
    return _bmove(ctx, args[0], args[1], False, True, parse_timeout(args[2]))


@command("blmpop", -5, write=True)
def blmpop(ctx: Context, args: list[bytes]) -> Any:
    keys, left, count = mpop_args(args[1:], (b"left", b"right"))
    timeout = parse_timeout(args[0])
    popped = ctx.keyspace.lmpop(keys, left, count)
    if popped is not None:
        return [popped[0], popped[1]]

    def serve(ctx: Context, key: bytes) -> Any:
        return [key, ctx.keyspace.pop(key, left=left, count=count)]
    return _block(ctx, keys, T_LIST, timeout, serve, NullArray)


# ---- sorted sets -------------------------------------------------------------------------------

def _bzpop(ctx: Context, args: list[bytes], top: bool) -> Any:
    timeout = parse_timeout(args[-1])
    keys = args[:-1]
    ks = ctx.keyspace
    for key in keys:
        items = ks.zpop(key, 1, top)  # None: no such key; WRONGTYPE from the first of another type
        if items:
            return [key, *_pairs(ctx, items, False)]

    def serve(ctx: Context, key: bytes) -> Any:
        return [key, *_pairs(ctx, ctx.keyspace.zpop(key, 1, top) or [], False)]
    return _block(ctx, keys, T_ZSET, timeout, serve, NullArray)


@command("bzpopmin", -3, write=True)
def bzpopmin(ctx: Context, args: list[bytes]) -> Any:
    return _bzpop(ctx, args, False)


@command("bzpopmax", -3, write=True)
def bzpopmax(ctx: Context, args: list[bytes]) -> Any:
    return _bzpop(ctx, args, True)


@command("bzmpop", -5, write=True)
def bzmpop(ctx: Context, args: list[bytes]) -> Any:
    keys, low, count = mpop_args(args[1:], (b"min", b"max"))
    timeout = parse_timeout(args[0])
    ks = ctx.keyspace
    for key in keys:
        items = ks.zpop(key, count, not low)
        if items:
            return [key, _pairs(ctx, items, True)]

    def serve(ctx: Context, key: bytes) -> Any:
        return [key, _pairs(ctx, ctx.keyspace.zpop(key, count, not low) or [], True)]
    return _block(ctx, keys, T_ZSET, timeout, serve, NullArray)
