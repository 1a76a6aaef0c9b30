"""Sans-IO RESP codec: request bytes in, commands out; reply values in, bytes out.

No sockets, no event loop (h11 style): the server feeds what ``data_received``
got to :class:`RequestParser`, takes every complete command from
:meth:`RequestParser.commands`, runs them, and writes the replies that
:class:`ReplyEncoder` made in one ``transport.write``.

Why this parser: a pure-Python parser (``bytes.find`` and index arithmetic
over one buffer, a dict that parses and validates common lengths) is the
reference for every rule and error, and costs 1.4-2.6 µs per pipelined
command. Plain RESP arrays, what clients send, go to a small reader in C
(memd._resp) that takes only frames exact by construction and stops where
Python must read on: 0.12-0.19 µs per command in pipelines of 16 (GET, SET
of 200 bytes, XADD, EVALSHA, MEM.PUT of 1 KB), 0.6-1.3 µs for one command
alone (2026-12-08, at the commit that added memd/_resp.c; in-process ``timeit`` of
``feed`` + ``commands``). Before it, hiredis's reply parser did this under
a guard (pack the commands back, compare with the bytes read: it accepts
what Redis refuses and checks no limit), 0.57-0.87 µs per command, most of
it the guard.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from itertools import chain
from typing import Any, Final

from memd.errors import CommandError, ProtocolError
from memd.int64 import parse_int64

try:
    from memd._resp import split as _split
except ImportError:  # not built (no C compiler at install): Python parses everything
    _split = None

__all__ = [
    "OK", "PONG", "QUEUED", "NULL_BULK", "NULL_ARRAY", "NULL3", "EMPTY_ARRAY",
    "BigNumber", "ErrorReply", "Frames", "NullArray", "PairMap", "Push", "Raw", "ReplyEncoder",
    "RequestParser", "SimpleString", "Verbatim", "bulk", "integer", "format_double",
]

# Canonical decimal spellings -> int: one dict hit both parses and validates
# (Redis's string2ll rejects "+1", " 1", "01", "1_0"; so does a dict miss);
# other lengths go through memd.int64, the one copy of that rule.
_SMALL: Final[dict[bytes, int]] = {b"%d" % i: i for i in range(1024)}
_INLINE_SPECIAL: Final = re.compile(rb"[\"'\x00\x0b\x0c]")
_ESCAPES: Final[dict[int, int]] = {110: 10, 114: 13, 116: 9, 98: 8, 97: 7}  # n r t b a
_HEXBYTE: Final = re.compile(rb"[0-9a-fA-F]{2}")
_BLANK: Final = b" \t\n\r\x0b\x0c"  # C isspace()
_C_LIMIT: Final = 10**18  # the lengths memd._resp reads: 18 digits at most
_FAST_TAIL: Final = 4096  # partial frames larger than this are left to the Python engine
_MAX_HEADER: Final = 21  # longest valid '*'/'$' line without CRLF: the type byte and "-9223372036854775808"


def _split_inline(line: bytes) -> list[bytes]:
    """Port of Redis ``sdssplitargs`` for inline lines with quotes (rare, so per-byte)."""
    line = line.split(b"\0", 1)[0]  # a C string: NUL ends the line
    args: list[bytes] = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i] in _BLANK:
            i += 1
        if i >= n:
            return args
        cur, quote = bytearray(), 0  # quote: 0, or the open quote char (34 " or 39 ')
        while True:
            c = line[i] if i < n else -1
            if not quote:
                if c in (-1, 32, 10, 13, 9):
                    break
                if c in (34, 39):
                    quote = c
                else:
                    cur.append(c)
            elif c == -1:
                raise ProtocolError("Protocol error: unbalanced quotes in request")
            elif c == quote:  # the closing quote must end the word
                if i + 1 < n and line[i + 1] not in _BLANK:
                    raise ProtocolError("Protocol error: unbalanced quotes in request")
                i += 1
                break
            elif c == 92 and quote == 34 and line[i + 1:i + 2] == b"x" and _HEXBYTE.fullmatch(line, i + 2, i + 4):
                cur.append(int(line[i + 2:i + 4], 16))
                i += 3
            elif c == 92 and quote == 34 and i + 1 < n:
                i += 1
                cur.append(_ESCAPES.get(line[i], line[i]))
            elif c == 92 and line[i + 1:i + 2] == b"'":  # in single quotes only \' is special
                i += 1
                cur.append(39)
            else:
                cur.append(c)
            i += 1
        args.append(bytes(cur))


class RequestParser:
    """Incremental parser of client requests: RESP arrays of bulk strings, or inline lines.

    Errors: :meth:`commands` returns the commands completed before bad bytes
    and stores the :class:`ProtocolError` (see :attr:`error`); the next call
    raises it (a call that meets bad bytes first raises at once). The parser
    is then dead: feeds are dropped, every call raises the same error.

    Limits fire on the header or line, never after buffering the payload: a
    bulk declared over ``max_bulk_bytes`` or an array over ``max_args`` fails
    on its header; a line (inline command, ``*``/``$`` header) over
    ``max_inline_bytes`` fails once ``max_inline_bytes + 2`` bytes of it are
    held with no newline (a header: once it is also too long to hold a valid
    length), or when it ends: the outcome never depends on how the bytes
    were split. Like Redis: ``*0``/``*-1`` and empty lines are
    skipped, and the 2 bytes after bulk data are not checked.

    Two engines, one behaviour. ``_parse`` (Python) is the reference. While
    the stream is at a frame boundary, batches go to ``memd._resp.split``
    (C) instead: it reads the complete ``*<n>`` arrays of ``$<len>`` bulk
    strings with canonical lengths within the limits, and stops at anything
    else. What it stops at, and a frame cut short, ``_parse`` reads at
    once (limits, errors, inline commands); a partial frame over
    ``_FAST_TAIL`` bytes stays with Python until it is complete. Without
    the extension (no C compiler at install) Python parses everything.
    ``accelerate=False`` keeps to Python (tests, benchmarks).
    """

    __slots__ = ("_max_bulk", "_max_args", "_max_line", "_c_bulk", "_c_args", "_accelerate", "_fast_on",
                 "_buf", "_pos", "_chunks", "_avail", "_need", "_want_line", "_ready",
                 "_args", "_left", "_held", "_error")

    def __init__(self, max_bulk_bytes: int, max_args: int, max_inline_bytes: int, *,
                 accelerate: bool = True) -> None:
        self._max_bulk = max_bulk_bytes
        self._max_args = max_args
        self._max_line = max_inline_bytes
        # C takes lengths under 10^18 only (18 digits: canonical() in memd/_resp.c), so a higher limit
        # (the config sets none) means the same to it, and stays within its C long long
        self._c_bulk, self._c_args = min(max_bulk_bytes, _C_LIMIT), min(max_args, _C_LIMIT)
        self._accelerate = accelerate and _split is not None
        self._fast_on = False  # batches go to memd._resp (fast mode); set by _settle
        self._buf = b""  # unparsed bytes start at _pos; in fast mode _pos is 0 and _buf
        self._pos = 0  # is a partial frame, parsed again whole with the next bytes
        self._chunks: list[bytes] = []
        self._avail = 0  # len(_buf) - _pos + sum(len(_chunks))
        self._need = 1  # unparsed bytes needed before parsing can progress...
        self._want_line = False  # ...or any b"\n" when waiting for a line end
        self._ready = False
        self._args: list[bytes] | None = None  # big array being filled, across feeds
        self._left = 0  # bulk strings still missing from _args
        self._held = 0  # bytes of the partial frame already moved into _args
        self._error: ProtocolError | None = None
        self._settle()

    @property
    def buffered_bytes(self) -> int:
        """Bytes received but not yet returned as commands (for memory accounting)."""
        return self._avail + self._held

    @property
    def error(self) -> ProtocolError | None:
        """The protocol error met so far, if any (the next :meth:`commands` raises it)."""
        return self._error

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Queue received bytes; parsing is deferred to :meth:`commands`."""
        if self._error is not None or not data:
            return
        if type(data) is not bytes:
            data = bytes(data)
        self._chunks.append(data)
        self._avail += len(data)
        if self._avail >= self._need or (self._want_line and b"\n" in data):
            self._ready = True

    def commands(self) -> list[list[bytes]]:
        """Return every complete command buffered, oldest first; see class doc for errors."""
        if self._error is not None:
            raise self._error.with_traceback(None)
        if not self._ready:
            return []
        self._ready = False
        chunks, self._chunks = self._chunks, []
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        out: list[list[bytes]] = []
        try:
            if self._fast_on:
                self._fast(data, out)
            else:
                if self._pos < len(self._buf):  # an incomplete frame's bytes + new bytes
                    data = b"".join((memoryview(self._buf)[self._pos:], data))
                self._parse(data, out)
                self._settle()
        except ProtocolError as exc:
            self._error = exc
            self._fast_on = False
            self._buf, self._pos, self._avail, self._args, self._held = b"", 0, 0, None, 0
            if not out:
                raise
        return out

    def _fast(self, data: bytes, out: list[list[bytes]]) -> None:
        """Parse a batch with memd._resp (see class doc); Python reads on where it stops."""
        tail = self._buf
        stream = tail + data if tail else data
        assert _split is not None
        pos, _ = _split(stream, 0, self._c_args, self._c_bulk, out)
        rest = stream[pos:] if pos else stream
        self._buf, self._avail = rest, len(rest)
        if rest:  # a frame C does not take, or one cut short: Python reads it now (limits, errors)
            self._parse(rest, out)
            if self._pos or self._args is not None or len(rest) > _FAST_TAIL or rest[0] != 42:
                self._fast_on = False  # Python's state is the truth until _settle hands the stream back
            # (else a cut frame, rewound: _parse's _need / _want_line say when it can be complete)
        else:
            self._need, self._want_line = 1, False  # (what an earlier cut frame needed is read)

    def _settle(self) -> None:
        """After a Python parse: hand the stream back to C at a frame boundary."""
        if (not self._accelerate or self._args is not None or len(self._buf) - self._pos > _FAST_TAIL
                or self._buf[self._pos:self._pos + 1] not in (b"", b"*")):
            self._fast_on = False
            return
        self._fast_on = True
        self._buf, self._pos = self._buf[self._pos:], 0  # (_need is relative to _pos: unchanged)

    def _parse(self, buf: bytes, out: list[list[bytes]]) -> None:
        """Parse complete commands from ``buf`` into ``out``; keep the partial tail.

        A partial frame under ``_FAST_TAIL`` bytes is rewound to its first
        byte (cheap to re-parse, and C can take it over); a bigger one
        keeps its finished arguments so huge arrays are parsed only once.
        """
        find, small, n = buf.find, _SMALL, len(buf)
        max_bulk, max_args, max_line = self._max_bulk, self._max_args, self._max_line
        # A header line cut before its CRLF is refused only once it is too long to be valid ('*'/'$' and
        # an int64 are at most 21 bytes): else a small max_line would refuse a valid header or not
        # depending on where a read ended.
        max_head = max(max_line, _MAX_HEADER)
        args, left = self._args, self._left
        pos, start = 0, (0 if args is None else -1)  # start: this frame's first byte
        need, need_line = 1, False  # need: absolute index in buf
        while True:
            if args is None:  # at the start of a command
                start = pos
                if pos >= n:
                    need = n + 1
                    break
                if buf[pos] != 42:  # not '*': an inline command
                    nl = find(b"\n", pos)
                    end = nl - 1 if nl > pos and buf[nl - 1] == 13 else nl
                    if (nl < 0 and n - pos >= max_line + 2) or end - pos > max_line:
                        raise ProtocolError("Protocol error: too big inline request")
                    if nl < 0:
                        need, need_line = pos + max_line + 2, True
                        break
                    line = buf[pos:end]
                    pos = nl + 1
                    words = _split_inline(line) if _INLINE_SPECIAL.search(line) else line.split()
                    if words:
                        out.append(words)
                    continue
                nl = find(b"\r\n", pos)
                if nl < 0:
                    if n - pos >= max_head + 2:
                        raise ProtocolError("Protocol error: too big mbulk count string")
                    need, need_line = pos + max_head + 2, True
                    break
                text = buf[pos + 1:nl]
                count = small.get(text)
                if count is None:
                    count = parse_int64(text)
                    if count is None and nl - pos > max_line:
                        raise ProtocolError("Protocol error: too big mbulk count string")
                if count is None or count > max_args:
                    raise ProtocolError("Protocol error: invalid multibulk length")
                pos = nl + 2
                if count <= 0:
                    continue
                args, left = [], count
            while left:  # one bulk string per turn
                if pos >= n:
                    need = n + 1
                    break
                if buf[pos] != 36:  # '$'
                    raise ProtocolError("Protocol error: expected '$', got '%s'" % chr(buf[pos]))
                nl = find(b"\r\n", pos)
                if nl < 0:
                    if n - pos >= max_head + 2:
                        raise ProtocolError("Protocol error: too big bulk count string")
                    need, need_line = pos + max_head + 2, True
                    break
                text = buf[pos + 1:nl]
                size = small.get(text)
                if size is None:
                    size = parse_int64(text)
                    if size is None and nl - pos > max_line:
                        raise ProtocolError("Protocol error: too big bulk count string")
                    if size is None or size < 0 or size > max_bulk:
                        raise ProtocolError("Protocol error: invalid bulk length")
                elif size > max_bulk:
                    raise ProtocolError("Protocol error: invalid bulk length")
                end = nl + 2 + size
                if end + 2 > n:
                    need = end + 2
                    break
                args.append(buf[nl + 2:end])
                pos = end + 2
                left -= 1
            if left:
                if start >= 0 and n - start <= _FAST_TAIL:
                    args, pos = None, start  # small partial frame: re-parse it whole later
                break
            out.append(args)
            args = None
        self._held = 0 if args is None else pos - max(start, 0) + (self._held if start < 0 else 0)
        self._args, self._left = args, left
        self._buf, self._pos, self._avail = buf, pos, n - pos
        self._need, self._want_line = need - pos, need_line


