"""memd.jsontext against the standard library: the same text, the same verdict, for every input.

MEM.PUT stores what ``json`` writes and answers ``json``'s error texts; orjson is used only
where it is certain to agree. Each case runs both ways: ``compact`` must give ``json``'s
exact text or hand over (None), never a different text, and never accept what ``json``
refuses.
"""

from __future__ import annotations

import json
import math
import random
import struct
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from memd import jsontext
from memd.store.tokens import field_tokens, fields_of, index_entry, text_of


def _not_json(name: str) -> Any:
    raise ValueError(name)


def reference(raw: bytes) -> str | None:
    """What MEM.PUT stored before orjson: json's compact text, or None where json refuses."""
    try:
        text = json.dumps(json.loads(raw.decode(), parse_constant=_not_json), ensure_ascii=False,
                          separators=(",", ":"), allow_nan=False)
        text.encode()
    except (ValueError, RecursionError, UnicodeError):
        return None
    return text


def check(raw: bytes) -> None:
    fast = jsontext.compact(raw)
    want = reference(raw)
    if fast is None:
        return  # handed over to json: the caller's slow path gives want (or json's error)
    assert want is not None, f"orjson accepted {raw[:80]!r}, which json refuses"
    assert fast[1] == want, (raw[:80], fast[1][:80], want[:80])
    assert fast[0] == json.loads(want)


CORNERS = [
    b'{"a":1}', b' {"a" : 1 } ', b'{"a":1,"a":2,"b":3}', b'{"b":1,"a":2,"b":3}', b'[]', b'{}', b'0', b'-0',
    b'-0.0', b'1e5', b'1E-400', b'-1e-400', b'1e400', b'-1e400', b'[1.0,-0.0,1e16,1e15,1e-4,1e-5,0.1,100.0]',
    b'1e-05', b'0.00001', b'0.0001', b'9.999999999999999e-05', b'1e22', b'12345678901234567890.0',
    b'18446744073709551615', b'18446744073709551616', b'-9223372036854775808', b'-9223372036854775809',
    b'123456789012345678901234567890', b'"\\ud800"', b'"\\ud83d\\ude00"', b'{"\\ud800":1}', b'"\xed\xa0\x80"',
    b'"\\u0000\\u001f\\u007f\\u2028"', b'"a\x01b"', b'"a\tb"', b'01', b'1.', b'.5', b'+1', b'-', b'[1,]',
    b'{"a":1,}', b"{'a':1}", b'"\\x41"', b'tru', b'[1 2]', b'', b' ', b'\x00', b'{"a":1}\x00', b'{"a":1} x',
    b'\xef\xbb\xbf{"a":1}', b'NaN', b'[Infinity]', b'[-Infinity]', b'"\xc3"', b'"\xc3\xa9"', b'{"a":"\\/"}',
    b'[' * 300 + b']' * 300, b'[' * 1000 + b']' * 1000, b'[' * 1030 + b']' * 1030, b'[' * 254 + b']' * 254,
]


def test_corner_cases() -> None:
    for raw in CORNERS:
        check(raw)


def test_every_character_is_written_alike() -> None:
    s = "".join(chr(c) for c in range(0x10000) if not 0xD800 <= c < 0xE000) + "\U0001F600\U0010FFFF"
    raw = json.dumps({"s": s}).encode()
    fast = jsontext.compact(raw)
    assert fast is not None and fast[1] == reference(raw)


def test_floats_either_match_or_are_handed_over() -> None:
    rng = random.Random(7)
    handed_over = 0
    for i in range(60_000):
        kind = i % 4
        if kind == 0:
            x = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
            if not math.isfinite(x):
                continue
        elif kind == 1:
            x = rng.uniform(-1, 1) * 10 ** rng.randint(-30, 30)
        elif kind == 2:
            x = round(rng.uniform(-1000, 1000), rng.randint(0, 6)) * 10 ** rng.randint(-8, 20)
        else:
            x = float(rng.randint(-10**17, 10**17)) / 10 ** rng.randint(0, 22)
        raw = json.dumps([x]).encode()
        check(raw)
        handed_over += jsontext.compact(raw) is None
    assert 0 < handed_over < 60_000  # both paths ran


def test_typical_memory_takes_the_fast_path() -> None:
    raw = json.dumps({"text": "the user prefers tea " * 50, "kind": "fact", "stars": 4, "w": 0.25}).encode()
    assert jsontext.compact(raw) is not None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(1 << 70), max_value=1 << 70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=30)


@settings(max_examples=400, deadline=None)
@given(json_values, st.sampled_from([None, 2]))
def test_random_values(value: Any, indent: int | None) -> None:
    check(json.dumps(value, indent=indent).encode())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40))
def test_random_bytes(raw: bytes) -> None:
    check(raw)
    check(b'{"a":' + raw + b"}")


def test_indexing_reads_values_as_json_does() -> None:
    """The flush's text and fields (orjson, falling back to json) equal json's reading."""
    for value in ['{"a":"x","n":[1,{"b":"y"}],"f":1.5,"big":123456789012345678901234567890}',
                  '{"s":"\\ud800 lone","k":5.0}', "not json", '[1,2]', '{"deep":' + "[" * 1030 + "]" * 1030 + "}"]:
        try:
            doc = json.loads(value)
        except (ValueError, RecursionError):
            assert text_of(value) == "" and fields_of(value) == value
            continue
        strings: list[str] = []

        def walk(node: Any) -> None:
            if isinstance(node, str):
                strings.append(node)
            elif isinstance(node, dict):
                for v in node.values():
                    walk(v)
            elif isinstance(node, list):
                for v in node:
                    walk(v)
        try:
            walk(doc)
        except RecursionError:
            continue
        assert text_of(value) == " ".join(strings).encode(errors="replace").decode()


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=6), json_values, max_size=6) | json_values)
def test_index_entry_is_what_unindexing_replays(value: Any) -> None:
    """The flush indexes with index_entry (one parse); unindexing recomputes with the three SQL functions."""
    text = json.dumps(value, ensure_ascii=False)
    fields = fields_of(text)
    assert index_entry(text) == (fields, text_of(text), field_tokens(fields))


def test_index_entry_of_values_that_are_not_objects() -> None:
    for text in ["not json", "[1,2]", '"s"', "{", '{"a":"\\ud800"}', '{"a":1e400}']:
        fields = fields_of(text)
        assert index_entry(text) == (fields, text_of(text), field_tokens(fields))
