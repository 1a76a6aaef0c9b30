"""String commands: SET (every option) SETNX SETEX PSETEX GET GETDEL GETSET GETEX MGET MSET
MSETNX INCR INCRBY DECR DECRBY INCRBYFLOAT APPEND STRLEN GETRANGE SUBSTR SETRANGE.

Redis 7.0 semantics (``t_string.c``): option parsing, the order in which
errors are detected, and reply shapes match redis-server. INCRBYFLOAT adds in
80-bit ``long double`` as Redis does (:mod:`memd.longdouble`). The bit
commands are in :mod:`memd.commands.bits` and :mod:`memd.commands.bitfield`, LCS in
:mod:`memd.commands.lcs`.

This module also holds the argument helpers the other command modules share
(:data:`ll`, :func:`expire_error`, :func:`string_limit`).
"""

from __future__ import annotations

from memd.commands import Context, command, parse_int, wrong_arity
from memd.engine.strings import STRING_MAX
from memd.errors import CommandError, WrongTypeError
from memd.int64 import INT64_MAX, INT64_MIN
from memd.resp import SimpleString

OK = SimpleString("OK")
NOT_INT = "value is not an integer or out of range"
SYNTAX = "syntax error"


# ---- helpers shared by the command modules --------------------------------------------

ll = parse_int  # Redis ``getLongLongFromObjectOrReply``: the rule of :mod:`memd.int64`, or an error reply


def string_limit(ctx: Context) -> int:
    """The largest string a command may build: Redis's proto-max-bulk-len, memd's ``server.max_bulk_bytes``."""
    return STRING_MAX if ctx.server is None else ctx.server.limits.max_bulk_bytes


def expire_error(name: str) -> CommandError:
    return CommandError(f"invalid expire time in '{name}' command")


def _lower(raw: bytes) -> bytes:
    return raw.lower()


# ---- SET family -------------------------------------------------------------------------

_EX, _PX, _EXAT, _PXAT = "ex", "px", "exat", "pxat"
_UNITS = (b"ex", b"px", b"exat", b"pxat")  # repeating the same one is allowed: the last value wins