# ---------------------------------------------------------------- replies

OK: Final = b"+OK\r\n"
PONG: Final = b"+PONG\r\n"
QUEUED: Final = b"+QUEUED\r\n"
NULL_BULK: Final = b"$-1\r\n"  # RESP2 null (GET of a missing key)
NULL_ARRAY: Final = b"*-1\r\n"  # RESP2 null array (EXEC aborted by WATCH, BLPOP timeout)
NULL3: Final = b"_\r\n"  # RESP3 null, for both of the above
EMPTY_ARRAY: Final = b"*0\r\n"
_INTS: Final[tuple[bytes, ...]] = tuple(b":%d\r\n" % i for i in range(1024))


def bulk(value: bytes) -> bytes:
    """Hot path: one bulk string reply (same bytes in RESP2 and RESP3)."""
    return b"$%d\r\n%b\r\n" % (len(value), value)


def integer(value: int) -> bytes:
    """Hot path: one integer reply (same bytes in RESP2 and RESP3)."""
    if 0 <= value < 1024:
        return _INTS[value]
    return b":%d\r\n" % value


def format_double(value: float) -> bytes:
    """A double as Redis 7.0 (Debian 12's redis-server) writes it: ``%.17g``.

    So 1.5 -> ``1.5``, 3.0 -> ``3``, 0.1 -> ``0.10000000000000001``;
    inf/-inf/nan -> ``inf``/``-inf``/``nan``. (Redis >= 7.2 switched to the
    shortest round-trip form, ``0.1``; clients parse either.)
    """
    return b"%.17g" % value


