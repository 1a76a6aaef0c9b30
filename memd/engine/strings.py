"""String writes that rewrite part of a value: APPEND, SETRANGE, SETBIT, BITFIELD, INCRBYFLOAT.

Mixed into :class:`memd.engine.keyspace.Keyspace`. Each reads the current
value, computes the whole new one and logs it with one OP_SET carrying the
key's expiry unchanged (Redis edits the string in place, so its TTL stays).
A string is stored whole, so a one-bit SETBIT on a 1 MB value logs 1 MB: no
new WAL op is worth it for the sizes agents keep in a string, and OP_SET
keeps replay mechanical.

Redis refuses a string that would grow past ``proto-max-bulk-len`` (512 MB
by default, :data:`STRING_MAX`); the commands pass memd's own setting
(``server.max_bulk_bytes``), the largest value a client could SET, and it is
checked before anything is built.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final, TypeVar

from memd import longdouble
from memd.engine.collections import M_EXPIRES_AT
from memd.engine.records import OP_SET, T_STRING
from memd.errors import CommandError

if TYPE_CHECKING:
    from memd.engine.keyspace import Keyspace

STRING_MAX: Final = 512 * 1024 * 1024  # Redis's default proto-max-bulk-len
T = TypeVar("T")


def check_string_length(size: int, grow: int, limit: int) -> None:
    """Redis's ``checkStringLength``: a string of ``size + grow`` bytes must fit the limit."""
    if size + grow > limit:
        raise CommandError("string exceeds maximum allowed size (proto-max-bulk-len)")


class StringsMixin:
    """Partial rewrites of string values; every method is one atomic step (one apply)."""

    def _string_and_expiry(self: Keyspace, key: bytes) -> tuple[bytes | None, int | None]:
        """(value, expires_at) of a live string key, (None, None) when absent; WRONGTYPE otherwise."""
        m = self.typed_meta(key, T_STRING)
        return (None, None) if m is None else (self._string_value(key), m[M_EXPIRES_AT])

    def append(self: Keyspace, key: bytes, value: bytes, limit: int = STRING_MAX) -> int:
        """APPEND; returns the new length (a missing key is created, even with an empty value)."""
        cur, exp = self._string_and_expiry(key)
        if cur is not None:
            check_string_length(len(cur), len(value), limit)
            value = cur + value
        self._apply([(OP_SET, key, value, exp)])
        return len(value)

    def setrange(self: Keyspace, key: bytes, offset: int, value: bytes, limit: int = STRING_MAX) -> int:
        """SETRANGE at a non-negative ``offset``; returns the new length.

        Writing nothing changes nothing: a missing key stays missing (0), an
        existing one answers its length, however far ``offset`` is.
        """
        cur, exp = self._string_and_expiry(key)
        if not value:
            return 0 if cur is None else len(cur)
        check_string_length(offset, len(value), limit)
        old = cur or b""
        new = old[:offset].ljust(offset, b"\0") + value + old[offset + len(value):]
        self._apply([(OP_SET, key, new, exp)])
        return len(new)

    def setbit(self: Keyspace, key: bytes, offset: int, on: int) -> int:
        """SETBIT (bit 0 is the most significant bit of byte 0); returns the bit's old value.

        The string grows with zero bytes to hold the bit. Nothing is logged
        when neither the length nor the bit changes.
        """
        cur, exp = self._string_and_expiry(key)
        byte, mask = offset >> 3, 0x80 >> (offset & 7)
        old = cur or b""
        grows = cur is None or len(old) <= byte
        was = 1 if not grows and old[byte] & mask else 0
        if grows or was != on:
            data = bytearray(old)
            if grows:
                data.extend(bytes(byte + 1 - len(data)))
            data[byte] = data[byte] | mask if on else data[byte] & ~mask
            self._apply([(OP_SET, key, bytes(data), exp)])
        return was

    def edit_string(self: Keyspace, key: bytes, size: int, edit: Callable[[bytearray], T]) -> T:
        """Run ``edit`` on the string's bytes, grown with zero bytes to ``size`` at least; return its result.

        For BITFIELD, whose operations Redis runs on the string in place: a
        missing key is created (even when no operation then writes, as in
        Redis), and the result is logged when the key is new or its bytes changed.
        """
        cur, exp = self._string_and_expiry(key)
        data = bytearray(cur or b"")
        if len(data) < size:
            data.extend(bytes(size - len(data)))
        result = edit(data)
        if cur is None or data != cur:
            self._apply([(OP_SET, key, bytes(data), exp)])
        return result

    def incrbyfloat(self: Keyspace, key: bytes, incr: bytes) -> bytes:
        """INCRBYFLOAT: the new value's text (Redis's long-double arithmetic, :mod:`memd.longdouble`)."""
        cur, exp = self._string_and_expiry(key)  # WRONGTYPE before either operand is read
        new = longdouble.add(cur, incr, longdouble.NOT_FLOAT)
        self._apply([(OP_SET, key, new, exp)])
        return new
