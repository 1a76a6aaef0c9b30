"""Redis's float rule for INCRBYFLOAT and HINCRBYFLOAT, in one place.

Redis 7.0 reads both operands with ``string2ld`` (``strtold`` plus checks),
adds them in C ``long double`` (80-bit x87 extended precision on x86-64: a
64-bit significand) and stores ``ld2string(..., LD_STR_HUMAN)``: ``%.17Lf``
with the trailing zeros (and a bare '.') removed, "-0" written "0". A Python
float (53-bit) gives other digits, e.g. ``INCRBYFLOAT k 0.1`` then ``0.2``
is "0.3" in Redis and would be "0.30000000000000004" in doubles.

numpy.longdouble is the platform's C ``long double``, so the parse
(numpy calls ``strtold``) and the add are the very operations Redis runs on
the same hardware. What numpy does not do the way Redis does:

- which strings ``string2ld`` refuses: a leading blank, anything after the
  number, NaN, an overflow to infinity and an underflow to zero (``strtold``
  sets ERANGE, Redis refuses) — the spelling is checked by :data:`_SYNTAX`
  and the range after the parse;
- the formatting: ``%.17Lf`` is an exactly rounded decimal (ties to even, as
  glibc rounds), written here from the value's exact binary fraction with
  Python integers rather than trusting a float formatter's rounding mode.

``tests/integration/test_differential_strings.py`` compares thousands of
random operands against a real redis-server byte for byte;
``tests/unit/test_longdouble.py`` checks the parse against exact rational
rounding.
"""

from __future__ import annotations

import re
import warnings
from typing import Final

import numpy as np

from memd.errors import CommandError

__all__ = ["NOT_FLOAT", "NOT_FINITE", "LongDouble", "add", "format_human", "isfinite", "parse"]

LongDouble = np.longdouble

NOT_FLOAT: Final = "value is not a valid float"
NOT_FINITE: Final = "increment would produce NaN or Infinity"

MAX_CHARS: Final = 5 * 1024  # Redis's MAX_LONG_DOUBLE_CHARS: string2ld refuses this long or longer

# What strtold consumes, anchored at both ends (string2ld refuses a number with anything after
# it): a decimal or hexadecimal significand with an optional exponent, or inf/infinity. NaN is
# absent: strtold reads it, string2ld refuses it. Group "digits" holds the significand's digits,
# to tell an underflow (digits not all zero, value 0) from a true zero.
_SYNTAX: Final = re.compile(
    rb"[+-]?(?:"
    rb"0[xX](?P<hex>[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)(?:[pP][+-]?[0-9]+)?"
    rb"|(?P<dec>[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
    rb"|(?P<inf>(?i:inf|infinity))"
    rb")\Z")
_ZERO_DIGITS: Final = re.compile(rb"[0.]*\Z")

_BITS: Final = int(np.finfo(np.longdouble).nmant) + 1  # significand bits: 64 for x87 extended
_FRACTION_DIGITS: Final = 17  # %.17Lf
_SCALE: Final = 10**_FRACTION_DIGITS
_CHUNK: Final = 10**1000  # Python's int->str refuses > 4300 digits; a long double has up to 4933


def parse(raw: bytes) -> np.longdouble | None:
    """``raw`` as Redis's ``string2ld`` reads it, or None where Redis refuses it."""
    if not raw or len(raw) >= MAX_CHARS:
        return None
    m = _SYNTAX.match(raw)
    if m is None:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy warns on an overflow to inf: refused below anyway
        value = np.longdouble(raw.decode("ascii"))
    if np.isinf(value):
        return value if m.group("inf") else None  # an overflow: ERANGE with HUGE_VAL
    if value == 0:
        digits = m.group("hex") or m.group("dec")
        if not _ZERO_DIGITS.match(digits):
            return None  # an underflow to zero: ERANGE with FP_ZERO
    return value


def isfinite(value: np.longdouble) -> bool:
    return bool(np.isfinite(value))


def add(current: bytes | None, incr: bytes, not_float: str) -> bytes:
    """The stored text of ``current + incr``; ``current`` None counts as 0.

    Errors as Redis words them: ``not_float`` when the current value is not a
    float (INCRBYFLOAT and HINCRBYFLOAT say it differently), NOT_FLOAT for
    the increment, NOT_FINITE when the sum is infinite or NaN.
    """
    value = np.longdouble(0) if current is None else parse(current)
    if value is None:
        raise CommandError(not_float)
    step = parse(incr)
    if step is None:
        raise CommandError(NOT_FLOAT)
    with np.errstate(all="ignore"):  # inf + -inf, or an overflow: Redis's own check follows
        total = value + step
    if not np.isfinite(total):
        raise CommandError(NOT_FINITE)
    return format_human(total)


def format_human(value: np.longdouble) -> bytes:
    """``ld2string(value, LD_STR_HUMAN)`` for a finite value."""
    fraction, exponent = np.frexp(value)  # value = fraction * 2**exponent, 0.5 <= |fraction| < 1
    significand = int(np.ldexp(fraction, _BITS))  # exact: the fraction has _BITS bits
    shift = int(exponent) - _BITS  # value = significand * 2**shift exactly
    negative = significand < 0
    significand = abs(significand)
    if shift >= 0:
        scaled = (significand << shift) * _SCALE
    else:
        scaled, rest = divmod(significand * _SCALE, 1 << -shift)
        half = 1 << (-shift - 1)
        if rest > half or rest == half and scaled & 1:  # round half to even, as printf does
            scaled += 1
    whole, part = divmod(scaled, _SCALE)
    text = _decimal(whole)
    if part:
        text += "." + str(part).rjust(_FRACTION_DIGITS, "0").rstrip("0")
    if negative and text != "0":  # "-0" (or a negative rounding to it) is written "0"
        text = "-" + text
    return text.encode()


def _decimal(n: int) -> str:
    """``str(n)`` without Python's 4300-digit limit on int->str conversion."""
    if n < _CHUNK:
        return str(n)
    high, low = divmod(n, _CHUNK)
    return _decimal(high) + _decimal(low).rjust(1000, "0")