class SimpleString(str):
    """A status reply: ``SimpleString("OK")`` -> ``+OK``."""

    __slots__ = ()


class ErrorReply(str):
    """An error reply, the whole line after '-': ``ErrorReply("ERR bad")`` -> ``-ERR bad``."""

    __slots__ = ()


class BigNumber(int):
    """RESP3 big number ``(``; a bulk string in RESP2."""

    __slots__ = ()


class Push(list[Any]):
    """RESP3 out-of-band push ``>`` (pub/sub); a plain array in RESP2."""

    __slots__ = ()


class Frames(list[Any]):
    """Several replies in a row, not one array: SUBSCRIBE and its kin answer once per channel.

    Each is a :class:`Push` (RESP3 ``>``). Inside EXEC they fill the one slot of their command,
    as Redis writes them there. Being pushes, Redis sends them even under CLIENT REPLY OFF.
    """

    __slots__ = ()


class Raw(bytes):
    """Bytes already encoded as RESP, written as they are (pushes that arrived while EXEC ran)."""

    __slots__ = ()


class OrderedSet(list[Any]):
    """RESP3 set ``~`` whose element order is fixed (COMMAND's metadata, as Redis sends it); an array in RESP2."""

    __slots__ = ()


class Verbatim:
    """RESP3 verbatim string ``=`` (e.g. INFO, ``fmt`` is 3 chars); bulk in RESP2."""

    __slots__ = ("text", "fmt")

    def __init__(self, text: str | bytes, fmt: str = "txt") -> None:
        if len(fmt) != 3:
            raise ValueError(f"verbatim format must be 3 characters, got {fmt!r}")
        self.text = text.encode() if isinstance(text, str) else bytes(text)
        self.fmt = fmt