def _expire_ms(ctx: Context, raw: bytes, unit: str, name: str) -> int:
    """getExpireMillisecondsOrReply: a positive relative or absolute time -> absolute ms."""
    value = ll(raw)
    if value <= 0 or (unit in (_EX, _EXAT) and value > INT64_MAX // 1000):
        raise expire_error(name)
    if unit in (_EX, _EXAT):
        value *= 1000
    if unit in (_EX, _PX):
        value += ctx.keyspace.now_ms()
    if value > INT64_MAX:  # C's signed overflow, which Redis detects as a non-positive result
        raise expire_error(name)
    return value


def _set(ctx: Context, key: bytes, value: bytes, *, nx: bool = False, xx: bool = False, get: bool = False,
         keepttl: bool = False, expires_at: int | None = None) -> tuple[bool, bytes | None]:
    return ctx.keyspace.set(key, value, expires_at=expires_at, keepttl=keepttl, nx=nx, xx=xx, get=get)


@command("set", -3, write=True)
def set_(ctx: Context, args: list[bytes]) -> object:
    if len(args) == 2:  # plain SET key value: the hot path, no option parsing
        ctx.keyspace.set(args[0], args[1])
        return OK
    nx = xx = get = keepttl = False
    unit: str | None = None
    expire: bytes | None = None
    i, n = 2, len(args)
    while i < n:
        opt = _lower(args[i])
        has_next = i + 1 < n
        if opt == b"nx" and not xx:
            nx = True
        elif opt == b"xx" and not nx:
            xx = True
        elif opt == b"get":
            get = True
        elif opt == b"keepttl" and unit is None:
            keepttl = True
        elif opt in _UNITS and not keepttl and unit in (None, opt.decode()) and has_next:
            unit = opt.decode()
            expire = args[i + 1]
            i += 1
        else:
            raise CommandError(SYNTAX)
        i += 1
    expires_at = None if expire is None or unit is None else _expire_ms(ctx, expire, unit, "set")
    done, old = _set(ctx, args[0], args[1], nx=nx, xx=xx, get=get, keepttl=keepttl, expires_at=expires_at)
    if get:
        return old
    return OK if done else None


@command("setnx", 3, write=True)
def setnx(ctx: Context, args: list[bytes]) -> object:
    done, _ = _set(ctx, args[0], args[1], nx=True)
    return 1 if done else 0


@command("setex", 4, write=True)
def setex(ctx: Context, args: list[bytes]) -> object:
    _set(ctx, args[0], args[2], expires_at=_expire_ms(ctx, args[1], _EX, "setex"))
    return OK


@command("psetex", 4, write=True)
def psetex(ctx: Context, args: list[bytes]) -> object:
    _set(ctx, args[0], args[2], expires_at=_expire_ms(ctx, args[1], _PX, "psetex"))
    return OK


@command("getset", 3, write=True)
def getset(ctx: Context, args: list[bytes]) -> object:
    return _set(ctx, args[0], args[1], get=True)[1]


# ---- reads ------------------------------------------------------------------------------

@command("get", 2)
def get(ctx: Context, args: list[bytes]) -> object:
    return ctx.keyspace.get(args[0])


@command("getdel", 2, write=True)
def getdel(ctx: Context, args: list[bytes]) -> object:
    return ctx.keyspace.getdel(args[0])


@command("getex", -2, write=True)
def getex(ctx: Context, args: list[bytes]) -> object:
    persist = False
    unit: str | None = None
    expire: bytes | None = None
    i, n = 1, len(args)
    while i < n:
        opt = _lower(args[i])
        if opt == b"persist" and unit is None:
            persist = True
        elif opt in _UNITS and not persist and unit in (None, opt.decode()) and i + 1 < n:
            unit = opt.decode()
            expire = args[i + 1]
            i += 1
        else:
            raise CommandError(SYNTAX)
        i += 1
    ks = ctx.keyspace
    value = ks.get(args[0])
    if value is None:
        return None
    if expire is not None and unit is not None:
        ks.expire_at(args[0], _expire_ms(ctx, expire, unit, "getex"))
    elif persist:
        ks.expire_at(args[0], None)
    return value


@command("mget", -2)
def mget(ctx: Context, args: list[bytes]) -> object:
    ks = ctx.keyspace
    out: list[bytes | None] = []
    for key in args:
        try:
            out.append(ks.get(key))
        except WrongTypeError:
            out.append(None)
    return out


def _getrange(ctx: Context, args: list[bytes]) -> bytes:
    """GETRANGE's inclusive byte range, with Redis's rules for negative and out-of-range ends."""
    start, end = ll(args[1]), ll(args[2])  # both parsed before the key is looked at
    value = ctx.keyspace.get(args[0])
    if value is None or start < 0 and end < 0 and start > end:
        return b""
    n = len(value)
    if start < 0:
        start = max(0, n + start)
    if end < 0:
        end = max(0, n + end)
    return value[start:min(end, n - 1) + 1]


@command("getrange", 4)
def getrange(ctx: Context, args: list[bytes]) -> object:
    return _getrange(ctx, args)


@command("substr", 4)
def substr(ctx: Context, args: list[bytes]) -> object:
    return _getrange(ctx, args)  # the name GETRANGE had before Redis 2.4


@command("strlen", 2)
def strlen(ctx: Context, args: list[bytes]) -> object:
    value = ctx.keyspace.get(args[0])
    return 0 if value is None else len(value)


# ---- writes -----------------------------------------------------------------------------

def _pairs(args: list[bytes], name: str) -> list[tuple[bytes, bytes]]:
    if len(args) % 2:
        raise wrong_arity(name)
    return list(zip(args[::2], args[1::2]))


@command("mset", -3, write=True)
def mset(ctx: Context, args: list[bytes]) -> object:
    ctx.keyspace.mset(_pairs(args, "mset"))
    return OK


@command("msetnx", -3, write=True)
def msetnx(ctx: Context, args: list[bytes]) -> object:
    pairs = _pairs(args, "msetnx")
    ks = ctx.keyspace
    if ks.exists(args[::2]):
        return 0
    ks.mset(pairs)
    return 1


@command("append", 3, write=True)
def append(ctx: Context, args: list[bytes]) -> object:
    return ctx.keyspace.append(args[0], args[1], string_limit(ctx))


@command("setrange", 4, write=True)
def setrange(ctx: Context, args: list[bytes]) -> object:
    offset = ll(args[1])
    if offset < 0:
        raise CommandError("offset is out of range")
    return ctx.keyspace.setrange(args[0], offset, args[2], string_limit(ctx))


@command("incrbyfloat", 3, write=True)
def incrbyfloat(ctx: Context, args: list[bytes]) -> object:
    return ctx.keyspace.incrbyfloat(args[0], args[1])  # WRONGTYPE, then either operand's check


def _incr(ctx: Context, key: bytes, delta: int) -> int:
    return ctx.keyspace.incrby(key, delta)  # WRONGTYPE, then the stored value's own check


@command("incr", 2, write=True)
def incr(ctx: Context, args: list[bytes]) -> object:
    return _incr(ctx, args[0], 1)


@command("decr", 2, write=True)
def decr(ctx: Context, args: list[bytes]) -> object:
    return _incr(ctx, args[0], -1)


@command("incrby", 3, write=True)
def incrby(ctx: Context, args: list[bytes]) -> object:
    return _incr(ctx, args[0], ll(args[1]))


@command("decrby", 3, write=True)
def decrby(ctx: Context, args: list[bytes]) -> object:
    delta = ll(args[1])
    if delta == INT64_MIN:
        raise CommandError("decrement would overflow")
    return _incr(ctx, args[0], -delta)
