"""WAL record framing and segment headers (memd.engine.records): pure, no I/O."""

from __future__ import annotations

import random
import struct
import zlib

import pytest

from memd.engine.records import (
    FLAG_LZ4,
    FRAME_SIZE,
    MAX_BODY,
    OP_DEL,
    OP_FLUSHALL,
    OP_MEM_DEL,
    OP_MEM_PUT,
    OP_SET,
    OP_UPDATE,
    SEGMENT_HEADER_SIZE,
    SEGMENT_MAGIC,
    SEGMENT_VERSION,
    T_HASH,
    T_LIST,
    T_STRING,
    T_ZSET,
    FrameError,
    Record,
    decode_frame,
    decode_payload,
    decode_segment_header,
    encode_payload,
    encode_record,
    encode_segment_header,
    op_size,
    plausible_frame_at,
)

EVERY_OP = [
    (OP_SET, b"k", b"v", None),
    (OP_SET, b"k\x00\xff", b"\x00" * 10, 1_700_000_000_123),
    (OP_DEL, b"gone"),
    (OP_UPDATE, b"h", T_HASH, True, None, 2, 0, 0, ((b"f1", b"v1"), (b"f2", None))),
    (OP_UPDATE, b"z", T_ZSET, False, 1_700_000_000_000, 3, 0, 0,
     ((b"a", 1.5), (b"b", -0.0), (b"c", float("inf")), (b"d", None), (b"e", 1e-300))),
    (OP_UPDATE, b"l", T_LIST, True, None, 2, -1, 1, ((b"\x00\x00\x00\x01", b"x"), (b"\x00", None))),
    (OP_UPDATE, b"s", T_STRING, False, 123, 0, 0, 0, ()),
    (OP_FLUSHALL,),
    (OP_MEM_PUT, "ns", "key", '{"a": [1, 2, "é"]}', 7, 1_700_000_000_000, 1_700_000_000_500, None, None),
    (OP_MEM_PUT, "ns", "key", "{}", 1, 1, 2, 99, 97),
    (OP_MEM_DEL, "ns", "key", 8, 1_700_000_000_900),
]


def _frame_with(body_len: int, lsn: int, flags: int, payload: bytes) -> bytes:
    """A frame with a *correct* CRC over arbitrary header fields."""
    rest = struct.pack("<IQB", body_len, lsn, flags)
    return struct.pack("<I", zlib.crc32(payload, zlib.crc32(rest))) + rest + payload


