"""Ops, WAL record framing and segment headers — pure functions, no I/O.

Why physical ops: a WAL that logged *commands* (INCR, LPUSH) would need the
exact pre-state and clock to replay. memd logs the *effects* a command had,
with absolute times and full key metadata, so replay is mechanical: the same
``apply`` that runs live runs on recovery, and it never reads anything.

An op is a tuple whose first item is its opcode::

    (OP_SET, key, value, expires_at_ms | None)           string put; hides older state
    (OP_DEL, key)                                        key gone; hides older state
    (OP_UPDATE, key, type, create, expires_at_ms | None, count, lo, hi, changes)
        full metadata of a key plus element changes ``[(sub, value | None), ...]``
        (``None`` deletes the element); ``create`` hides older state of the key.
        A string with ``create`` false only changes its expiry.
    (OP_FLUSHALL,)                                       every key of every database gone
    (OP_SELECT, db)                                      the ops after it (in this record) are database
        ``db``'s; a record starts in database 0, so records written before databases existed,
        which have no OP_SELECT, replay as database 0's, and a record about database 0 pays nothing
    (OP_FLUSHDB,)                                        every key of the current database gone
    (OP_SWAPDB, a, b)                                    SWAPDB: Redis databases ``a`` and ``b`` trade
        contents. Data stays under its physical database number (the one OP_SELECT names);
        what moves is the engine's map from Redis numbers to physical ones, so a swap costs
        O(1) here and in the store (which keeps the map with the rows it describes)
    (OP_MEM_PUT, ns, key, json_text, version, created_ms, updated_ms, expires_ms | None, ttl_ms | None
     [, vectors])
        one version of a memory (a TTL refresh re-logs the same version with a new expiry).
        ``vectors``: this version's embeddings as ``((path, float32_le_blob), ...)``, or None
        for "the same version's vectors, unchanged" (a TTL refresh); absent (9 items, as
        every record written before vectors existed) means none
    (OP_MEM_DEL, ns, key, version, deleted_ms)           the memory's live version ended
    (OP_MEM_INDEX, prefix, dims, distance, fields_json)  a vector index declared (or replaced) for the
        namespaces under ``prefix``; ``dims`` 0 (distance and fields None) drops it and the
        vectors of every memory under it

A *record* is a list of ops sharing one LSN: one command's effects, or a whole
MULTI/EXEC transaction, so a batch is all there or not at all after a crash.

Frame (little endian)::

    crc32 u32 | body_len u32 | lsn u64 | flags u8 | payload[body_len]

The CRC covers every byte after itself, so a corrupted length, LSN or flag is
caught as surely as a corrupted payload. Zero-filled space never validates.
The payload is msgpack; with ``FLAG_LZ4`` it is an lz4 block (size-prefixed).
lz4 can decompress corrupted input silently to wrong bytes, which is why the
CRC is over the *stored* bytes.

Segment header (24 bytes): ``MEMDWAL\\0`` | version u16 | reserved u16 |
first_lsn u64 | crc32 of the preceding 20 bytes.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from typing import Any, NamedTuple

import lz4.block
import msgpack

OP_SET = 1
OP_DEL = 2
OP_UPDATE = 3
OP_FLUSHALL = 4
OP_MEM_PUT = 5
OP_MEM_DEL = 6
OP_MEM_INDEX = 7
OP_SELECT = 8
OP_FLUSHDB = 9
OP_SWAPDB = 10

DEFAULT_DATABASES = 16  # Redis's `databases`

# Key types, as stored in the WAL and in SQLite. NONE marks a deleted key.
T_NONE = 0
T_STRING = 1
T_LIST = 2
T_HASH = 3
T_SET = 4
T_ZSET = 5
T_STREAM = 6  # its entries, counters and consumer groups are element rows (memd.engine.streamcodec)
TYPE_NAMES = {T_NONE: "none", T_STRING: "string", T_LIST: "list", T_HASH: "hash", T_SET: "set", T_ZSET: "zset",
              T_STREAM: "stream"}

FLAG_LZ4 = 0x01
_KNOWN_FLAGS = FLAG_LZ4

FRAME = struct.Struct("<IIQB")
FRAME_SIZE = FRAME.size  # 17
_AFTER_CRC = struct.Struct("<IQB")
_CRC = struct.Struct("<I")
MAX_BODY = 1 << 30  # a record above 1 GiB is corruption, not data

SEGMENT_MAGIC = b"MEMDWAL\x00"
SEGMENT_VERSION = 1
_SEG = struct.Struct("<8sHHQ")
SEGMENT_HEADER_SIZE = _SEG.size + 4  # 24

Op = tuple[Any, ...]
_PACK = msgpack.Packer(use_bin_type=True).pack  # one Packer for all: packb() builds one per call
_unpackb = msgpack.unpackb
# lz4's acceleration: records are compressed on the event loop, where a bulk MEM.PUT run of
# ~1 KB JSON values paid 2.8 µs a value at the default (1) to save 42% of its WAL bytes, and the
# write those bytes would have cost is ~0.1 µs a KB. At 12 it costs ~1.3 µs and still saves ~26%
# (2026-12-07). The block format is the same at any acceleration: old segments replay as before.
LZ4_ACCELERATION = 12


class Record(NamedTuple):
    """One decoded WAL record (a NamedTuple: recovery builds a million of them)."""

    lsn: int
    ops: list[Op]
    offset: int
    size: int


class FrameError(ValueError):
    """A frame failed a check; ``reason`` says which."""


def encode_payload(ops: list[Op] | tuple[Op, ...], compress_min: int) -> tuple[bytes, int]:
    """msgpack the ops; lz4 them when large enough and it actually helps."""
    raw: bytes = _PACK(ops)
    if compress_min and len(raw) >= compress_min:
        packed: bytes = lz4.block.compress(raw, store_size=True, mode="fast",
                                          acceleration=LZ4_ACCELERATION)
        if len(packed) < len(raw):
            return packed, FLAG_LZ4
    return raw, 0


def encode_record(lsn: int, ops: list[Op] | tuple[Op, ...], compress_min: int = 0) -> bytes:
    """Frame one record: the bytes appended to a segment."""
    payload, flags = encode_payload(ops, compress_min)
    rest = _AFTER_CRC.pack(len(payload), lsn, flags)
    return b"".join((_CRC.pack(zlib.crc32(payload, zlib.crc32(rest))), rest, payload))


def decode_payload(payload: bytes | memoryview, flags: int) -> list[Op]:
    """Inverse of :func:`encode_payload`.

    Arrays decode straight to tuples (``use_list=False``): recovery decodes
    a million records, and converting lists would cost a third of it.
    """
    data = lz4.block.decompress(payload) if flags & FLAG_LZ4 else payload
    ops = _unpackb(data, raw=False, use_list=False, strict_map_key=False)
    problem = _ops_problem(ops)
    if problem:
        raise FrameError(problem)
    return list(ops)


def _ops_problem(ops: Any) -> str | None:
    """Why a decoded payload is not a list of well-formed ops, or None (apply relies on the shapes checked)."""
    if type(ops) is not tuple:
        return "payload is not a list of ops"
    for op in ops:
        if type(op) is not tuple or not op:
            return "op is not a list"
        if op[0] == OP_UPDATE:
            if len(op) != 9 or type(op[8]) is not tuple:
                return "update op is malformed"
            for change in op[8]:
                if type(change) is not tuple or len(change) != 2:
                    return "update op has a malformed element change"
        elif op[0] == OP_MEM_PUT:
            if len(op) == 10 and op[9] is not None:
                if type(op[9]) is not tuple or any(type(v) is not tuple or len(v) != 2 for v in op[9]):
                    return "memory put has malformed vectors"
            elif len(op) not in (9, 10):
                return "memory put op is malformed"
        elif op[0] == OP_MEM_INDEX and len(op) != 5:
            return "vector index op is malformed"
        elif op[0] == OP_SELECT and (len(op) != 2 or type(op[1]) is not int or op[1] < 0):
            return "select op is malformed"
        elif op[0] == OP_SWAPDB and (len(op) != 3 or type(op[1]) is not int or type(op[2]) is not int
                                     or op[1] < 0 or op[2] < 0):
            return "swapdb op is malformed"
    return None


def scan_frames(buf: bytes, offset: int) -> Iterator[tuple[int, tuple[Op, ...], int]]:
    """Yield ``(lsn, ops, next_offset)`` for consecutive valid frames from ``offset``.

    Recovery's fast path: one memoryview, no per-frame objects beyond the ops,
    about 0.9 µs a record instead of 2 µs through :func:`decode_frame`. It
    stops silently before the first frame that is incomplete or invalid;
    :func:`decode_frame` at that offset then says why (the slow, rare path).
    """
    view = memoryview(buf)
    end = len(buf)
    unpack, crc32, unpackb, decompress = FRAME.unpack_from, zlib.crc32, _unpackb, lz4.block.decompress
    while end - offset >= FRAME_SIZE:
        crc, body_len, lsn, flags = unpack(buf, offset)
        stop = offset + FRAME_SIZE + body_len
        if body_len > MAX_BODY or stop > end or crc32(view[offset + 4:stop]) != crc or flags & ~_KNOWN_FLAGS:
            return
        try:
            payload = view[offset + FRAME_SIZE:stop]
            ops = unpackb(decompress(payload) if flags & FLAG_LZ4 else payload,
                          raw=False, use_list=False, strict_map_key=False)
        except (ValueError, TypeError, lz4.block.LZ4BlockError, msgpack.UnpackException):
            return
        if _ops_problem(ops):
            return
        yield lsn, ops, stop
        offset = stop


def decode_frame(buf: bytes | bytearray | memoryview, offset: int) -> Record | None:
    """Decode the record starting at ``offset``.

    Returns ``None`` when ``buf`` ends before the frame does (need more data);
    raises :class:`FrameError` when the bytes present cannot be a valid frame.
    """
    end = len(buf)
    if end - offset < FRAME_SIZE:
        return None
    crc, body_len, lsn, flags = FRAME.unpack_from(buf, offset)
    if body_len > MAX_BODY:
        raise FrameError(f"record length {body_len} is implausible")
    total = FRAME_SIZE + body_len
    if end - offset < total:
        return None
    view = memoryview(buf)[offset + 4 : offset + total]
    if zlib.crc32(view) != crc:
        raise FrameError("checksum mismatch")
    if flags & ~_KNOWN_FLAGS:
        raise FrameError(f"unknown flags {flags:#x}")
    try:
        ops = decode_payload(view[FRAME_SIZE - 4 :], flags)
    except (ValueError, TypeError, lz4.block.LZ4BlockError, msgpack.UnpackException) as exc:
        raise FrameError(f"payload does not decode: {exc}") from exc
    return Record(lsn=lsn, ops=ops, offset=offset, size=total)


def plausible_frame_at(buf: bytes | bytearray | memoryview, offset: int) -> bool:
    """True when a complete, CRC-valid frame starts at ``offset``.

    Used after a bad record to decide whether it is a torn tail (nothing valid
    follows) or corruption in the middle of the log (something valid follows).
    """
    if len(buf) - offset < FRAME_SIZE:
        return False
    crc, body_len, _lsn, flags = FRAME.unpack_from(buf, offset)
    if body_len > MAX_BODY or flags & ~_KNOWN_FLAGS or len(buf) - offset < FRAME_SIZE + body_len:
        return False
    return zlib.crc32(memoryview(buf)[offset + 4 : offset + FRAME_SIZE + body_len]) == crc


def encode_segment_header(first_lsn: int) -> bytes:
    head = _SEG.pack(SEGMENT_MAGIC, SEGMENT_VERSION, 0, first_lsn)
    return head + struct.pack("<I", zlib.crc32(head))


def decode_segment_header(data: bytes) -> int:
    """Return the segment's first LSN, or raise FrameError naming the problem."""
    if len(data) < SEGMENT_HEADER_SIZE:
        raise FrameError(f"header is {len(data)} bytes, expected {SEGMENT_HEADER_SIZE}")
    magic, version, _reserved, first_lsn = _SEG.unpack_from(data, 0)
    if magic != SEGMENT_MAGIC:
        raise FrameError(f"not a memd WAL segment (magic {magic!r})")
    (crc,) = struct.unpack_from("<I", data, _SEG.size)
    if zlib.crc32(data[: _SEG.size]) != crc:
        raise FrameError("header checksum mismatch")
    if version != SEGMENT_VERSION:
        raise FrameError(f"segment format version {version}; this memd reads version {SEGMENT_VERSION}")
    return int(first_lsn)


def op_size(op: Op) -> int:
    """Bytes an op adds to the buffer: key and value lengths, as the limits count them."""
    code = op[0]
    if code == OP_SET:
        return len(op[1]) + len(op[2])
    if code == OP_UPDATE:
        n = len(op[1])
        for sub, value in op[8]:
            n += len(sub) + (len(value) if isinstance(value, (bytes, bytearray)) else 8)
        return n
    if code == OP_MEM_PUT:
        n = len(op[1]) + len(op[2]) + len(op[3])
        if len(op) > 9 and op[9]:
            n += sum(len(path) + len(blob) for path, blob in op[9])
        return n
    if code in (OP_DEL, OP_MEM_DEL):
        return len(op[1])
    return 0
