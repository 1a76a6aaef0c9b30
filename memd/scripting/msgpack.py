"""``cmsgpack``: lua-cmsgpack 0.4.0 as Redis bundles it, in Python over Lua values.

Encoding follows lua_cmsgpack.c: a Lua number equal to an int64 is packed as
the smallest integer form, any other as a float32 when that is exact, else a
float64; strings as fixstr/str8/str16/str32; a table whose keys are exactly
1..n as an array, any other as a map (keys in ``next()`` order, which is
Redis's own since both run Lua 5.1's table); tables nested 16 deep as nil.
Decoding accepts what that C code accepts (no bin/ext types).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from typing import Any

from lupa import lua51  # type: ignore[import-untyped]

MAX_NESTING = 16
lua_type = lua51.lua_type
Result = tuple[Any, ...]


class _Missing(Exception):
    pass


class _BadFormat(Exception):
    pass


def _int_equivalent(n: Any, lo: int, hi: int) -> bool:
    if type(n) is int:
        return lo <= n <= hi
    return not math.isinf(n) and not math.isnan(n) and n == int(n) and lo <= int(n) <= hi


def _encode_int(n: int, out: bytearray) -> None:
    if n >= 0:
        if n <= 127:
            out.append(n)
        elif n <= 0xFF:
            out += b"\xcc" + struct.pack(">B", n)
        elif n <= 0xFFFF:
            out += b"\xcd" + struct.pack(">H", n)
        elif n <= 0xFFFFFFFF:
            out += b"\xce" + struct.pack(">I", n)
        else:
            out += b"\xcf" + struct.pack(">Q", n)
    elif n >= -32:
        out += struct.pack(">b", n)
    elif n >= -128:
        out += b"\xd0" + struct.pack(">b", n)
    elif n >= -32768:
        out += b"\xd1" + struct.pack(">h", n)
    elif n >= -2147483648:
        out += b"\xd2" + struct.pack(">i", n)
    else:
        out += b"\xd3" + struct.pack(">q", n)


def _encode_number(n: Any, out: bytearray) -> None:
    if _int_equivalent(n, -(1 << 63), (1 << 63) - 1):
        _encode_int(int(n), out)
        return
    d = float(n)
    try:
        f = struct.unpack(">f", struct.pack(">f", d))[0]
    except OverflowError:
        f = None
    if f is not None and (f == d or (math.isnan(d) and math.isnan(f))):
        out += b"\xca" + struct.pack(">f", d)
    else:
        out += b"\xcb" + struct.pack(">d", d)


def _encode_bytes(s: bytes, out: bytearray) -> None:
    n = len(s)
    if n < 32:
        out.append(0xA0 | n)
    elif n <= 0xFF:
        out += b"\xd9" + struct.pack(">B", n)
    elif n <= 0xFFFF:
        out += b"\xda" + struct.pack(">H", n)
    else:
        out += b"\xdb" + struct.pack(">I", n)
    out += s


def _is_array(table: Any) -> tuple[bool, int]:
    count = top = 0
    for k in table.keys():
        if type(k) not in (int, float) or k <= 0 or not _int_equivalent(k, -(1 << 31), (1 << 31) - 1):
            return False, 0
        top = max(top, int(k))
        count += 1
    return top == count, count


def _encode(value: Any, out: bytearray, level: int) -> None:
    t = type(value)
    if t is bytes:
        _encode_bytes(value, out)
    elif t is bool:
        out.append(0xC3 if value else 0xC2)
    elif t is int or t is float:
        _encode_number(value, out)
    elif lua_type(value) == "table" and level < MAX_NESTING:
        array, n = _is_array(value)
        if array:
            if n < 16:
                out.append(0x90 | n)
            elif n <= 0xFFFF:
                out += b"\xdc" + struct.pack(">H", n)
            else:
                out += b"\xdd" + struct.pack(">I", n)
            for j in range(1, n + 1):
                _encode(value[j], out, level + 1)
        else:
            items = list(value.items())
            n = len(items)
            if n < 16:
                out.append(0x80 | n)
            elif n <= 0xFFFF:
                out += b"\xde" + struct.pack(">H", n)
            else:
                out += b"\xdf" + struct.pack(">I", n)
            for k, v in items:
                _encode(k, out, level + 1)
                _encode(v, out, level + 1)
    else:
        out.append(0xC0)


def pack(*values: Any) -> Result:
    if not values:
        return (b"bad argument #0 to 'pack' (MessagePack pack needs input.)", 0)
    out = bytearray()
    for v in values:
        _encode(v, out, 0)
    return None, 1, bytes(out)


class _Decoder:
    def __init__(self, data: bytes, pos: int, new_table: Callable[[], Any]) -> None:
        self.data, self.pos, self.new_table = data, pos, new_table

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise _Missing
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def number(self, n: int) -> Any:
        return n if -(1 << 53) <= n <= (1 << 53) else float(n)

    def value(self) -> Any:
        c = self.take(1)[0]
        if c <= 0x7F:
            return c
        if c >= 0xE0:
            return c - 256
        if 0xA0 <= c <= 0xBF:
            return self.take(c & 0x1F)
        if 0x90 <= c <= 0x9F:
            return self.array(c & 0xF)
        if 0x80 <= c <= 0x8F:
            return self.map(c & 0xF)
        fixed = {0xCC: ">B", 0xCD: ">H", 0xCE: ">I", 0xCF: ">Q", 0xD0: ">b", 0xD1: ">h", 0xD2: ">i", 0xD3: ">q"}
        if c in fixed:
            fmt = fixed[c]
            return self.number(struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0])
        if c == 0xC0:
            return None
        if c == 0xC2:
            return False
        if c == 0xC3:
            return True
        if c == 0xCA:
            return struct.unpack(">f", self.take(4))[0]
        if c == 0xCB:
            return struct.unpack(">d", self.take(8))[0]
        if c in (0xD9, 0xDA, 0xDB):
            fmt = {0xD9: ">B", 0xDA: ">H", 0xDB: ">I"}[c]
            return self.take(struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0])
        if c in (0xDC, 0xDD):
            fmt = ">H" if c == 0xDC else ">I"
            return self.array(struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0])
        if c in (0xDE, 0xDF):
            fmt = ">H" if c == 0xDE else ">I"
            return self.map(struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0])
        raise _BadFormat

    def array(self, n: int) -> Any:
        table = self.new_table()
        for i in range(1, n + 1):
            table[i] = self.value()
        return table

    def map(self, n: int) -> Any:
        table = self.new_table()
        for _ in range(n):
            k = self.value()
            v = self.value()
            if k is not None:
                table[k] = v
        return table


def make_unpackers(new_table: Callable[[], Any]) -> dict[str, Callable[..., Result]]:
    """``unpack``, ``unpack_one`` and ``unpack_limit`` building tables with ``new_table``."""

    def unpack_full(data: Any, limit: int, offset: int) -> Result:
        if type(data) is not bytes:
            if type(data) in (int, float):
                data = (b"%.14g" % data)
            else:
                return (b"bad argument #1 to 'unpack' (string expected, got %s)" % _type_name(data), 0)
        decode_all = not limit and not offset
        if offset < 0 or limit < 0:
            return (b"Invalid request to unpack with offset of %d and limit of %d." % (offset, len(data)), 0)
        if offset > len(data):
            return (b"Start offset %d greater than input length %d." % (offset, len(data)), 0)
        if decode_all:
            limit = 1 << 62
        dec = _Decoder(data, offset, new_table)
        values: list[Any] = []
        try:
            while dec.pos < len(data) and len(values) < limit:
                values.append(dec.value())
        except _Missing:
            return (b"Missing bytes in input.", 0)
        except _BadFormat:
            return (b"Bad data format in input.", 0)
        if not decode_all:
            values.insert(0, -1 if dec.pos >= len(data) else dec.pos)
        return (None, len(values), *values)

    def unpack(data: Any = None, *_: Any) -> Result:
        return unpack_full(data, 0, 0)

    def unpack_one(data: Any = None, offset: Any = 0, *_: Any) -> Result:
        return unpack_full(data, 1, int(offset or 0))

    def unpack_limit(data: Any = None, limit: Any = None, offset: Any = 0, *_: Any) -> Result:
        if type(limit) not in (int, float):
            return (b"bad argument #2 to 'unpack_limit' (number expected, got %s)" % _type_name(limit), 0)
        return unpack_full(data, int(limit), int(offset or 0))

    return {"unpack": unpack, "unpack_one": unpack_one, "unpack_limit": unpack_limit}


def _type_name(value: Any) -> bytes:
    if value is None:
        return b"no value"
    if type(value) is bool:
        return b"boolean"
    if type(value) is bytes:
        return b"string"
    if type(value) in (int, float):
        return b"number"
    return (lua_type(value) or "userdata").encode()
