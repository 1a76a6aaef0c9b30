"""BITFIELD and BITFIELD_RO: integers of 1 to 64 bits at any bit offset of a string (Redis 7.0, ``bitops.c``).

Every subcommand is parsed before the key is looked at, so a bad argument
anywhere fails the whole command; the writes then run in order on the
string, grown once to the farthest bit any SET or INCRBY reaches (the key
is created then even if every write fails under OVERFLOW FAIL, as in Redis).

Redis computes overflow in C's 64-bit integers, with the wrap-arounds of
``uint64_t`` and of the conversions to ``int64_t``, and a client sees their
consequences (``SET i8 0 -9223372036854775808`` under OVERFLOW SAT stores
127, not -128). The checks below are Redis's, step by step, on Python
integers wrapped to 64 bits by :func:`_s64` and :func:`_u64`.
"""

from __future__ import annotations

from dataclasses import dataclass

from memd.commands import Context, command, parse_int
from memd.commands.strings import SYNTAX, ll, string_limit
from memd.errors import CommandError

_BAD_TYPE = "Invalid bitfield type. Use something like i16 u8. Note that u64 is not supported but i64 is."
_BAD_OFFSET = "bit offset is not an integer or out of range"
_M64 = (1 << 64) - 1
_WRAP, _SAT, _FAIL = 0, 1, 2
_OVERFLOWS = {b"wrap": _WRAP, b"sat": _SAT, b"fail": _FAIL}
_GET, _SET, _INCRBY = 0, 1, 2
_OPS = {b"get": (_GET, 2), b"set": (_SET, 3), b"incrby": (_INCRBY, 3)}  # code, arguments it needs


def _u64(x: int) -> int:
    return x & _M64


def _s64(x: int) -> int:
    x &= _M64
    return x - (1 << 64) if x >> 63 else x


@dataclass(frozen=True, slots=True)
class _Op:
    code: int
    signed: bool
    bits: int
    offset: int
    value: int  # SET's value or INCRBY's increment
    overflow: int


def _type(raw: bytes) -> tuple[bool, int]:
    """``i<bits>`` (1..64) or ``u<bits>`` (1..63); the width is read up to a NUL byte, as C's strlen does."""
    signed = raw[:1] == b"i"
    if not signed and raw[:1] != b"u":
        raise CommandError(_BAD_TYPE)
    bits = parse_int(raw[1:].split(b"\0", 1)[0], _BAD_TYPE)
    if not 1 <= bits <= (64 if signed else 63):
        raise CommandError(_BAD_TYPE)
    return signed, bits


def _offset(ctx: Context, raw: bytes, bits: int) -> int:
    """A bit offset, or ``#n``: the n-th field of this width (n * bits, in C's wrapping multiply)."""
    by_index = raw[:1] == b"#"
    offset = parse_int(raw[1:] if by_index else raw, _BAD_OFFSET)
    if by_index:
        offset = _s64(offset * bits)
    if offset < 0 or offset >> 3 >= string_limit(ctx):
        raise CommandError(_BAD_OFFSET)
    return offset


def _parse(ctx: Context, args: list[bytes]) -> list[_Op]:
    ops: list[_Op] = []
    overflow = _WRAP
    i, n = 1, len(args)
    while i < n:
        name = args[i].lower()
        left = n - i - 1
        if name == b"overflow" and left >= 1:
            overflow = _OVERFLOWS.get(args[i + 1].lower(), -1)
            if overflow < 0:
                raise CommandError("Invalid OVERFLOW type specified")
            i += 2
            continue
        spec = _OPS.get(name)
        if spec is None or left < spec[1]:
            raise CommandError(SYNTAX)
        code, needs = spec
        signed, bits = _type(args[i + 1])
        offset = _offset(ctx, args[i + 2], bits)
        value = 0 if code == _GET else ll(args[i + 3])
        ops.append(_Op(code, signed, bits, offset, value, overflow))
        i += 1 + needs
    return ops


# ---- fields ------------------------------------------------------------------------------

def _get_field(data: bytes | bytearray, offset: int, bits: int) -> int:
    """The unsigned integer in bits ``offset .. offset+bits-1`` (zero past the end)."""
    first, last = offset >> 3, (offset + bits - 1) >> 3
    chunk = bytes(data[first:last + 1]).ljust(last + 1 - first, b"\0")
    return int.from_bytes(chunk, "big") >> (8 * len(chunk) - (offset & 7) - bits) & ((1 << bits) - 1)


