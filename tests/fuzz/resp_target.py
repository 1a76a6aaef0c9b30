"""Fuzz target: memd's RESP request parser on arbitrary bytes, cut at arbitrary points.

Why these invariants: the parser is the only code that sees a client's raw
bytes before anything checks them, and its class docstring promises things a
fuzzer can hold it to. For any input it must either return commands, wait
for more data, or raise :class:`~memd.errors.ProtocolError` — any other
exception would kill the connection's handler; after each call it holds at
most one partial frame within the configured limits (no unbounded memory);
its outcome never depends on how the bytes were cut or on which engine
(hiredis or Python) parsed them; and re-encoding what it parsed as RESP and
parsing that again gives the same commands.

An input is ``[config byte][config byte][2 bytes per cut][stream]``: the
config bytes pick the limits, the engine, how many cuts and whether the
parser is drained after every read; plain bytes keep the target usable from
atheris, hypothesis or a seed list alike.
"""

from __future__ import annotations

from dataclasses import dataclass

from memd.errors import ProtocolError
from memd.resp import RequestParser

BULK_LIMITS = (0, 1, 3, 8, 64, 512, 4096, 1 << 20)
ARG_LIMITS = (0, 1, 2, 3, 4, 16, 64, 1024)
LINE_LIMITS = (1, 2, 4, 8, 16, 64, 1024, 65536)


@dataclass(frozen=True, slots=True)
class Config:
    max_bulk: int
    max_args: int
    max_line: int
    accelerate: bool
    drain_each_read: bool
    cuts: tuple[int, ...]


def decode(data: bytes) -> tuple[Config, bytes]:
    """Split an input into its parser configuration and the byte stream it feeds."""
    b0 = data[0] if len(data) > 0 else 0
    b1 = data[1] if len(data) > 1 else 0
    ncuts = b1 >> 3
    raw_cuts = data[2:2 + 2 * ncuts]
    stream = data[2 + 2 * ncuts:]
    cuts = sorted({int.from_bytes(raw_cuts[i:i + 2], "little") % (len(stream) + 1)
                   for i in range(0, len(raw_cuts) - 1, 2)})
    config = Config(max_bulk=BULK_LIMITS[(b0 >> 2) & 7], max_args=ARG_LIMITS[(b0 >> 5) & 7],
                    max_line=LINE_LIMITS[b1 & 7], accelerate=bool(b0 & 1), drain_each_read=bool(b0 & 2),
                    cuts=tuple(cuts))
    return config, stream


def encode(config_b0: int, config_b1: int, cuts: list[int], stream: bytes) -> bytes:
    """The inverse of :func:`decode` (seed inputs, hypothesis)."""
    cuts = cuts[:31]
    b1 = (config_b1 & 7) | (len(cuts) << 3)
    return bytes([config_b0 & 255, b1]) + b"".join(c.to_bytes(2, "little") for c in cuts) + stream


def frame_bound(max_bulk: int, max_args: int, max_line: int) -> int:
    """Most bytes a parser may hold after :meth:`RequestParser.commands`: one partial frame.

    An inline line with no newline yet is refused at ``max_line + 2`` bytes,
    a header line once it is also longer than any valid one (22 bytes with
    its CR), so a line held is at most ``max(max_line, 21) + 1`` bytes; then
    up to ``max_args`` bulks of at most ``max_bulk`` bytes plus CRLF.
    """
    line = max(max_line, 21) + 1
    return line + max_args * (line + 2 + max_bulk + 2)


def to_resp(cmds: list[list[bytes]]) -> bytes:
    """Commands as RESP arrays of bulk strings (what a client library sends)."""
    return b"".join(b"*%d\r\n" % len(c) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in c) for c in cmds)


