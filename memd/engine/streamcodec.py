"""Stream ids and how a stream lies in the ``elems`` rows: pure functions, no I/O.

A stream is one key of type :data:`~memd.engine.records.T_STREAM` whose every part is an
element row, so the WAL, the buffer, the flush and the store treat it like any other
collection (one OP_UPDATE per command, no new op, no new table). Sub-keys sort by
byte, and each part has its own one-byte prefix so that byte order is the order the
commands walk:

==============================  =======================================================
sub-key                         value
==============================  =======================================================
``00``                          stream state: last id, entries-added, max-deleted id
``01`` id                       an entry: its fields and values (see :func:`pack_fields`)
``02`` group                    a consumer group: last-delivered id, entries-read
``03`` esc(group) id            a pending entry of that group: delivery time, count, consumer
``04`` esc(group) consumer      a consumer of that group: seen time
==============================  =======================================================

An id is 16 bytes, ms then seq, both unsigned 64-bit big-endian: byte order is id
order, so an XRANGE is a range of sub-keys. ``esc(group)`` escapes each 0x00 of the
name as 0x00 0xFF and ends with 0x00 0x00; names then sort as the raw names do (the
order Redis's radix tree lists them in) and one group's rows never interleave with
another's. Group and consumer rows keep the name raw (it ends the sub-key).

Entry values are length-prefixed: for each field then value, a 4-byte big-endian length
and the bytes. Compact (8 bytes of framing per pair), and decoding needs no escaping.
"""

from __future__ import annotations

import struct

from memd.errors import CommandError

U64 = (1 << 64) - 1
StreamId = tuple[int, int]  # (ms, seq)
MIN_ID: StreamId = (0, 0)
MAX_ID: StreamId = (U64, U64)
INVALID_ENTRIES_READ = -1  # Redis's SCG_INVALID_ENTRIES_READ: a group whose read counter is unknown

P_STATE = b"\x00"
P_ENTRY = b"\x01"
P_GROUP = b"\x02"
P_PEL = b"\x03"
P_CONSUMER = b"\x04"

INVALID_ID = "Invalid stream ID specified as stream command argument"

_ID = struct.Struct(">QQ")
_STATE = struct.Struct(">QQQQQ")  # last ms, last seq, entries-added, max-deleted ms, max-deleted seq
_GROUP = struct.Struct(">QQq")  # last-delivered ms, seq, entries-read (-1: unknown)
_NACK = struct.Struct(">QQ")  # delivery time (ms), delivery count; the consumer's name follows
_CONSUMER = struct.Struct(">Q")  # seen time (ms)
_LEN = struct.Struct(">I")
_SPACES = b" \t\n\v\f\r"


# ---- ids -----------------------------------------------------------------------------------------

def _string2ll(text: bytes) -> int | None:
    """Redis's strict ``string2ll``: no blanks, no '+', no leading zeros, int64 range."""
    if not text or len(text) >= 21:
        return None
    if text == b"0":
        return 0
    body = text[1:] if text[:1] == b"-" else text
    if not body or not body[:1] in b"123456789" or not body.isdigit():
        return None
    value = int(text)
    return value if -(1 << 63) <= value < (1 << 63) else None


def string2ull(text: bytes) -> int | None:
    """Redis's ``string2ull``: ``string2ll`` (negative refused), else C ``strtoull`` over the whole text.

    ``strtoull`` skips leading blanks, takes a sign (a '-' negates modulo 2^64, as C does)
    and refuses an out-of-range magnitude; the whole text must be consumed.
    """
    ll = _string2ll(text)
    if ll is not None:
        return ll if ll >= 0 else None
    rest = text.lstrip(_SPACES)
    negative = rest[:1] == b"-"
    if rest[:1] in (b"-", b"+"):
        rest = rest[1:]
    if not rest or not rest.isdigit():
        return None
    value = int(rest)
    if value > U64:
        return None
    return (-value) & U64 if negative else value


def parse_id(raw: bytes, missing_seq: int = 0, *, strict: bool = False, seq_star: bool = False
             ) -> tuple[StreamId, bool]:
    """Redis's ``streamGenericParseIDOrReply``: ``(id, seq given)``.

    ``strict`` refuses ``-`` and ``+``; ``seq_star`` accepts ``ms-*`` (XADD), answered
    with seq 0 and "seq given" False. A text is read as a C string (up to a NUL byte).
    """
    if len(raw) > 127:
        raise CommandError(INVALID_ID)
    text = raw.split(b"\x00", 1)[0]
    if text in (b"-", b"+"):
        if strict:
            raise CommandError(INVALID_ID)
        return (MIN_ID if text == b"-" else MAX_ID), True
    ms_text, dash, seq_text = text.partition(b"-")
    ms = string2ull(ms_text)
    if ms is None:
        raise CommandError(INVALID_ID)
    if not dash:
        return (ms, missing_seq), True
    if seq_star and seq_text == b"*":
        return (ms, 0), False
    seq = string2ull(seq_text)
    if seq is None:
        raise CommandError(INVALID_ID)
    return (ms, seq), True


def strict_id(raw: bytes, missing_seq: int = 0) -> StreamId:
    return parse_id(raw, missing_seq, strict=True)[0]


