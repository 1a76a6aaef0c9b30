"""``struct``: Roberto Ierusalimschy's struct library (as Redis bundles it), in Python.

Formats: ``>`` big endian, ``<`` little, ``=`` native (little here), ``!n``
alignment, ``x`` a pad byte, ``b``/``B`` char, ``h``/``H`` short, ``l``/``L``
long (8 bytes), ``T`` size_t, ``i``/``I`` + optional size (default 4),
``c`` + size (``c0``: the whole string when packing; the preceding number's
value when unpacking), ``s`` zero-terminated string, ``f`` float, ``d``
double, space ignored. ``unpack`` returns the values then the position after
them.
"""

from __future__ import annotations

import struct as pystruct
from typing import Any

Result = tuple[Any, ...]
_MAXINTSIZE = 32
_NATIVE = {"b": 1, "B": 1, "h": 2, "H": 2, "l": 8, "L": 8, "T": 8, "i": 4, "I": 4, "f": 4, "d": 8, "x": 1}


class StructError(Exception):
    pass


def _items(fmt: bytes) -> list[tuple[str, int]]:
    """(option, size) pairs, endianness and alignment as ('>' / '<' / '!', value)."""
    out: list[tuple[str, int]] = []
    i = 0
    text = fmt.decode("latin-1")
    while i < len(text):
        opt = text[i]
        i += 1
        j = i
        while j < len(text) and text[j].isdigit():
            j += 1
        num = int(text[i:j]) if j > i else None
        if opt in "iIc!" and num is not None:
            i = j
        if opt == " ":
            continue
        if opt in "<>=":
            out.append((">" if opt == ">" else "<", 0))
        elif opt == "!":
            out.append(("!", num if num is not None else 8))
        elif opt in "iI":
            size = num if num is not None else 4
            if size > _MAXINTSIZE or size < 1:
                raise StructError(f"integral size {size} is larger than limit of {_MAXINTSIZE}")
            out.append((opt, size))
        elif opt == "c":
            out.append(("c", num if num is not None else 1))
        elif opt in _NATIVE or opt == "s":
            out.append((opt, _NATIVE.get(opt, 0)))
        else:
            raise StructError(f"invalid format option '{opt}'")
    return out


def _align(pos: int, size: int, maxalign: int, opt: str) -> int:
    if opt in "cs" or size <= 1:
        return 0
    a = min(size, maxalign)
    if a & (a - 1):
        raise StructError("alignment must be power of 2")
    return (-pos) % a


def _number(v: Any, n: int, fn: str) -> float | int:
    if type(v) in (int, float) and type(v) is not bool:
        return v  # type: ignore[no-any-return]
    if type(v) is bytes:
        try:
            return float(v)
        except ValueError:
            pass
    raise StructError(f"bad argument #{n} to '{fn}' (number expected, got {_tname(v)})")


def _tname(v: Any) -> str:
    return {type(None): "no value", bool: "boolean", bytes: "string", int: "number", float: "number"}.get(
        type(v), "table")


def pack(fmt: Any = None, *args: Any) -> Result:
    try:
        if type(fmt) is not bytes:
            raise StructError(f"bad argument #1 to 'pack' (string expected, got {_tname(fmt)})")
        out = bytearray()
        little, maxalign, argi = True, 1, 0
        for opt, size in _items(fmt):
            if opt in "<>":
                little = opt == "<"
                continue
            if opt == "!":
                maxalign = size
                continue
            out += b"\0" * _align(len(out), size, maxalign, opt)
            if opt == "x":
                out += b"\0"
                continue
            value = args[argi] if argi < len(args) else None
            argi += 1
            if opt in "bBhHlLTiI":
                n = _number(value, argi + 1, "pack")
                iv = int(n) & ((1 << (8 * size)) - 1)
                out += iv.to_bytes(size, "little" if little else "big")
            elif opt in "fd":
                n = _number(value, argi + 1, "pack")
                out += pystruct.pack(("<" if little else ">") + opt, float(n))
            elif opt == "c":
                s = value if type(value) is bytes else _string(value, argi + 1)
                if size == 0:
                    size = len(s)
                if len(s) < size:
                    raise StructError(f"bad argument #{argi + 1} to 'pack' (string too short)")
                out += s[:size]
            elif opt == "s":
                s = value if type(value) is bytes else _string(value, argi + 1)
                if b"\0" in s:
                    raise StructError(f"bad argument #{argi + 1} to 'pack' (string contains zeros)")
                out += s + b"\0"
        return None, 1, bytes(out)
    except StructError as exc:
        return (str(exc).encode(),)


def _string(value: Any, n: int) -> bytes:
    if type(value) in (int, float) and type(value) is not bool:
        return b"%.14g" % value
    raise StructError(f"bad argument #{n} to 'pack' (string expected, got {_tname(value)})")


def unpack(fmt: Any = None, data: Any = None, start: Any = 1, *_: Any) -> Result:
    try:
        if type(fmt) is not bytes:
            raise StructError(f"bad argument #1 to 'unpack' (string expected, got {_tname(fmt)})")
        if type(data) is not bytes:
            raise StructError(f"bad argument #2 to 'unpack' (string expected, got {_tname(data)})")
        pos = int(_number(start, 3, "unpack")) - 1
        if pos < 0 or pos > len(data):
            raise StructError("bad argument #3 to 'unpack' (offset out of bounds)")
        values: list[Any] = []
        little, maxalign = True, 1
        for opt, size in _items(fmt):
            if opt in "<>":
                little = opt == "<"
                continue
            if opt == "!":
                maxalign = size
                continue
            pos += _align(pos, size, maxalign, opt)
            if opt != "s" and pos + size > len(data):
                raise StructError("bad argument #2 to 'unpack' (data string too short)")
            if opt == "x":
                pos += 1
            elif opt in "bBhHlLTiI":
                v = int.from_bytes(data[pos:pos + size], "little" if little else "big", signed=opt in "bhli")
                values.append(v if -(1 << 53) <= v <= (1 << 53) else float(v))
                pos += size
            elif opt in "fd":
                values.append(pystruct.unpack(("<" if little else ">") + opt, data[pos:pos + size])[0])
                pos += size
            elif opt == "c":
                if size == 0:
                    if not values or type(values[-1]) not in (int, float):
                        raise StructError("format 'c0' needs a previous size")
                    size = int(values.pop())
                    if pos + size > len(data):
                        raise StructError("bad argument #2 to 'unpack' (data string too short)")
                values.append(data[pos:pos + size])
                pos += size
            elif opt == "s":
                end = data.find(b"\0", pos)
                if end < 0:
                    raise StructError("unfinished string in data")
                values.append(data[pos:end])
                pos = end + 1
        values.append(pos + 1)
        return (None, len(values), *values)
    except StructError as exc:
        return (str(exc).encode(),)


def size(fmt: Any = None, *_: Any) -> Result:
    try:
        if type(fmt) is not bytes:
            raise StructError(f"bad argument #1 to 'size' (string expected, got {_tname(fmt)})")
        pos, maxalign = 0, 1
        for opt, sz in _items(fmt):
            if opt in "<>":
                continue
            if opt == "!":
                maxalign = sz
                continue
            if opt == "s" or (opt == "c" and sz == 0):
                raise StructError("options 'c0' - 's' have undefined sizes")
            pos += _align(pos, sz, maxalign, opt) + sz
        return None, 1, pos
    except StructError as exc:
        return (str(exc).encode(),)


FUNCTIONS = {"pack": pack, "unpack": unpack, "size": size}
