"""Bit commands on strings: SETBIT GETBIT BITCOUNT BITPOS BITOP.

Redis 7.0 semantics (``bitops.c``): bit 0 is the most significant bit of the
first byte; a missing key reads as an endless run of zero bits. The order in
which Redis checks arguments, the key and its type differs from command to
command (BITCOUNT answers 0 for a missing key before reading its range,
BITPOS reads its bit first) and is kept here, since a client sees it.

Counting and searching turn the byte range into one Python integer
(``int.from_bytes``), so the work is done in C whatever the length.
"""

from __future__ import annotations

from memd.commands import Context, command, parse_int
from memd.commands.strings import SYNTAX, ll, string_limit
from memd.errors import CommandError

_BAD_OFFSET = "bit offset is not an integer or out of range"
_BAD_BIT = "bit is not an integer or out of range"


def bit_offset(ctx: Context, raw: bytes) -> int:
    """Redis's ``getBitOffsetFromArgument``: a bit offset within the largest string (512 MB by default)."""
    offset = parse_int(raw, _BAD_OFFSET)
    if offset < 0 or offset >> 3 >= string_limit(ctx):
        raise CommandError(_BAD_OFFSET)
    return offset


def _unit_is_bit(raw: bytes) -> bool:
    unit = raw.lower()
    if unit not in (b"bit", b"byte"):
        raise CommandError(SYNTAX)
    return unit == b"bit"


def _bit_range(start: int, end: int, length: int, is_bit: bool) -> tuple[int, int]:
    """Redis's conversion of a BITCOUNT/BITPOS range to inclusive bit positions (empty when a > b)."""
    total = length * 8 if is_bit else length
    if start < 0:
        start = max(0, total + start)
    if end < 0:
        end = max(0, total + end)
    end = min(end, total - 1)
    if is_bit:
        return start, end
    return start * 8, end * 8 + 7 if end >= 0 else -1


def _bits(value: bytes, first: int, last: int) -> tuple[int, int]:
    """The bits ``first..last`` (inclusive, first <= last) as (integer, width), ``first`` the top bit."""
    chunk = value[first >> 3:(last >> 3) + 1]
    width = last - first + 1
    n = int.from_bytes(chunk, "big") >> (len(chunk) * 8 - 1 - (last - (first & ~7)))
    return n & ((1 << width) - 1), width


# ---- single bits -------------------------------------------------------------------------

@command("setbit", 4, write=True)
def setbit(ctx: Context, args: list[bytes]) -> object:
    offset = bit_offset(ctx, args[1])
    on = parse_int(args[2], _BAD_BIT)
    if on not in (0, 1):
        raise CommandError(_BAD_BIT)
    return ctx.keyspace.setbit(args[0], offset, on)


@command("getbit", 3)
def getbit(ctx: Context, args: list[bytes]) -> object:
    offset = bit_offset(ctx, args[1])
    value = ctx.keyspace.get(args[0])
    if value is None or offset >> 3 >= len(value):
        return 0
    return 1 if value[offset >> 3] & (0x80 >> (offset & 7)) else 0


# ---- counting and searching ----------------------------------------------------------------

@command("bitcount", -2)
def bitcount(ctx: Context, args: list[bytes]) -> object:
    value = ctx.keyspace.get(args[0])  # a missing key is 0 whatever the arguments
    if value is None:
        return 0
    if len(args) == 1:
        return int.from_bytes(value, "big").bit_count()
    if len(args) not in (3, 4):
        raise CommandError(SYNTAX)
    start, end = ll(args[1]), ll(args[2])
    if start < 0 and end < 0 and start > end:  # before the unit is read
        return 0
    is_bit = len(args) == 4 and _unit_is_bit(args[3])
    first, last = _bit_range(start, end, len(value), is_bit)
    if first > last:
        return 0
    return _bits(value, first, last)[0].bit_count()


@command("bitpos", -3)
def bitpos(ctx: Context, args: list[bytes]) -> object:
    bit = ll(args[1])
    if bit not in (0, 1):
        raise CommandError("The bit argument must be 1 or 0.")
    value = ctx.keyspace.get(args[0])
    if value is None:  # endless zeros
        return -1 if bit else 0
    n = len(args)  # key bit [start [end [BIT|BYTE]]]
    if n > 5:
        raise CommandError(SYNTAX)
    start, end, is_bit = 0, len(value) - 1, False
    if n >= 3:
        start = ll(args[2])
        is_bit = n == 5 and _unit_is_bit(args[4])  # the unit is read before the end
        if n >= 4:
            end = ll(args[3])
    first, last = _bit_range(start, end, len(value), is_bit)
    if first > last:
        return -1
    found, width = _bits(value, first, last)
    if not bit:
        found ^= (1 << width) - 1
    if found:
        return first + width - found.bit_length()
    if bit or n >= 4:  # no 1 in the range; or no 0 in a range whose end was given
        return -1
    return last + 1  # no 0 up to the end of the string: the zero padding after it


# ---- combining ------------------------------------------------------------------------------

_OPS = (b"and", b"or", b"xor", b"not")


@command("bitop", -4, write=True)
def bitop(ctx: Context, args: list[bytes]) -> object:
    op = args[0].lower()
    if op not in _OPS:
        raise CommandError(SYNTAX)
    dest, sources = args[1], args[2:]
    if op == b"not" and len(sources) != 1:
        raise CommandError("BITOP NOT must be called with a single source key.")
    ks = ctx.keyspace
    values = [ks.get(k) or b"" for k in sources]  # WRONGTYPE at the first key that is not a string
    size = max(len(v) for v in values)
    if not size:
        ks.delete([dest])  # an empty result deletes the destination, whatever it held
        return 0
    ints = [int.from_bytes(v, "big") << 8 * (size - len(v)) for v in values]  # zero padding on the right
    result = ints[0]
    if op == b"not":
        result ^= (1 << 8 * size) - 1
    for other in ints[1:]:
        if op == b"and":
            result &= other
        elif op == b"or":
            result |= other
        else:
            result ^= other
    ks.set(dest, result.to_bytes(size, "big"))  # a plain SET: the destination's TTL goes
    return size