def interval_id(raw: bytes, missing_seq: int) -> tuple[StreamId, bool]:
    """A range bound: ``(id, exclusive)``; ``(`` makes it exclusive (and strict)."""
    if len(raw) > 1 and raw[:1] == b"(":
        return strict_id(raw[1:], missing_seq), True
    return parse_id(raw, missing_seq)[0], False


def incr_id(sid: StreamId) -> StreamId | None:
    """The next id, or None past the last possible one."""
    ms, seq = sid
    if seq == U64:
        return None if ms == U64 else (ms + 1, 0)
    return ms, seq + 1


def decr_id(sid: StreamId) -> StreamId | None:
    ms, seq = sid
    if seq == 0:
        return None if ms == 0 else (ms - 1, U64)
    return ms, seq - 1


def format_id(sid: StreamId) -> bytes:
    return b"%d-%d" % sid


def id_bytes(sid: StreamId) -> bytes:
    return _ID.pack(*sid)


def id_from(raw: bytes, offset: int = 0) -> StreamId:
    ms, seq = _ID.unpack_from(raw, offset)
    return ms, seq


# ---- sub-keys --------------------------------------------------------------------------------------

def entry_sub(sid: StreamId) -> bytes:
    return P_ENTRY + _ID.pack(*sid)


def escape(name: bytes) -> bytes:
    """A name inside a sub-key that continues after it: order-preserving and self-delimiting."""
    return name.replace(b"\x00", b"\x00\xff") + b"\x00\x00"


def group_sub(group: bytes) -> bytes:
    return P_GROUP + group


def pel_prefix(group: bytes) -> bytes:
    return P_PEL + escape(group)


def pel_sub(group: bytes, sid: StreamId) -> bytes:
    return pel_prefix(group) + _ID.pack(*sid)


def consumer_prefix(group: bytes) -> bytes:
    return P_CONSUMER + escape(group)


def prefix_end(prefix: bytes) -> bytes:
    """The smallest sub-key above every sub-key starting with ``prefix`` (prefixes here never end in 0xFF
    runs that matter: each starts with a type byte below 0xFF)."""
    head = prefix.rstrip(b"\xff")
    return head[:-1] + bytes([head[-1] + 1])


# ---- values ----------------------------------------------------------------------------------------

class StreamState:
    """The stream's own counters (the ``00`` row)."""

    __slots__ = ("last", "entries_added", "max_deleted")

    def __init__(self, last: StreamId = MIN_ID, entries_added: int = 0, max_deleted: StreamId = MIN_ID) -> None:
        self.last = last
        self.entries_added = entries_added
        self.max_deleted = max_deleted

    def pack(self) -> bytes:
        return _STATE.pack(*self.last, self.entries_added, *self.max_deleted)

    @classmethod
    def unpack(cls, raw: bytes) -> StreamState:
        lms, lseq, added, dms, dseq = _STATE.unpack(raw)
        return cls((lms, lseq), added, (dms, dseq))


def pack_group(last: StreamId, entries_read: int) -> bytes:
    return _GROUP.pack(*last, entries_read)


def unpack_group(raw: bytes) -> tuple[StreamId, int]:
    ms, seq, entries_read = _GROUP.unpack(raw)
    return (ms, seq), entries_read


def pack_nack(delivery_time: int, count: int, consumer: bytes) -> bytes:
    return _NACK.pack(max(0, delivery_time), count & U64) + consumer


def unpack_nack(raw: bytes) -> tuple[int, int, bytes]:
    """(delivery time, delivery count, consumer)."""
    t, n = _NACK.unpack_from(raw)
    return t, n, raw[_NACK.size:]


def pack_consumer(seen_time: int) -> bytes:
    return _CONSUMER.pack(max(0, seen_time))


def unpack_consumer(raw: bytes) -> int:
    return int(_CONSUMER.unpack(raw)[0])


def pack_fields(pairs: list[bytes]) -> bytes:
    """An entry's fields and values, alternating, each as a 4-byte length and its bytes."""
    if len(pairs) == 2:  # one field: the common entry, without the generator
        f, v = pairs
        return _LEN.pack(len(f)) + f + _LEN.pack(len(v)) + v
    pack = _LEN.pack
    return b"".join([pack(len(x)) + x for x in pairs])


def unpack_fields(raw: bytes) -> list[bytes]:
    out: list[bytes] = []
    i, n = 0, len(raw)
    unpack = _LEN.unpack_from
    while i < n:
        (size,) = unpack(raw, i)
        i += 4
        out.append(raw[i:i + size])
        i += size
    return out


__all__ = [
    "INVALID_ENTRIES_READ", "INVALID_ID", "MAX_ID", "MIN_ID", "P_CONSUMER", "P_ENTRY", "P_GROUP", "P_PEL",
    "P_STATE", "StreamId", "StreamState", "consumer_prefix", "decr_id", "entry_sub", "escape", "format_id",
    "group_sub", "id_bytes", "id_from", "incr_id", "interval_id", "pack_consumer", "pack_fields", "pack_group",
    "pack_nack", "parse_id", "pel_prefix", "pel_sub", "prefix_end", "strict_id", "string2ull", "unpack_consumer",
    "unpack_fields", "unpack_group", "unpack_nack",
]