class PairMap(list[tuple[Any, Any]]):
    """A map given as (key, value) pairs, for the replies whose keys may repeat (XREAD naming one
    stream twice: Redis sends both); RESP2 a flat array, as a dict."""


class _NullArrayType:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NullArray"


NullArray: Final = _NullArrayType()  # RESP2 ``*-1``; RESP3 ``_``


def _line(text: str) -> bytes:
    """A status/error line must not contain CR/LF: Redis trims them, then maps the rest to spaces."""
    raw = text.encode("utf-8", "surrogateescape")
    if b"\r" in raw or b"\n" in raw:
        raw = raw.strip(b"\r\n").replace(b"\r", b" ").replace(b"\n", b" ")
    return raw


@functools.lru_cache(maxsize=256)
def _status(text: str) -> bytes:
    """``+text``: status replies are a handful of constants (OK, QUEUED...): encode each once."""
    return b"+%b\r\n" % _line(text)


class ReplyEncoder:
    """Encodes Python values as RESP2 or RESP3 replies (``.protocol`` is switchable by HELLO).

    Value model: bytes/bytearray/memoryview/str -> bulk string (str as UTF-8);
    int -> integer; bool -> RESP3 boolean, RESP2 ``:1``/``:0``; None -> null
    (``$-1`` / ``_``); :data:`NullArray` -> ``*-1`` / ``_``; float -> RESP3
    double, RESP2 bulk (:func:`format_double`); list/tuple -> array; dict ->
    RESP3 map, RESP2 flat key,value array; set/frozenset -> RESP3 set, RESP2
    array; :class:`SimpleString`, :class:`ErrorReply`, :class:`Verbatim`,
    :class:`BigNumber`, :class:`Push`; a :class:`~memd.errors.CommandError`
    -> ``-PREFIX message``. Dispatch is on the exact type; anything else is a
    bug and raises TypeError.
    """

    __slots__ = ("protocol",)
    _TABLE: dict[type, Callable[[ReplyEncoder, bytearray, Any], None]]

    def __init__(self, protocol: int = 2) -> None:
        if protocol not in (2, 3):
            raise ValueError(f"protocol must be 2 or 3, got {protocol}")
        self.protocol = protocol

    @property
    def null(self) -> bytes:
        """The null bulk reply for the current protocol (hot path for GET misses)."""
        return NULL3 if self.protocol == 3 else NULL_BULK

    def encode(self, value: Any) -> bytes:
        """Encode one reply; bytes and ints skip the generic path."""
        t = type(value)
        if t is bytes:
            return b"$%d\r\n%b\r\n" % (len(value), value)
        if t is int:
            return integer(value)
        out = bytearray()
        self.encode_into(out, value)
        return bytes(out)

    def encode_into(self, out: bytearray, value: Any) -> None:
        """Append one reply (nested values recurse) to ``out``."""
        fn = self._TABLE.get(type(value))
        if fn is not None:
            fn(self, out, value)
        elif isinstance(value, CommandError):
            out += b"-%b\r\n" % _line(f"{value.prefix} {value}")
        else:
            raise TypeError(f"cannot encode {type(value).__name__} as a RESP reply")

    def _items(self, out: bytearray, head: bytes, items: Iterable[Any]) -> None:
        out += head
        table = self._TABLE
        for item in items:
            if type(item) is bytes:  # the common element: inline the bulk
                out += b"$%d\r\n%b\r\n" % (len(item), item)
            else:
                fn = table.get(type(item))
                if fn is None:
                    self.encode_into(out, item)
                else:
                    fn(self, out, item)