class Stream:
    """Minimal incremental decoder: feed bytes, take whole records (None from decode_frame = need more)."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.pos = 0

    def feed(self, data: bytes) -> list[Record]:
        self.buf += data
        out = []
        while True:
            rec = decode_frame(self.buf, self.pos)
            if rec is None:
                return out
            out.append(rec)
            self.pos += rec.size


# ---- round trips --------------------------------------------------------------


@pytest.mark.parametrize("op", EVERY_OP, ids=lambda op: f"op{op[0]}")
@pytest.mark.parametrize("compress_min", [0, 1])
def test_every_op_round_trips(op: tuple, compress_min: int) -> None:
    frame = encode_record(42, [op], compress_min)
    rec = decode_frame(frame, 0)
    assert rec is not None
    assert rec.lsn == 42 and rec.offset == 0 and rec.size == len(frame)
    assert rec.ops == [op]
    for got, want in zip(rec.ops[0], op, strict=True):
        assert type(got) is type(want)  # bytes stay bytes, str stays str, floats stay floats


def test_update_changes_come_back_as_tuples_and_floats_exact() -> None:
    op = EVERY_OP[4]
    (got,) = decode_payload(*encode_payload([op], 0))
    changes = got[8]
    assert all(isinstance(c, tuple) for c in changes)
    assert changes[0] == (b"a", 1.5) and isinstance(changes[0][1], float)
    assert struct.pack("<d", changes[1][1]) == struct.pack("<d", -0.0)  # sign of zero kept
    assert changes[3] == (b"d", None)


def test_multi_op_record_keeps_order() -> None:
    ops = list(EVERY_OP)
    frame = encode_record(7, ops)
    rec = decode_frame(frame, 0)
    assert rec is not None and rec.ops == ops
    # a tuple of ops encodes like a list
    assert decode_frame(encode_record(7, tuple(ops)), 0).ops == ops  # type: ignore[union-attr]


def test_empty_op_list_round_trips() -> None:
    rec = decode_frame(encode_record(1, []), 0)
    assert rec is not None and rec.ops == []


def test_large_lsn_round_trips() -> None:
    rec = decode_frame(encode_record(2**64 - 1, [(OP_DEL, b"k")]), 0)
    assert rec is not None and rec.lsn == 2**64 - 1


def test_decode_at_offset_inside_bigger_buffer() -> None:
    a, b = encode_record(1, [(OP_DEL, b"a")]), encode_record(2, [(OP_DEL, b"b")])
    buf = b"junk" + a + b
    rec = decode_frame(buf, 4 + len(a))
    assert rec is not None and rec.lsn == 2 and rec.offset == 4 + len(a) and rec.size == len(b)
    assert decode_frame(memoryview(buf), 4).lsn == 1  # type: ignore[union-attr]
    assert decode_frame(bytearray(buf), 4).lsn == 1  # type: ignore[union-attr]


# ---- compression --------------------------------------------------------------


def test_lz4_used_when_it_helps_above_threshold() -> None:
    ops = [(OP_SET, b"k", b"a" * 5000, None)]
    payload, flags = encode_payload(ops, 1024)
    assert flags == FLAG_LZ4
    assert len(payload) < 1000
    frame = encode_record(1, ops, 1024)
    assert frame[FRAME_SIZE - 1] == FLAG_LZ4
    assert decode_frame(frame, 0).ops == ops  # type: ignore[union-attr]


def test_lz4_not_used_below_threshold() -> None:
    ops = [(OP_SET, b"k", b"a" * 500, None)]
    raw, _ = encode_payload(ops, 0)
    _, flags = encode_payload(ops, len(raw) + 1)
    assert flags == 0
    _, flags = encode_payload(ops, len(raw))  # at the threshold: compressible, so compressed
    assert flags == FLAG_LZ4


def test_lz4_never_when_compress_min_is_zero() -> None:
    _, flags = encode_payload([(OP_SET, b"k", b"a" * 100_000, None)], 0)
    assert flags == 0


def test_lz4_not_used_when_it_does_not_help() -> None:
    incompressible = random.Random(1).randbytes(4000)
    ops = [(OP_SET, b"k", incompressible, None)]
    payload, flags = encode_payload(ops, 16)
    assert flags == 0
    assert payload == encode_payload(ops, 0)[0]
    assert decode_frame(encode_record(3, ops, 16), 0).ops == ops  # type: ignore[union-attr]


# ---- streaming and truncation ---------------------------------------------------


def _sample_frames() -> list[bytes]:
    return [
        encode_record(1, [EVERY_OP[0]]),
        encode_record(2, EVERY_OP, 64),  # compressed multi-op
        encode_record(3, [(OP_SET, b"big", b"xy" * 3000, None)], 1024),  # compressed
        encode_record(4, []),
        encode_record(5, [EVERY_OP[3], EVERY_OP[4]]),
    ]


def test_stream_fed_one_byte_at_a_time() -> None:
    frames = _sample_frames()
    assert any(f[FRAME_SIZE - 1] & FLAG_LZ4 for f in frames)
    data = b"".join(frames)
    s = Stream()
    got: list[Record] = []
    for i in range(len(data)):
        got += s.feed(data[i : i + 1])
    assert [r.lsn for r in got] == [1, 2, 3, 4, 5]
    assert [r.size for r in got] == [len(f) for f in frames]
    assert s.pos == len(data)
    assert got[1].ops == EVERY_OP


@pytest.mark.parametrize("index", range(5))
def test_every_truncation_point_needs_more_data(index: int) -> None:
    frame = _sample_frames()[index]
    prefix = b"\x01" * 5
    for cut in range(len(frame)):
        assert decode_frame(frame[:cut], 0) is None, cut
        assert decode_frame(prefix + frame[:cut], len(prefix)) is None, cut
        assert not plausible_frame_at(frame[:cut], 0)
    assert decode_frame(frame, 0) is not None
    assert plausible_frame_at(frame, 0)


# ---- bit flips --------------------------------------------------------------------


@pytest.mark.parametrize("index", range(5))
def test_every_single_bit_flip_is_caught(index: int) -> None:
    frame = _sample_frames()[index]
    original = decode_frame(frame, 0)
    assert original is not None
    for byte in range(len(frame)):
        for bit in range(8):
            bad = bytearray(frame)
            bad[byte] ^= 1 << bit
            try:
                rec = decode_frame(bad, 0)
            except FrameError:
                continue
            # only a flip in the length field that makes it longer may ask for more data
            assert rec is None, (byte, bit, rec)
            assert 4 <= byte < 8, (byte, bit)
            assert struct.unpack_from("<I", bad, 4)[0] > struct.unpack_from("<I", frame, 4)[0]
            assert not plausible_frame_at(bad, 0)


def test_flipped_length_with_more_data_after_is_an_error() -> None:
    frames = _sample_frames()
    frame = frames[0]
    tail = b"".join(frames[1:])
    for bit in range(32):
        bad = bytearray(frame)
        bad[4 + bit // 8] ^= 1 << (bit % 8)
        buf = bytes(bad) + tail
        try:
            rec = decode_frame(buf, 0)
        except FrameError:
            continue
        assert rec is None  # only when the new length runs past the end of everything


# ---- checks on otherwise well-formed frames ---------------------------------------------


def test_implausible_length_is_an_error_without_waiting() -> None:
    bad = struct.pack("<IIQB", 0, MAX_BODY + 1, 1, 0)
    with pytest.raises(FrameError, match="implausible"):
        decode_frame(bad, 0)


def test_unknown_flags_rejected_even_with_valid_crc() -> None:
    payload, _ = encode_payload([(OP_DEL, b"k")], 0)
    with pytest.raises(FrameError, match="unknown flags"):
        decode_frame(_frame_with(len(payload), 1, 0x80, payload), 0)
    assert not plausible_frame_at(_frame_with(len(payload), 1, 0x80, payload), 0)


@pytest.mark.parametrize("payload, flags", [
    (b"\xc1", 0),                      # never-used msgpack byte
    (b"\x92\x01", 0),                  # truncated array
    (b"\x01", 0),                      # not a list
    (b"\x91\x01", 0),                  # op is not a list
    (b"\x91\x92\x03\xa1k", 0),         # OP_UPDATE with too few fields
    (b"\x91\x99\x03\xa1k\x01\xc3\xc0\x00\x00\x00\x05", 0),  # OP_UPDATE whose changes are not a list
    (b"\x10\x00\x00\x00garbage", FLAG_LZ4),  # bad lz4 block
    (b"\x90\x01", 0),                  # trailing bytes after the list
])
def test_valid_crc_but_bad_payload_is_frame_error(payload: bytes, flags: int) -> None:
    with pytest.raises(FrameError, match="payload|not a list"):
        decode_frame(_frame_with(len(payload), 1, flags, payload), 0)


def test_zero_filled_space_never_validates() -> None:
    for n in (FRAME_SIZE, FRAME_SIZE + 1, 64, 4096):
        with pytest.raises(FrameError):
            decode_frame(bytes(n), 0)
        assert not plausible_frame_at(bytes(n), 0)
    assert decode_frame(bytes(FRAME_SIZE - 1), 0) is None


# ---- segment header -----------------------------------------------------------------


def test_segment_header_round_trip() -> None:
    for lsn in (0, 1, 12345, 2**64 - 1):
        h = encode_segment_header(lsn)
        assert len(h) == SEGMENT_HEADER_SIZE == 24
        assert h.startswith(SEGMENT_MAGIC)
        assert decode_segment_header(h) == lsn
        assert decode_segment_header(h + b"trailing records") == lsn


def test_segment_header_short() -> None:
    h = encode_segment_header(5)
    for n in range(SEGMENT_HEADER_SIZE):
        with pytest.raises(FrameError, match="expected 24"):
            decode_segment_header(h[:n])


def test_segment_header_bad_magic() -> None:
    h = bytearray(encode_segment_header(5))
    h[0:8] = b"NOTMEMD\x00"
    with pytest.raises(FrameError, match="not a memd WAL segment"):
        decode_segment_header(bytes(h))


def test_segment_header_bad_version() -> None:
    head = struct.pack("<8sHHQ", SEGMENT_MAGIC, SEGMENT_VERSION + 1, 0, 5)
    with pytest.raises(FrameError, match="version 2"):
        decode_segment_header(head + struct.pack("<I", zlib.crc32(head)))


def test_segment_header_bad_crc_and_every_bit_flip() -> None:
    h = encode_segment_header(77)
    bad = bytearray(h)
    bad[-1] ^= 0xFF
    with pytest.raises(FrameError, match="checksum"):
        decode_segment_header(bytes(bad))
    for byte in range(len(h)):
        for bit in range(8):
            bad = bytearray(h)
            bad[byte] ^= 1 << bit
            with pytest.raises(FrameError):
                decode_segment_header(bytes(bad))


# ---- op_size --------------------------------------------------------------------------


def test_op_size_counts_keys_and_values() -> None:
    assert op_size((OP_SET, b"abc", b"12345", None)) == 8
    assert op_size((OP_DEL, b"abc")) == 3
    assert op_size((OP_UPDATE, b"h", T_HASH, True, None, 2, 0, 0, [(b"f", b"vv"), (b"g", None)])) == 1 + 3 + 9
    assert op_size((OP_UPDATE, b"z", T_ZSET, True, None, 1, 0, 0, [(b"m", 2.5)])) == 1 + 1 + 8
    assert op_size((OP_MEM_PUT, "ns", "key", "{}", 1, 0, 0, None, None)) == 7
    assert op_size((OP_MEM_DEL, "ns", "key", 1, 0)) == 2
    assert op_size((OP_FLUSHALL,)) == 0
