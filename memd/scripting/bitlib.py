"""``bit``: LuaBitOp 1.0 as Redis bundles it, in Python.

Every operation works on 32-bit integers and returns a *signed* 32-bit
result (``bit.tobit(0xffffffff) == -1``). Lua numbers are doubles: LuaBitOp
converts them by adding 2^52 + 2^51 and keeping the low 32 bits, i.e. it
rounds a fractional number to the nearest integer (ties to even) and takes
it modulo 2^32; :func:`tobit` does the same.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

_MASK = 0xFFFFFFFF


class BitArgumentError(Exception):
    """A non-number argument: the Lua side turns it into ``bad argument #n to '<name>'``."""


def _u32(x: Any) -> int:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        if isinstance(x, bytes):
            try:
                x = float(x)
            except ValueError:
                raise BitArgumentError from None
        else:
            raise BitArgumentError
    if isinstance(x, float):
        if math.isnan(x) or math.isinf(x):
            return 0
        x = round(x)  # Python rounds half to even, as the 2^52+2^51 trick does
    return int(x) & _MASK


def _signed(u: int) -> int:
    return u - (1 << 32) if u & 0x80000000 else u


def tobit(x: Any) -> int:
    return _signed(_u32(x))


def bnot(x: Any) -> int:
    return _signed(~_u32(x) & _MASK)


def band(x: Any, *rest: Any) -> int:
    r = _u32(x)
    for y in rest:
        r &= _u32(y)
    return _signed(r)


def bor(x: Any, *rest: Any) -> int:
    r = _u32(x)
    for y in rest:
        r |= _u32(y)
    return _signed(r)


def bxor(x: Any, *rest: Any) -> int:
    r = _u32(x)
    for y in rest:
        r ^= _u32(y)
    return _signed(r)


def lshift(x: Any, n: Any) -> int:
    return _signed((_u32(x) << (_u32(n) & 31)) & _MASK)


def rshift(x: Any, n: Any) -> int:
    return _signed(_u32(x) >> (_u32(n) & 31))


def arshift(x: Any, n: Any) -> int:
    return _signed(_u32(x)) >> (_u32(n) & 31)


def rol(x: Any, n: Any) -> int:
    v, s = _u32(x), _u32(n) & 31
    return _signed(((v << s) | (v >> (32 - s))) & _MASK)


def ror(x: Any, n: Any) -> int:
    v, s = _u32(x), _u32(n) & 31
    return _signed(((v >> s) | (v << (32 - s))) & _MASK)


def bswap(x: Any) -> int:
    return _signed(int.from_bytes(_u32(x).to_bytes(4, "little"), "big"))


def tohex(x: Any, n: Any = 8) -> bytes:
    v = _u32(x)
    digits = tobit(n)
    upper = digits < 0
    digits = min(abs(digits), 8)
    if digits == 0:
        return b""
    v &= (1 << (4 * digits)) - 1
    return (b"%0*X" if upper else b"%0*x") % (digits, v)


FUNCTIONS: dict[str, Callable[..., Any]] = {"tobit": tobit, "bnot": bnot, "band": band, "bor": bor, "bxor": bxor, "lshift": lshift,
             "rshift": rshift, "arshift": arshift, "rol": rol, "ror": ror, "bswap": bswap, "tohex": tohex}
