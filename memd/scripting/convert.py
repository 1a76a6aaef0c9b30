"""Redis's type conversions between command replies and Lua values, both ways (script_lua.c).

Reply -> Lua (what ``redis.call`` returns), by the script's protocol
(``redis.setresp``): integer -> number; bulk -> string; RESP2 null (bulk or
array) -> false; array -> table; status -> ``{ok=...}``; error ->
``{err=...}``; and under RESP3: null -> nil, boolean -> boolean, double ->
``{double=n}``, map -> ``{map={...}}``, set -> ``{set={m=true...}}``, big
number -> ``{big_number=s}``, verbatim -> ``{verbatim_string={format, string}}``.
memd's handlers return Python values (see :mod:`memd.resp`): each is
converted as its RESP encoding would be parsed by Redis.

Lua -> reply (what a script returns): string -> bulk; number -> integer,
truncated toward zero as C's ``(long long)`` cast does; boolean -> RESP2
``1``/null, RESP3 boolean; a table with an ``err`` string -> error; ``ok``
string -> status; ``double`` number, ``big_number`` string,
``verbatim_string``, ``map``, ``set`` -> those RESP3 types; any other table
-> array of its elements 1, 2, ... up to the first nil; anything else -> null.
"""

from __future__ import annotations

import math
from typing import Any

from lupa import lua51  # type: ignore[import-untyped]

from memd.errors import CommandError
from memd.resp import BigNumber, ErrorReply, NullArray, OrderedSet, SimpleString, Verbatim, format_double

lua_type = lua51.lua_type
LLONG_MIN = -(1 << 63)


def error_text(exc: CommandError) -> bytes:
    """The ``err`` string of a command's error, as Redis's luaPushErrorBuff builds it."""
    return f"{exc.prefix} {exc}".strip("\r\n").encode("utf-8", "surrogateescape")


def redis_error_text(raw: bytes) -> bytes:
    """``redis.error_reply``'s normalisation: a leading '-' is dropped; a message without a code gets ERR
    (only when it has no '-' at all: "-X" keeps code X), trailing CR/LF trimmed."""
    if raw.startswith(b"-"):
        code, sep, msg = raw[1:].partition(b" ")
        if not sep:
            code, msg = b"ERR", raw[1:]
    else:
        code, msg = b"ERR", raw
    return code + b" " + msg.strip(b"\r\n")


class ToLua:
    """Builds Lua values from command replies for one Lua runtime."""

    def __init__(self, lua: Any) -> None:
        self.lua = lua
        self.table_from = lua.table_from

    def error_table(self, text: bytes) -> Any:
        return self.table_from({b"err": text})

    def convert(self, value: Any, resp: int) -> Any:
        t = type(value)
        if t is bytes or t is int:
            return value
        if t is SimpleString:
            return self.table_from({b"ok": value.encode("utf-8", "surrogateescape")})
        if value is None or value is NullArray:
            return None if resp == 3 else False
        if t is bool:
            return value if resp == 3 else int(value)
        if t is bytearray or t is memoryview:
            return bytes(value)
        if t is str:
            return value.encode("utf-8", "surrogateescape")
        if t is float:
            if resp == 3:
                return self.table_from({b"double": value})
            return format_double(value)
        if t is BigNumber:
            if resp == 3:
                return self.table_from({b"big_number": b"%d" % value})
            return b"%d" % value
        if t is Verbatim:
            if resp == 3:
                inner = self.table_from({b"string": value.text, b"format": value.fmt.encode()})
                return self.table_from({b"verbatim_string": inner})
            return value.text
        if t is ErrorReply:
            return self.error_table(redis_error_text(b"-" + value.removeprefix("-").encode()))
        if isinstance(value, CommandError):
            return self.error_table(error_text(value))
        if t is dict:
            if resp == 3:
                inner = self.lua.table()
                for k, v in value.items():
                    inner[self.convert(k, resp)] = self.convert(v, resp)
                return self.table_from({b"map": inner})
            flat: list[Any] = []
            for k, v in value.items():
                flat += (k, v)
            return self._array(flat, resp)
        if t is set or t is frozenset or t is OrderedSet:
            if resp == 3:
                inner = self.lua.table()
                for k in value:
                    inner[self.convert(k, resp)] = True
                return self.table_from({b"set": inner})
            return self._array(list(value), resp)
        if isinstance(value, (list, tuple)):
            return self._array(value, resp)
        raise TypeError(f"cannot convert {t.__name__} to a Lua value")

    def _array(self, items: Any, resp: int) -> Any:
        table = self.lua.table()
        for i, item in enumerate(items, 1):
            table[i] = self.convert(item, resp)  # a nil (RESP3 null) leaves a hole, as in Redis
        return table


def lua_number_reply(n: int | float) -> int:
    """A Lua number as an integer reply: C's (long long) cast (x86 gives LLONG_MIN for NaN/inf/overflow)."""
    if type(n) is int:
        return n if LLONG_MIN <= n < -LLONG_MIN else LLONG_MIN
    if math.isnan(n) or math.isinf(n):
        return LLONG_MIN
    v = int(n)
    return v if LLONG_MIN <= v < -LLONG_MIN else LLONG_MIN


def error_reply(text: bytes) -> Any:
    """An error reply whose whole line is ``text`` (code first), as Redis sends ``-<text>``."""
    s = text.decode("utf-8", "surrogateescape")
    code, sep, msg = s.partition(" ")
    if sep and code:
        return CommandError(msg, prefix=code)
    return ErrorReply(s)


def from_lua(value: Any, resp: int, rawget: Any) -> Any:
    """The reply for a script's return value (``resp``: the script's protocol, for booleans).

    Fields and elements are read with Lua's ``rawget`` (passed in), as Redis reads them: a
    metatable's ``__index`` is never called.
    """
    t = type(value)
    if t is bytes:
        return value
    if t is int or t is float:
        return lua_number_reply(value)
    if t is bool:
        if resp == 3:
            return value
        return 1 if value else None
    if lua_type(value) != "table":
        return None
    err = rawget(value, b"err")
    if type(err) is bytes:
        return error_reply(err)
    ok = rawget(value, b"ok")
    if type(ok) is bytes:
        return SimpleString(ok.replace(b"\r", b" ").replace(b"\n", b" ").decode("utf-8", "surrogateescape"))
    double = rawget(value, b"double")
    if type(double) in (int, float):
        return float(double)
    big = rawget(value, b"big_number")
    if type(big) is bytes:
        big = big.replace(b"\r", b" ").replace(b"\n", b" ")
        try:
            return BigNumber(int(big))
        except ValueError:
            return big
    verbatim = rawget(value, b"verbatim_string")
    if lua_type(verbatim) == "table":
        fmt, text = rawget(verbatim, b"format"), rawget(verbatim, b"string")
        if type(fmt) is bytes and type(text) is bytes:
            return Verbatim(text, fmt[:3].decode("latin-1").ljust(3))
    mapping = rawget(value, b"map")
    if lua_type(mapping) == "table":
        out: dict[Any, Any] = {}
        for k, v in mapping.items():
            key = from_lua(k, resp, rawget)
            out[tuple(key) if isinstance(key, list) else key] = from_lua(v, resp, rawget)
        return out
    members = rawget(value, b"set")
    if lua_type(members) == "table":
        return OrderedSet(from_lua(k, resp, rawget) for k in members.keys())
    items = []
    i = 1
    while True:
        item = rawget(value, i)
        if item is None:
            break
        items.append(from_lua(item, resp, rawget))
        i += 1
    return items
