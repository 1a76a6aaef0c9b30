"""Redis's integer rule, in one place: what Redis 7.0's ``string2ll`` accepts.

Redis reads every integer with that one C function: a command argument
(INCRBY's increment, LRANGE's bounds, EXPIRE's time, HELLO's protocol
version), a stored string INCR adds to, a hash field HINCRBY adds to, and
the array and bulk lengths of the RESP framing. memd must accept exactly
what it accepts, or a client sees a different reply from memd than from
redis-server. The rule is stricter than Python's ``int()``:

- an optional '-' (no '+'), then ASCII digits only: no blanks, no '_',
  no "0x", no exponent, no decimal point;
- no leading zero, except "0" itself ("-0" and "01" are refused);
- 1 to 20 bytes, and within signed 64 bits: -9223372036854775808 to
  9223372036854775807.

Everything that reads a Redis integer calls :func:`parse_int64`; a second
copy of the rule would drift from this one.
``tests/integration/test_differential_int64.py`` pins the edges against a
real redis-server, command by command.
"""

from __future__ import annotations

from typing import Final

__all__ = ["INT64_MAX", "INT64_MIN", "fits_int64", "parse_int64"]

INT64_MIN: Final = -(1 << 63)
INT64_MAX: Final = (1 << 63) - 1


def parse_int64(raw: bytes) -> int | None:
    """``raw`` as Redis's ``string2ll`` reads it, or None where Redis refuses it."""
    n = len(raw)
    if n == 0 or n > 20:  # C: slen >= LONG_STR_SIZE (21) is refused before any digit is read
        return None
    digits = raw[1:] if raw[0] == 45 else raw  # 45: '-'
    # bytes.isdigit() is ASCII-only, and False for b"" (a lone '-')
    if not digits.isdigit() or (digits[0] == 48 and n != 1):  # 48: '0', valid only as "0" itself
        return None
    value = int(raw)
    return value if INT64_MIN <= value <= INT64_MAX else None


def fits_int64(value: int) -> bool:
    """Whether a computed result (INCRBY, HINCRBY) is representable, as Redis checks before adding."""
    return INT64_MIN <= value <= INT64_MAX