def run_parser(stream: bytes, cuts: tuple[int, ...], max_bulk: int, max_args: int, max_line: int,
               accelerate: bool, drain_each_read: bool) -> tuple[list[list[bytes]], str | None]:
    """Feed ``stream`` cut at ``cuts``; return every command and the protocol error, if any.

    Checks the memory bound after every :meth:`RequestParser.commands` call.
    Any exception but ProtocolError escapes: that is a finding.
    """
    parser = RequestParser(max_bulk, max_args, max_line, accelerate=accelerate)
    bound = frame_bound(max_bulk, max_args, max_line)
    out: list[list[bytes]] = []
    bounds = [0, *cuts, len(stream)]
    pieces = [stream[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    for i, piece in enumerate(pieces):
        parser.feed(piece)
        if not drain_each_read and i < len(pieces) - 1:
            continue
        try:
            while True:  # the server calls again while commands come (later ones may follow an error)
                got = parser.commands()
                if parser.buffered_bytes > bound:
                    raise AssertionError(f"parser holds {parser.buffered_bytes} bytes after commands(), more "
                                         f"than one partial frame can hold ({bound})")
                if not got:
                    break
                out += got
        except ProtocolError as exc:
            error = str(exc)
            if parser.buffered_bytes:
                raise AssertionError("a failed parser still holds bytes") from None
            try:
                parser.commands()
            except ProtocolError as again:
                if str(again) != error:
                    raise AssertionError(f"a dead parser changed its error: {error!r} -> {again!r}") from None
            else:
                raise AssertionError("a failed parser returned commands after its error")
            return out, error
    return out, None


def check(data: bytes) -> tuple[int, bool]:
    """Run every invariant on one input; return (commands parsed, whether it ended in a protocol error)."""
    config, stream = decode(data)
    limits = (config.max_bulk, config.max_args, config.max_line)
    # the reference: the pure-Python engine, all bytes in one read
    ref_cmds, ref_error = run_parser(stream, (), *limits, accelerate=False, drain_each_read=True)
    cmds, error = run_parser(stream, config.cuts, *limits, accelerate=config.accelerate,
                             drain_each_read=config.drain_each_read)
    if cmds != ref_cmds or error != ref_error:
        raise AssertionError(f"the outcome depends on cuts/engine ({config}):\n  reference: {ref_cmds!r} "
                             f"{ref_error!r}\n  got:       {cmds!r} {error!r}")
    for c in cmds:
        if not c or any(type(a) is not bytes for a in c):
            raise AssertionError(f"malformed command {c!r}")
    if cmds:
        # re-encode and parse again: identity (limits wide enough for what was accepted)
        again = to_resp(cmds)
        wide = (max(max(len(a) for c in cmds for a in c), 1), max(len(c) for c in cmds), 64)
        for accelerate in (False, True):
            back, back_error = run_parser(again, config.cuts if config.cuts and config.cuts[-1] <= len(again)
                                          else (), *wide, accelerate=accelerate, drain_each_read=True)
            if back != cmds or back_error is not None:
                raise AssertionError(f"re-encoding is not the identity (accelerate={accelerate}): "
                                     f"{cmds!r} -> {back!r} {back_error!r}")
    return len(cmds), error is not None


SEEDS: tuple[bytes, ...] = (
    encode(0b111_100_01, 6, [], b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n" * 3),
    encode(0b111_100_11, 6, [5, 17], b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPING\r\n"),
    encode(0b111_100_00, 6, [3], b"PING\r\nSET a \"b\\x41c\" 'd'\r\n\r\n*0\r\n*-1\r\n"),
    encode(0b011_011_01, 2, [9], b"*2\r\n$4\r\nECHO\r\n$99\r\n" + b"x" * 20),
    encode(0b111_111_11, 6, [200, 700], b"*16\r\n" + b"$8\r\nabcdefgh\r\n" * 16 + b"*1\r\n$2\r\nxy\r\n" * 40),
)


class RespTarget:
    """The driver's view of this target: one input at a time, counters, a final check."""

    name = "resp"
    seeds = SEEDS
    dictionary = (b"\r\n", b"\n", b"*1\r\n", b"*2\r\n", b"*3\r\n", b"*0\r\n", b"*-1\r\n", b"$0\r\n\r\n",
                  b"$1\r\n", b"$3\r\n", b"$-1\r\n", b"SET", b"GET", b"\"", b"'", b"\\x4", b"\\", b"\x00",
                  b"9223372036854775807", b"9223372036854775808", b"-9223372036854775808", b"01", b"+1", b" ")

    def __init__(self) -> None:
        self.commands = 0
        self.protocol_errors = 0
        self.round_trips = 0

    def one(self, data: bytes) -> None:
        n, failed = check(data)
        self.commands += n
        self.protocol_errors += failed
        self.round_trips += bool(n)

    def stats(self) -> dict[str, int]:
        return {"commands_parsed": self.commands, "protocol_errors": self.protocol_errors,
                "round_trips_checked": self.round_trips}

    def finish(self) -> dict[str, int]:
        return self.stats()
