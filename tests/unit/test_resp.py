"""Tests for memd.resp: the sans-IO request parser and reply encoder.

Every parser test runs against both engines (memd._resp, in C, and pure
Python), and a differential property test checks that they agree call by call
on arbitrary byte streams, including garbage.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import hiredis
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memd.errors import ProtocolError, WrongTypeError
from memd.resp import (
    EMPTY_ARRAY, NULL3, NULL_ARRAY, NULL_BULK, OK, PONG, QUEUED, BigNumber, ErrorReply, NullArray,
    Push, ReplyEncoder, RequestParser, SimpleString, Verbatim, bulk, format_double, integer,
)

MB = 1024 * 1024
Parser = Callable[..., RequestParser]


def pack(*args: bytes) -> bytes:
    """A request as clients send it: a RESP array of bulk strings."""
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in args)


def feed_all(parser: RequestParser, chunks: Iterable[bytes]) -> list[list[bytes]]:
    out: list[list[bytes]] = []
    for chunk in chunks:
        parser.feed(chunk)
        out += parser.commands()
    return out


def parse_error(parser: RequestParser, data: bytes) -> str:
    parser.feed(data)
    with pytest.raises(ProtocolError) as info:
        parser.commands()
    return str(info.value)


@pytest.fixture(params=[True, False], ids=["c", "python"])
def make(request: pytest.FixtureRequest) -> Parser:
    def factory(max_bulk_bytes: int = 512 * MB, max_args: int = MB, max_inline_bytes: int = 64 * 1024) -> RequestParser:
        return RequestParser(max_bulk_bytes, max_args, max_inline_bytes, accelerate=request.param)
    return factory


# A pipeline of several commands, some with CR/LF and RESP syntax inside their values.
PIPELINE = [
    [b"SET", b"key:1", b"value"],
    [b"GET", b"key:1"],
    [b"SET", b"bin", b"\x00\xff\r\n\r\n$3\r\n*1\r\n"],
    [b"SET", b"empty", b""],
    [b"MSET", b"a", b"1", b"b", b"2", b"c", b"3"],
    [b"PING"],
]
PIPELINE_BYTES = b"".join(pack(*c) for c in PIPELINE)


# ---------------------------------------------------------------- requests: valid input


def test_pipeline_round_trip_and_nothing_left(make: Parser) -> None:
    parser = make()
    parser.feed(PIPELINE_BYTES)
    assert parser.commands() == PIPELINE
    assert parser.commands() == []
    assert parser.buffered_bytes == 0


def test_one_byte_at_a_time_equals_all_at_once(make: Parser) -> None:
    stream = PIPELINE_BYTES + b'PING\r\nSET k "a b"\n' + pack(b"ECHO", b"x" * 5000) + PIPELINE_BYTES
    whole = feed_all(make(), [stream])
    assert whole == PIPELINE + [[b"PING"], [b"SET", b"k", b"a b"], [b"ECHO", b"x" * 5000]] + PIPELINE
    assert feed_all(make(), [stream[i:i + 1] for i in range(len(stream))]) == whole


def test_every_split_point_of_a_pipeline(make: Parser) -> None:
    stream = PIPELINE_BYTES + b"PING\r\n" + PIPELINE_BYTES
    expected = PIPELINE + [[b"PING"]] + PIPELINE
    for cut in range(len(stream) + 1):
        parser = make()
        assert feed_all(parser, [stream[:cut], stream[cut:]]) == expected, cut
        assert parser.buffered_bytes == 0


def test_partial_command_stays_buffered(make: Parser) -> None:
    parser = make()
    parser.feed(PIPELINE_BYTES + b"*2\r\n$3\r\nGET\r\n$5\r\nke")
    assert parser.commands() == PIPELINE
    assert parser.buffered_bytes == len(b"*2\r\n$3\r\nGET\r\n$5\r\nke")
    parser.feed(b"y:1\r\n")
    assert parser.commands() == [[b"GET", b"key:1"]]
    assert parser.buffered_bytes == 0


def test_large_bulk_arriving_in_pieces(make: Parser) -> None:
    value = bytes(range(256)) * 4000  # 1 MB with every byte value, CRLFs included
    stream = pack(b"SET", b"big", value) + PIPELINE_BYTES
    chunks = [stream[i:i + 65536] for i in range(0, len(stream), 65536)]
    assert feed_all(make(), chunks) == [[b"SET", b"big", value]] + PIPELINE


def test_array_with_many_arguments_in_pieces(make: Parser) -> None:
    args = [b"MSET"] + [b"k%d" % i for i in range(20000)]
    stream = pack(*args)
    assert feed_all(make(), [stream[i:i + 1000] for i in range(0, len(stream), 1000)]) == [args]


def test_zero_and_negative_arrays_and_empty_lines_are_skipped(make: Parser) -> None:
    parser = make()
    parser.feed(b"*0\r\n*-1\r\n\r\n\n   \r\n" + pack(b"PING") + b"*0\r\n" + PIPELINE_BYTES)
    assert parser.commands() == [[b"PING"]] + PIPELINE


@pytest.mark.parametrize(("frame", "expected"), [
    (b"$0\r\n\r\n", [[b"$0"]]),
    (b"$1\r\na\r\n", [[b"$1"], [b"a"]]),
    (b":1\r\n", [[b":1"]]),
    (b"+OK\r\n", [[b"+OK"]]),
    (b"~1\r\n$1\r\na\r\n", [[b"~1"], [b"$1"], [b"a"]]),
    (b"%0\r\n", [[b"%0"]]),
    (b">0\r\n", [[b">0"]]),
    (b"=4\r\ntxt:\r\n", [[b"=4"], [b"txt:"]]),
    (b"#f\r\n", [[b"#f"]]),
])
def test_top_level_non_array_frames_are_inline_commands_as_in_redis(
        make: Parser, frame: bytes, expected: list[list[bytes]]) -> None:
    parser = make()
    parser.feed(frame + PIPELINE_BYTES)  # at the start of a batch
    assert parser.commands() == expected + PIPELINE
    for cut in range(len(frame) + 1):  # after a pipeline, split anywhere
        chunks = [PIPELINE_BYTES + frame[:cut], frame[cut:] + PIPELINE_BYTES]
        assert feed_all(make(), chunks) == PIPELINE + expected + PIPELINE, cut


def test_bytes_after_bulk_data_are_not_checked_like_redis(make: Parser) -> None:
    parser = make()
    parser.feed(b"*1\r\n$4\r\nPINGxx*1\r\n$4\r\nPING\r\n")
    assert parser.commands() == [[b"PING"], [b"PING"]]
    # What follows such bytes is read as Redis reads it, not as a reply parser would.
    parser.feed(PIPELINE_BYTES + b"*1\r\n$1\r\naXY~1\r\n$1\r\na\r\n" + PIPELINE_BYTES + b"*2\r\n$1\r\naXY+OK\r\n")
    assert parser.commands() == PIPELINE + [[b"a"], [b"~1"], [b"$1"], [b"a"]] + PIPELINE
    assert parse_error(parser, b"") == "Protocol error: expected '$', got '+'"


def test_feed_accepts_bytearray_and_memoryview(make: Parser) -> None:
    parser = make()
    parser.feed(bytearray(pack(b"GET", b"a")))
    parser.feed(memoryview(pack(b"GET", b"b")))
    assert parser.commands() == [[b"GET", b"a"], [b"GET", b"b"]]


@pytest.mark.parametrize(("line", "expected"), [
    (b"PING\r\n", [b"PING"]),
    (b"PING\n", [b"PING"]),
    (b"  SET   a\tb  \r\n", [b"SET", b"a", b"b"]),
    (b'SET k "hello world"\r\n', [b"SET", b"k", b"hello world"]),
    (b'SET k "a\\nb\\r\\t\\\\\\"\\x41\\xfFz"\r\n', [b"SET", b"k", b'a\nb\r\t\\"A\xffz']),
    (b'SET k "\\xZZ"\r\n', [b"SET", b"k", b"xZZ"]),
    (b"SET k 'it\\'s \"raw\" \\n'\r\n", [b"SET", b"k", b'it\'s "raw" \\n']),
    (b'SET k ""\r\n', [b"SET", b"k", b""]),
    (b'SET a"b c"d\r\n', None),  # closing quote must be followed by a space
    (b'SET a"b c" d\r\n', [b"SET", b"ab c", b"d"]),
    (b"SET k \xff\xfe\r\n", [b"SET", b"k", b"\xff\xfe"]),
    (b"SET k v\x00ignored\r\n", [b"SET", b"k", b"v"]),  # C string: NUL ends the line
    (b"GET a\x0bb\r\n", [b"GET", b"a\x0bb"]),  # \v is not a separator inside a word
])
def test_inline_commands_follow_redis_sdssplitargs(make: Parser, line: bytes, expected: list[bytes] | None) -> None:
    parser = make()
    parser.feed(line)
    if expected is None:
        with pytest.raises(ProtocolError, match="^Protocol error: unbalanced quotes in request$"):
            parser.commands()
    else:
        assert parser.commands() == [expected]


def test_inline_and_resp_mixed_in_one_pipeline(make: Parser) -> None:
    parser = make()
    parser.feed(b"PING\r\n" + PIPELINE_BYTES + b"ECHO hi\r\n" + pack(b"GET", b"x"))
    assert parser.commands() == [[b"PING"]] + PIPELINE + [[b"ECHO", b"hi"], [b"GET", b"x"]]


# ---------------------------------------------------------------- requests: errors and limits


@pytest.mark.parametrize(("data", "message"), [
    (b"*abc\r\n", "Protocol error: invalid multibulk length"),
    (b"*+1\r\n", "Protocol error: invalid multibulk length"),
    (b"*01\r\n", "Protocol error: invalid multibulk length"),
    (b"*1 \r\n", "Protocol error: invalid multibulk length"),
    (b"*\r\n", "Protocol error: invalid multibulk length"),
    (b"*99999999999999999999999\r\n", "Protocol error: invalid multibulk length"),
    (b"*-9999999999999999999\r\n", "Protocol error: invalid multibulk length"),  # below int64
    (b"*1\r\n$-1\r\n", "Protocol error: invalid bulk length"),
    (b"*1\r\n$abc\r\n", "Protocol error: invalid bulk length"),
    (b"*1\r\n$ 3\r\nfoo\r\n", "Protocol error: invalid bulk length"),
    (b"*1\r\n$03\r\nfoo\r\n", "Protocol error: invalid bulk length"),
    (b"*1\r\nx3\r\nfoo\r\n", "Protocol error: expected '$', got 'x'"),
    (b"*1\r\n:3\r\n", "Protocol error: expected '$', got ':'"),
    (b"*2\r\n*1\r\n$1\r\na\r\n$1\r\nb\r\n", "Protocol error: expected '$', got '*'"),
    (b"*1\r\n+PING\r\n", "Protocol error: expected '$', got '+'"),
    (b'SET k "unterminated\r\n', "Protocol error: unbalanced quotes in request"),
    (b"SET k 'x'y\r\n", "Protocol error: unbalanced quotes in request"),
])
def test_malformed_frames_raise_redis_messages(make: Parser, data: bytes, message: str) -> None:
    assert parse_error(make(), data) == message
    for cut in range(len(data) + 1):  # after a pipeline (a batch the C engine reads), split anywhere
        parser, got = make(), []
        with pytest.raises(ProtocolError) as info:
            for chunk in (PIPELINE_BYTES + data[:cut], data[cut:], b""):
                parser.feed(chunk)
                got += parser.commands()
        assert (got, str(info.value)) == (PIPELINE, message), cut


def test_too_big_inline_request(make: Parser) -> None:
    parser = make(max_inline_bytes=100)
    parser.feed(b"A" * 101)  # 101 bytes held: the last one might be the \r of a 100-byte line
    assert parser.commands() == []
    assert parser.buffered_bytes == 101
    assert parse_error(parser, b"A") == "Protocol error: too big inline request"
    # A complete line over the limit fails too, however the bytes were split.
    assert parse_error(make(max_inline_bytes=100), b"A" * 101 + b"\r\n") == "Protocol error: too big inline request"
    ok = make(max_inline_bytes=100)
    ok.feed(b"A" * 100 + b"\r\n")
    assert ok.commands() == [[b"A" * 100]]


def test_too_big_header_lines(make: Parser) -> None:
    assert parse_error(make(max_inline_bytes=100), b"*" + b"1" * 200) == "Protocol error: too big mbulk count string"
    assert parse_error(make(max_inline_bytes=100), b"*1\r\n$" + b"1" * 200) == "Protocol error: too big bulk count string"


def test_huge_bulk_rejected_as_soon_as_its_header_is_seen(make: Parser) -> None:
    parser = make(max_bulk_bytes=512 * MB)
    header = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1073741824\r\n"  # 1 GB declared, nothing of it sent
    assert parse_error(parser, header) == "Protocol error: invalid bulk length"
    # Same after a pipeline long enough to be read by the C engine.
    parser = make(max_bulk_bytes=512 * MB)
    parser.feed(PIPELINE_BYTES + header)
    assert parser.commands() == PIPELINE
    with pytest.raises(ProtocolError, match="^Protocol error: invalid bulk length$"):
        parser.commands()
    assert parser.buffered_bytes == 0


def test_bulk_exactly_at_the_limit_is_accepted(make: Parser) -> None:
    parser = make(max_bulk_bytes=10)
    parser.feed(pack(b"SET", b"k", b"0123456789"))
    assert parser.commands() == [[b"SET", b"k", b"0123456789"]]
    assert parse_error(parser, pack(b"SET", b"k", b"0123456789X")) == "Protocol error: invalid bulk length"


def test_complete_over_limit_frames_inside_a_big_batch_are_rejected(make: Parser) -> None:
    parser = make(max_bulk_bytes=20)
    parser.feed(PIPELINE_BYTES + pack(b"SET", b"k", b"x" * 21) + PIPELINE_BYTES)
    assert parser.commands() == PIPELINE
    assert parse_error(parser, b"") == "Protocol error: invalid bulk length"
    parser = make(max_args=7)
    parser.feed(PIPELINE_BYTES + pack(*[b"a"] * 8) + PIPELINE_BYTES)
    assert parser.commands() == PIPELINE
    assert parse_error(parser, b"") == "Protocol error: invalid multibulk length"


def test_huge_array_header_rejected_when_over_max_args(make: Parser) -> None:
    assert parse_error(make(max_args=1000), b"*100000\r\n") == "Protocol error: invalid multibulk length"
    parser = make(max_args=1000)
    parser.feed(PIPELINE_BYTES + b"*100000\r\n$3\r\nDEL\r\n")
    assert parser.commands() == PIPELINE
    with pytest.raises(ProtocolError, match="^Protocol error: invalid multibulk length$"):
        parser.commands()
    ok = make(max_args=3)
    ok.feed(pack(b"SET", b"a", b"b"))
    assert ok.commands() == [[b"SET", b"a", b"b"]]


def test_completed_commands_come_before_the_error_then_parser_is_dead(make: Parser) -> None:
    parser = make()
    parser.feed(PIPELINE_BYTES + b"PING\r\n*1\r\n!oops\r\n" + pack(b"NEVER"))
    assert parser.error is None
    assert parser.commands() == PIPELINE + [[b"PING"]]
    assert parser.error is not None
    assert str(parser.error) == "Protocol error: expected '$', got '!'"
    for _ in range(2):  # raised again, same message, whatever is fed afterwards
        parser.feed(pack(b"PING"))
        with pytest.raises(ProtocolError, match="^Protocol error: expected '\\$', got '!'$"):
            parser.commands()
    assert parser.buffered_bytes == 0


# ---------------------------------------------------------------- requests: properties

binary = st.binary(min_size=0, max_size=40)
command = st.lists(binary, min_size=1, max_size=6)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:])]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(commands=st.lists(command, min_size=1, max_size=30), cuts=st.lists(st.integers(0, 10**6), max_size=12),
       accelerate=st.booleans())
def test_property_random_commands_survive_random_chunking(
        commands: list[list[bytes]], cuts: list[int], accelerate: bool) -> None:
    stream = b"".join(pack(*c) for c in commands)
    parser = RequestParser(512 * MB, MB, 64 * 1024, accelerate=accelerate)
    assert feed_all(parser, chunked(stream, cuts)) == commands
    assert parser.buffered_bytes == 0


# Pieces that exercise every branch: valid frames, inline lines, RESP3 type
# bytes (which a reply parser would accept), bad and non-canonical lengths,
# over-limit headers, raw garbage.
piece = st.one_of(
    command.map(lambda c: pack(*c)),
    st.sampled_from([
        b"PING\r\n", b'SET "a b" c\r\n', b"\r\n", b"*0\r\n", b"*-1\r\n", b"+OK\r\n", b":1\r\n", b"$3\r\nfoo\r\n",
        b"*1\r\n+OK\r\n", b"*1\r\n:1\r\n", b"*1\r\n$-1\r\n", b"*2\r\n*1\r\n$1\r\na\r\n$1\r\nb\r\n",
        b"~1\r\n$1\r\na\r\n", b">1\r\n$1\r\na\r\n", b"%1\r\n$1\r\na\r\n$1\r\nb\r\n", b"|1\r\n$1\r\na\r\n$1\r\nb\r\n",
        b"*1\r\n=5\r\ntxt:a\r\n", b"*1\r\n(12\r\n", b"#f\r\n", b"_\r\n", b"-ERR x\r\n", b"*1\r\n$99\r\n",
        b"*1\r\n$100000\r\n", b"*300\r\n", b"*1\r\n$1\r\n", b"*2\r\n$1\r\nab\r\n", b"\r\n+x\r\n", b"*1\r\n$01\r\nx\r\n",
        b"*1\r\n$" + b"9" * 30 + b"\r\n", b"AAAA" * 40, b"$0\r\n\r\n", b"=4\r\ntxt:\r\n", b"%0\r\n", b"~0\r\n",
        b">0\r\n", b"+\r\n", b"(\r\n", b"*1\r\n*0\r\n", b"*1\r\n%0\r\n", b"*1\r\n_\r\n", b"*1\r\n#t\r\n",
        b"*1\r\n,1\r\n", b"*1\r\n-e\r\n", b"!1\r\nx\r\n", b"*3\r\n", b"*1\r\n$1\r\naXY", b"~1\r\n$1\r\na\r\n",
        b"*01\r\n$1\r\na\r\n", b"*+1\r\n$1\r\na\r\n", b"* 1\r\n$1\r\na\r\n", b"*1\r\n$+1\r\na\r\n", b"*1\r\n$ 1\r\na\r\n",
        b"*1\rX\r\n$1\r\na\r\n", b"*1\r\n$1\rX\r\na\r\n", b"*1\r\n$-0\r\n\r\n", b"*-0\r\n", b"*1\r\n$00\r\n\r\n",
        b"*1\r\n$" + b"0" * 19 + b"1\r\na\r\n", b"*" + b"1" * 19 + b"\r\n", b"*200\r\n", b"*201\r\n", b"*1\r\n$1000\r\n",
        b"*1\r\n$1001\r\n", b"*1\n$1\r\na\r\n", b"*1\r\n$1\na\r\n",
    ]),
    st.binary(max_size=20),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pieces=st.lists(piece, max_size=25), cuts=st.lists(st.integers(0, 10**6), max_size=8))
def test_property_both_engines_agree_call_by_call(pieces: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(pieces)
    engines = [RequestParser(1000, 200, 100, accelerate=a) for a in (True, False)]
    for chunk in chunked(stream, cuts):
        results: list[tuple[list[list[bytes]], str | None, int]] = []
        for parser in engines:
            parser.feed(chunk)
            try:
                results.append((parser.commands(), None, parser.buffered_bytes))
            except ProtocolError as exc:
                results.append(([], str(exc), parser.buffered_bytes))
        assert results[0] == results[1]


# ---------------------------------------------------------------- replies


def decode(data: bytes) -> object:
    reader = hiredis.Reader(notEnoughData=Ellipsis)
    reader.feed(data)
    value = reader.gets()
    assert reader.gets() is Ellipsis, "exactly one reply"
    return value


def test_constants() -> None:
    assert (OK, PONG, QUEUED) == (b"+OK\r\n", b"+PONG\r\n", b"+QUEUED\r\n")
    assert (NULL_BULK, NULL_ARRAY, NULL3, EMPTY_ARRAY) == (b"$-1\r\n", b"*-1\r\n", b"_\r\n", b"*0\r\n")
    assert ReplyEncoder(2).null == NULL_BULK
    assert ReplyEncoder(3).null == NULL3


def test_fast_path_helpers() -> None:
    assert bulk(b"a\r\nb") == b"$4\r\na\r\nb\r\n"
    assert bulk(b"") == b"$0\r\n\r\n"
    assert [integer(i) for i in (0, 7, 1023, 1024, -1, 2**63 - 1)] == [
        b":0\r\n", b":7\r\n", b":1023\r\n", b":1024\r\n", b":-1\r\n", b":9223372036854775807\r\n"]


# (value, RESP2 bytes, RESP3 bytes, what hiredis decodes from RESP2, from RESP3)
CASES: list[tuple[object, bytes, bytes, object, object]] = [
    (b"v\x00\xff\r\n", b"$5\r\nv\x00\xff\r\n\r\n", b"$5\r\nv\x00\xff\r\n\r\n", b"v\x00\xff\r\n", b"v\x00\xff\r\n"),
    (bytearray(b"ab"), b"$2\r\nab\r\n", b"$2\r\nab\r\n", b"ab", b"ab"),
    (memoryview(b"abc")[1:], b"$2\r\nbc\r\n", b"$2\r\nbc\r\n", b"bc", b"bc"),
    ("héllo", b"$6\r\nh\xc3\xa9llo\r\n", b"$6\r\nh\xc3\xa9llo\r\n", "héllo".encode(), "héllo".encode()),
    (42, b":42\r\n", b":42\r\n", 42, 42),
    (-7, b":-7\r\n", b":-7\r\n", -7, -7),
    (True, b":1\r\n", b"#t\r\n", 1, True),
    (False, b":0\r\n", b"#f\r\n", 0, False),
    (None, b"$-1\r\n", b"_\r\n", None, None),
    (NullArray, b"*-1\r\n", b"_\r\n", None, None),
    (1.5, b"$3\r\n1.5\r\n", b",1.5\r\n", b"1.5", 1.5),
    (3.0, b"$1\r\n3\r\n", b",3\r\n", b"3", 3.0),
    (0.1, b"$19\r\n0.10000000000000001\r\n", b",0.10000000000000001\r\n", b"0.10000000000000001", 0.1),
    (float("inf"), b"$3\r\ninf\r\n", b",inf\r\n", b"inf", math.inf),
    (float("-inf"), b"$4\r\n-inf\r\n", b",-inf\r\n", b"-inf", -math.inf),
    ([], b"*0\r\n", b"*0\r\n", [], []),
    ([b"a", 1, None], b"*3\r\n$1\r\na\r\n:1\r\n$-1\r\n", b"*3\r\n$1\r\na\r\n:1\r\n_\r\n", [b"a", 1, None], [b"a", 1, None]),
    ((b"x", (b"y",)), b"*2\r\n$1\r\nx\r\n*1\r\n$1\r\ny\r\n", b"*2\r\n$1\r\nx\r\n*1\r\n$1\r\ny\r\n", [b"x", [b"y"]], [b"x", [b"y"]]),
    ({b"f": 1, b"g": [b"v"]}, b"*4\r\n$1\r\nf\r\n:1\r\n$1\r\ng\r\n*1\r\n$1\r\nv\r\n",
     b"%2\r\n$1\r\nf\r\n:1\r\n$1\r\ng\r\n*1\r\n$1\r\nv\r\n", [b"f", 1, b"g", [b"v"]], {b"f": 1, b"g": [b"v"]}),
    ({b"m"}, b"*1\r\n$1\r\nm\r\n", b"~1\r\n$1\r\nm\r\n", [b"m"], [b"m"]),
    (frozenset([b"m"]), b"*1\r\n$1\r\nm\r\n", b"~1\r\n$1\r\nm\r\n", [b"m"], [b"m"]),
    (SimpleString("OK"), b"+OK\r\n", b"+OK\r\n", b"OK", b"OK"),
    (Verbatim("a\r\nb"), b"$4\r\na\r\nb\r\n", b"=8\r\ntxt:a\r\nb\r\n", b"a\r\nb", b"a\r\nb"),
    (Verbatim(b"# md", fmt="mkd"), b"$4\r\n# md\r\n", b"=8\r\nmkd:# md\r\n", b"# md", b"# md"),
    (BigNumber(2**70), b"$22\r\n1180591620717411303424\r\n", b"(1180591620717411303424\r\n",
     b"1180591620717411303424", b"1180591620717411303424"),
    (Push([b"message", b"ch", b"hi"]), b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n",
     b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n", [b"message", b"ch", b"hi"], [b"message", b"ch", b"hi"]),
]


@pytest.mark.parametrize(("value", "resp2", "resp3", "decoded2", "decoded3"), CASES, ids=[repr(c[0])[:30] for c in CASES])
def test_reply_encoding_byte_for_byte_and_decodable(
        value: object, resp2: bytes, resp3: bytes, decoded2: object, decoded3: object) -> None:
    for protocol, expected, decoded in ((2, resp2, decoded2), (3, resp3, decoded3)):
        encoder = ReplyEncoder(protocol)
        assert encoder.encode(value) == expected
        out = bytearray(b"prefix")
        encoder.encode_into(out, value)
        assert out == b"prefix" + expected
        assert decode(expected) == decoded


def test_error_replies_are_one_line() -> None:
    enc = ReplyEncoder()
    assert enc.encode(ErrorReply("ERR bad thing")) == b"-ERR bad thing\r\n"
    assert enc.encode(ErrorReply("-ERR leading dash")) == b"-ERR leading dash\r\n"
    assert enc.encode(ErrorReply("ERR a\r\nb\nc\r\n")) == b"-ERR a  b c\r\n"
    assert enc.encode(SimpleString("x\r\ny")) == b"+x  y\r\n"
    assert enc.encode(WrongTypeError()) == b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"
    error = decode(enc.encode(ErrorReply("ERR bad")))
    assert isinstance(error, hiredis.ReplyError) and str(error) == "ERR bad"
    assert ReplyEncoder(3).encode([ErrorReply("ERR in array")]) == b"*1\r\n-ERR in array\r\n"


def test_protocol_switch_and_nested_values() -> None:
    enc = ReplyEncoder()
    value = [{b"k": {b"s"}}, None, 2.5, True]
    assert enc.encode(value) == b"*4\r\n*2\r\n$1\r\nk\r\n*1\r\n$1\r\ns\r\n$-1\r\n$3\r\n2.5\r\n:1\r\n"
    enc.protocol = 3  # HELLO 3
    assert enc.encode(value) == b"*4\r\n%1\r\n$1\r\nk\r\n~1\r\n$1\r\ns\r\n_\r\n,2.5\r\n#t\r\n"
    assert decode(enc.encode(value)) == [{b"k": [b"s"]}, None, 2.5, True]


@pytest.mark.parametrize(("value", "text"), [
    (1.5, b"1.5"), (3.0, b"3"), (0.1, b"0.10000000000000001"), (-0.0, b"-0"), (0.0, b"0"),
    (1e20, b"1e+20"), (123456789012345680.0, b"1.2345678901234568e+17"), (2.5e-7, b"2.4999999999999999e-07"),
    (math.inf, b"inf"), (-math.inf, b"-inf"), (math.nan, b"nan"),
])
def test_doubles_are_formatted_like_redis_7_0(value: float, text: bytes) -> None:
    assert format_double(value) == text
    assert ReplyEncoder(3).encode(value) == b",%b\r\n" % text


def test_bad_values_are_refused() -> None:
    with pytest.raises(TypeError, match="cannot encode object"):
        ReplyEncoder().encode(object())
    with pytest.raises(ValueError, match="protocol must be 2 or 3"):
        ReplyEncoder(4)
    with pytest.raises(ValueError, match="3 characters"):
        Verbatim("x", fmt="markdown")


# ---------------------------------------------------------------- the C engine itself


def test_c_engine_is_built_and_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """memd._resp is built wherever the tests run (a C compiler and Python's headers; scripts/test installs
    them): without it every test above would test Python twice."""
    import memd.resp
    from memd import _resp
    calls: list[int] = []

    def counting(*args: object) -> object:
        calls.append(1)
        return _resp.split(*args)
    monkeypatch.setattr(memd.resp, "_split", counting)
    parser = RequestParser(512 * MB, MB, 64 * 1024)
    assert feed_all(parser, [PIPELINE_BYTES, PIPELINE_BYTES]) == PIPELINE + PIPELINE
    assert len(calls) == 2


@pytest.mark.parametrize("data, pos, taken, stopped", [
    (pack(b"GET", b"k") + pack(b"PING"), 0, [[b"GET", b"k"], [b"PING"]], False),
    (pack(b"GET", b"k") + pack(b"PING")[:-3], 0, [[b"GET", b"k"]], False),  # cut: the rest needs bytes
    (pack(b"GET", b"k") + b"PING\r\n", 0, [[b"GET", b"k"]], True),  # inline: Python's
    (b"*0\r\n" + pack(b"PING"), 0, [], True),  # skipped by Redis: Python's
    (b"*3\r\n", 0, [], True),  # over max_args (2 here): Python raises
    (b"*1\r\n$5\r\nhello\r\n", 0, [], True),  # over max_bulk (4 here)
    (b"*2\r\n$1\r\na\r\n", 0, [], False),  # too short to hold 2 arguments: cut short, nothing allocated
    (b"*1\r\n$01\r\nx\r\n", 0, [], True),  # not canonical
    (b"*1\r\n$12345", 0, [], False),  # a header cut short
    (b"*1\r\n$" + b"1" * 25, 0, [], True),  # too long to be canonical, CR or not
    (b"xx" + pack(b"A"), 2, [[b"A"]], False),
    (b"*1\r\n$1\r\naXY", 0, [[b"a"]], False),  # the 2 bytes after bulk data are not checked, as by Redis
])
def test_c_split_takes_plain_frames_and_stops_where_python_must_read(
        data: bytes, pos: int, taken: list[list[bytes]], stopped: bool) -> None:
    from memd import _resp
    out: list[list[bytes]] = []
    end, stop = _resp.split(data, pos, 2, 4, out)
    assert out == taken
    assert stop is stopped
    assert end == pos + len(b"".join(pack(*c) for c in taken))


def test_c_split_allocates_nothing_for_a_frame_that_has_not_arrived() -> None:
    """A header declaring a million arguments, then one: no list of a million slots per feed (8 MB)."""
    import tracemalloc

    from memd import _resp
    tracemalloc.start()
    try:
        out: list[list[bytes]] = []
        assert _resp.split(b"*1048576\r\n$1\r\na\r\n", 0, MB, 100, out) == (0, False)
        assert tracemalloc.get_traced_memory()[1] < 64 * 1024
    finally:
        tracemalloc.stop()


def test_limits_beyond_what_c_reads_are_the_same_as_no_limit() -> None:
    """The config sets no maximum: limits of 2^63 and more still parse (in C: lengths under 10^18)."""
    parser = RequestParser(2**63, 2**64, 64 * 1024)
    assert feed_all(parser, [PIPELINE_BYTES, pack(b"SET", b"k", b"v" * 5000)]) == PIPELINE + [[b"SET", b"k", b"v" * 5000]]
