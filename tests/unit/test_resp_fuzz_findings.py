"""Inputs the RESP fuzz target (benchmarks/fuzz.py --target resp) found, kept as regressions.

Each pins down one promise of :class:`memd.resp.RequestParser` that an input broke:
the outcome never depends on how the bytes were cut into reads.
"""

from __future__ import annotations

import pytest

from memd.errors import ProtocolError
from memd.resp import RequestParser


def parse(reads: list[bytes], max_inline_bytes: int, accelerate: bool) -> tuple[list[list[bytes]], str | None]:
    parser = RequestParser(1 << 20, 1 << 20, max_inline_bytes, accelerate=accelerate)
    out: list[list[bytes]] = []
    try:
        for data in reads:
            parser.feed(data)
            out += parser.commands()
    except ProtocolError as exc:
        return out, str(exc)
    return out, None


@pytest.mark.parametrize("accelerate", [False, True])
@pytest.mark.parametrize("max_inline_bytes", [1, 4, 8])
def test_a_valid_header_longer_than_a_small_line_limit_is_accepted_however_it_is_cut(
        max_inline_bytes: int, accelerate: bool) -> None:
    """A header cut before its LF was refused as "too big" when the same bytes in one read were fine.

    ``max_inline_bytes`` may be configured as low as 1; a valid ``$``/``*``
    length line is up to 21 bytes, so the wait for its end must not give up
    sooner than a valid one could end.
    """
    value = b"x" * 10000
    stream = b"*2\r\n$4\r\nECHO\r\n$10000\r\n" + value + b"\r\n" + b"*12345\r\n" + b"$1\r\na\r\n" * 12345
    whole = parse([stream], max_inline_bytes, accelerate)
    assert whole == ([[b"ECHO", value], [b"a"] * 12345], None)
    for cut in range(1, 40):  # every cut through the first headers, and through the *12345 line
        assert parse([stream[:cut], stream[cut:]], max_inline_bytes, accelerate) == whole, cut
    at = stream.index(b"*12345")
    for cut in range(at, at + 8):
        assert parse([stream[:cut], stream[cut:]], max_inline_bytes, accelerate) == whole, cut


@pytest.mark.parametrize("accelerate", [False, True])
def test_an_overlong_header_is_refused_the_same_way_whole_or_cut(accelerate: bool) -> None:
    stream = b"*1\r\n$" + b"9" * 30 + b"\r\n"
    whole = parse([stream], 4, accelerate)
    assert whole == ([], "Protocol error: too big bulk count string")
    for cut in range(1, len(stream)):
        assert parse([stream[:cut], stream[cut:]], 4, accelerate) == whole, cut