def _bulk(enc: ReplyEncoder, out: bytearray, v: bytes | bytearray | memoryview) -> None:
    out += b"$%d\r\n" % (v.nbytes if type(v) is memoryview else len(v))
    out += v
    out += b"\r\n"


def _double(enc: ReplyEncoder, out: bytearray, v: float) -> None:
    text = format_double(v)
    out += b",%b\r\n" % text if enc.protocol == 3 else b"$%d\r\n%b\r\n" % (len(text), text)


def _map(enc: ReplyEncoder, out: bytearray, v: dict[Any, Any]) -> None:
    head = b"%%%d\r\n" % len(v) if enc.protocol == 3 else b"*%d\r\n" % (2 * len(v))
    enc._items(out, head, chain.from_iterable(v.items()))


def _verbatim(enc: ReplyEncoder, out: bytearray, v: Verbatim) -> None:
    if enc.protocol == 3:
        out += b"=%d\r\n%b:%b\r\n" % (len(v.text) + 4, v.fmt.encode(), v.text)
    else:
        _bulk(enc, out, v.text)


def _resp3(resp3: bytes, resp2: bytes) -> Callable[[ReplyEncoder, bytearray, Any], None]:
    """A constant reply that differs between protocols (booleans, nulls)."""
    def write(enc: ReplyEncoder, out: bytearray, v: Any) -> None:
        out += resp3 if enc.protocol == 3 else resp2
    return write