def _set_field(data: bytearray, offset: int, bits: int, value: int) -> None:
    """Store the low ``bits`` bits of ``value`` there (``data`` is long enough)."""
    first, last = offset >> 3, (offset + bits - 1) >> 3
    shift = 8 * (last + 1 - first) - (offset & 7) - bits
    mask = ((1 << bits) - 1) << shift
    n = int.from_bytes(data[first:last + 1], "big")
    n = n & ~mask | (value << shift) & mask
    data[first:last + 1] = n.to_bytes(last + 1 - first, "big")


def _signed(u: int, bits: int) -> int:
    return u - (1 << bits) if u >> (bits - 1) else u


# ---- Redis's overflow checks -----------------------------------------------------------------

def _unsigned_overflow(value: int, incr: int, bits: int, how: int) -> tuple[int, int]:
    """``checkUnsignedBitfieldOverflow``: (0 | 1 | -1, the value to store on overflow)."""
    top = (1 << bits) - 1
    if value > top or incr > 0 and incr > _s64(top - value):
        return 1, (_u64(value + incr) & top if how == _WRAP else top)
    if incr < 0 and incr < _s64(-value):
        return (1, _u64(value + incr) & top) if how == _WRAP else (-1, 0)
    return 0, 0


def _signed_overflow(value: int, incr: int, bits: int, how: int) -> tuple[int, int]:
    """``checkSignedBitfieldOverflow``: (0 | 1 | -1, the value to store on overflow)."""
    top = (1 << (bits - 1)) - 1
    bottom = -top - 1
    max_incr = _s64(_u64(top) - value)
    min_incr = _s64(bottom - value)
    if value > top or bits != 64 and incr > max_incr or value >= 0 and incr > 0 and incr > max_incr:
        return 1, (_wrap_signed(value, incr, bits) if how == _WRAP else top)
    if value < bottom or bits != 64 and incr < min_incr or value < 0 and incr < 0 and incr < min_incr:
        return (1, _wrap_signed(value, incr, bits)) if how == _WRAP else (-1, bottom)
    return 0, 0


def _wrap_signed(value: int, incr: int, bits: int) -> int:
    return _signed(_u64(value + incr) & ((1 << bits) - 1), bits)


# ---- running the operations ------------------------------------------------------------------

def _run(ops: list[_Op], data: bytearray) -> list[int | None]:
    replies: list[int | None] = []
    for op in ops:
        old = _get_field(data, op.offset, op.bits)
        if op.signed:
            old = _signed(old, op.bits)
        if op.code == _GET:
            replies.append(old)
            continue
        check = _signed_overflow if op.signed else _unsigned_overflow
        if op.code == _INCRBY:
            over, limit = check(old, op.value, op.bits, op.overflow)
            new = limit if over else old + op.value
            reply = new
        else:
            # an unsigned field reads SET's value as C's uint64_t conversion of it
            new = op.value if op.signed else _u64(op.value)
            over, limit = check(new, 0, op.bits, op.overflow)
            if over:
                new = limit
            reply = old
        if over and op.overflow == _FAIL:
            replies.append(None)
            continue
        replies.append(reply)
        _set_field(data, op.offset, op.bits, new)
    return replies


def _bitfield(ctx: Context, args: list[bytes], read_only: bool) -> object:
    ops = _parse(ctx, args)
    writes = [op for op in ops if op.code != _GET]
    ks = ctx.keyspace
    if not writes:
        value = ks.get(args[0])  # WRONGTYPE; a missing key reads as zeros
        return _run(ops, bytearray(value or b""))
    if read_only:
        raise CommandError("BITFIELD_RO only supports the GET subcommand")
    size = (max(op.offset + op.bits - 1 for op in writes) >> 3) + 1
    return ks.edit_string(args[0], size, lambda data: _run(ops, data))


@command("bitfield", -2, write=True)
def bitfield(ctx: Context, args: list[bytes]) -> object:
    return _bitfield(ctx, args, read_only=False)


@command("bitfield_ro", -2)
def bitfield_ro(ctx: Context, args: list[bytes]) -> object:
    return _bitfield(ctx, args, read_only=True)
