"""Stream ids and row encodings (memd.engine.streamcodec): Redis's parsing rules and byte order = id order."""

from __future__ import annotations

import random

import pytest

from memd.engine.streamcodec import (
    MAX_ID,
    StreamState,
    consumer_prefix,
    decr_id,
    entry_sub,
    escape,
    incr_id,
    interval_id,
    pack_fields,
    pack_nack,
    parse_id,
    pel_sub,
    prefix_end,
    string2ull,
    unpack_fields,
    unpack_nack,
)
from memd.errors import CommandError

U64 = 2**64 - 1


@pytest.mark.parametrize("text,value", [
    (b"0", 0), (b"5", 5), (b"007", 7), (b"+5", 5), (b" 5", 5), (b"\t5", 5), (b"-0", 0),
    (b"18446744073709551615", U64), (b" -1", U64),  # strtoull negates modulo 2^64 when string2ll refused it
    (b"-18446744073709551615", 1),
    (b"-1", None), (b"-5", None), (b"", None), (b"5 ", None), (b"0x10", None), (b"1.5", None), (b" ", None),
    (b"18446744073709551616", None), (b"+", None), (b"-", None), (b"abc", None),
])
def test_string2ull_follows_redis(text: bytes, value: int | None) -> None:
    assert string2ull(text) == value


def test_parse_id_forms() -> None:
    assert parse_id(b"5") == ((5, 0), True)
    assert parse_id(b"5", U64) == ((5, U64), True)
    assert parse_id(b"5-3") == ((5, 3), True)
    assert parse_id(b"5-*", seq_star=True) == ((5, 0), False)
    assert parse_id(b"-") == ((0, 0), True) and parse_id(b"+") == (MAX_ID, True)
    assert parse_id(b"5\x00junk") == ((5, 0), True)  # read as a C string
    for bad in (b"5-*", b"1-2-3", b"-5", b"x", b"5-", b"9" * 128):
        with pytest.raises(CommandError):
            parse_id(bad)
    for strict_bad in (b"-", b"+"):
        with pytest.raises(CommandError):
            parse_id(strict_bad, strict=True)
    assert interval_id(b"(5", 0) == ((5, 0), True)
    assert interval_id(b"5", U64) == ((5, U64), False)
    for bad in (b"(+", b"(", b"(-"):  # "(" alone is not a prefix, and an exclusive bound is strict
        with pytest.raises(CommandError):
            interval_id(bad, 0)


def test_incr_decr_at_the_edges() -> None:
    assert incr_id((1, U64)) == (2, 0) and incr_id(MAX_ID) is None
    assert decr_id((2, 0)) == (1, U64) and decr_id((0, 0)) is None


def test_byte_order_is_id_order() -> None:
    rng = random.Random(7)
    ids = [(rng.choice([0, 1, 2**32, U64]) + 0, rng.choice([0, 1, 255, 256, U64])) for _ in range(200)]
    assert sorted(ids, key=entry_sub) == sorted(ids)
    assert sorted(ids, key=lambda i: pel_sub(b"g", i)) == sorted(ids)


def test_escaped_names_keep_order_and_never_interleave() -> None:
    names = [b"", b"a", b"a\x00", b"a\x00b", b"a\x01", b"ab", b"\x00", b"\xff", b"b"]
    assert sorted(names, key=escape) == sorted(names)
    # every row of one group sorts between that group's prefix and its end, and no other group's does
    for g in names:
        lo, hi = consumer_prefix(g), prefix_end(consumer_prefix(g))
        for other in names:
            row = consumer_prefix(other) + b"c\x00\xff"
            assert (lo <= row < hi) == (other == g), (g, other)


def test_values_round_trip() -> None:
    pairs = [b"f", b"", b"\x00\xff" * 10, b"v" * 70_000]
    assert unpack_fields(pack_fields(pairs)) == pairs
    assert unpack_fields(pack_fields([b"a", b"b"])) == [b"a", b"b"]
    st = StreamState((U64, 3), 9, (5, U64))
    back = StreamState.unpack(st.pack())
    assert (back.last, back.entries_added, back.max_deleted) == ((U64, 3), 9, (5, U64))
    assert unpack_nack(pack_nack(123, 4, b"cons\x00umer")) == (123, 4, b"cons\x00umer")