def _aggregate(resp3: bytes) -> Callable[[ReplyEncoder, bytearray, Any], None]:
    """An array-like type: ``resp3`` marker (``~``, ``>``) in RESP3, ``*`` in RESP2."""
    def write(enc: ReplyEncoder, out: bytearray, v: Any) -> None:
        enc._items(out, b"%b%d\r\n" % (resp3 if enc.protocol == 3 else b"*", len(v)), v)
    return write


def _frames(enc: ReplyEncoder, out: bytearray, v: Frames) -> None:
    for item in v:
        enc.encode_into(out, item)


_true, _false = _resp3(b"#t\r\n", b":1\r\n"), _resp3(b"#f\r\n", b":0\r\n")
ReplyEncoder._TABLE = {
    bytes: _bulk, bytearray: _bulk, memoryview: _bulk,
    str: lambda e, o, v: _bulk(e, o, v.encode("utf-8", "surrogateescape")),
    int: lambda e, o, v: o.extend(b":%d\r\n" % v),
    bool: lambda e, o, v: (_true if v else _false)(e, o, v),
    type(None): _resp3(NULL3, NULL_BULK), _NullArrayType: _resp3(NULL3, NULL_ARRAY),
    float: _double, dict: _map, Verbatim: _verbatim,
    list: _aggregate(b"*"), tuple: _aggregate(b"*"), set: _aggregate(b"~"), frozenset: _aggregate(b"~"),
    Push: _aggregate(b">"), OrderedSet: _aggregate(b"~"), Frames: _frames,
    Raw: lambda e, o, v: o.extend(v),
    PairMap: lambda e, o, v: e._items(o, b"%%%d\r\n" % len(v) if e.protocol == 3 else b"*%d\r\n" % (2 * len(v)),
                                      chain.from_iterable(v)),
    SimpleString: lambda e, o, v: o.extend(_status(v)),
    ErrorReply: lambda e, o, v: o.extend(b"-%b\r\n" % _line(v.removeprefix("-"))),
    BigNumber: lambda e, o, v: o.extend(b"(%d\r\n" % v) if e.protocol == 3 else _bulk(e, o, b"%d" % v),
}
