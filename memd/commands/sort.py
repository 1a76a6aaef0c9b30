"""SORT and SORT_RO: BY (with nosort), GET (``#`` and ``hash->field``), LIMIT, ASC/DESC, ALPHA, STORE.

Redis 7.0 semantics (``sort.c``), including its quirks:

- a BY pattern without ``*`` (``nosort``) skips sorting: lists and sorted sets
  come in their own order (reversed by DESC, LIMIT taken from that order),
  sets in their set order; with STORE a set is sorted ALPHA instead;
- numeric sorting reads each weight with ``strtod`` (leading blanks, hex and
  "inf" accepted; the empty string is 0; trailing text, NaN, overflow and
  inexact underflow are "One or more scores can't be converted into
  double"); a missing BY key weighs 0; equal weights are ordered by the
  element's bytes. (Redis reads ``errno`` without clearing it first, so an
  exact value such as "0x1p-1074" fails there after an earlier out-of-range
  one; memd keeps no such stale state and accepts it.)
- ALPHA compares bytes (Redis's ``strcoll`` under the C / C.UTF-8 locales it
  runs with, which stops at a NUL byte; binary with STORE); with BY, a missing
  weight sorts first, and equal weights keep the input order (a stable sort,
  as glibc's ``qsort`` is);
- GET of a pattern without ``*``, of a missing key or of a key of another
  type is nil (an empty string in a STORE result).

A set's own order (nosort without STORE, ties between equal ALPHA weights)
is unspecified in Redis (its hash table's order; ascending numbers for an
intset): memd uses ascending numbers for what Redis keeps as an intset and
byte order otherwise.

SORT is a write command (STORE), as in Redis; SORT_RO refuses STORE as a
syntax error.
"""

from __future__ import annotations

import sys
from typing import Any

from memd.commands import Context, command, parse_int
from memd.commands.strings import SYNTAX
from memd.commands.zsets import _strtod
from memd.engine.keyops import string_is_int
from memd.engine.keyspace import Keyspace
from memd.engine.records import T_LIST, T_SET, T_ZSET
from memd.errors import CommandError

NOT_INT = "value is not an integer or out of range"
NOT_DOUBLE = "One or more scores can't be converted into double"
_BLANKS = b" \t\n\v\f\r"
_DBL_MIN = sys.float_info.min
_INTSET_MAX = 512


def sort_weight(raw: bytes) -> float | None:
    """A weight as SORT reads it (``strtod`` then Redis's checks); None when it is not a number."""
    text = raw.split(b"\0", 1)[0]  # strtod reads a C string
    if not text:
        return 0.0  # nothing converted, and what follows is the terminating NUL: accepted
    body = text.lstrip(_BLANKS)
    if not body:
        return None
    parsed = _strtod(body)
    if parsed is None or parsed[1]:
        return None
    value = parsed[0]
    if 0.0 < abs(value) < _DBL_MIN and not body.lstrip(b"+-")[:2].lower() == b"0x":
        return None  # glibc sets ERANGE for an inexact (decimal) subnormal result
    return value


def lookup_pattern(ks: Keyspace, pattern: bytes, subst: bytes) -> bytes | None:
    """Redis's ``lookupKeyByPattern``: ``#``, ``prefix*suffix`` (a string key) or ``prefix*suffix->field``."""
    c_pattern = pattern.split(b"\0", 1)[0]  # strchr / strstr stop at a NUL
    if c_pattern[:1] == b"#" and len(c_pattern) == 1:
        return subst
    star = c_pattern.find(b"*")
    if star < 0:
        return None
    arrow = c_pattern.find(b"->", star + 1)
    if arrow >= 0 and arrow + 2 < len(c_pattern):
        key = pattern[:star] + subst + pattern[star + 1:arrow]
        return ks.hash_field_or_none(key, pattern[arrow + 2:])
    return ks.string_or_none(pattern[:star] + subst + pattern[star + 1:])


def _set_order(items: list[bytes]) -> list[bytes]:
    """A set's own order: ascending numbers for an intset-sized set of integers, else byte order."""
    if len(items) <= _INTSET_MAX and all(string_is_int(x) for x in items):
        return sorted(items, key=int)
    return items


def _sort(ctx: Context, args: list[bytes], readonly: bool) -> object:
    desc = alpha = dontsort = False
    limit_start, limit_count = 0, -1
    sortby: bytes | None = None
    store: bytes | None = None
    gets: list[bytes] = []
    j, n = 1, len(args)
    while j < n:
        left = n - j - 1
        opt = args[j].lower()
        if opt == b"asc":
            desc = False
        elif opt == b"desc":
            desc = True
        elif opt == b"alpha":
            alpha = True
        elif opt == b"limit" and left >= 2:
            limit_start = parse_int(args[j + 1], NOT_INT)
            limit_count = parse_int(args[j + 2], NOT_INT)
            j += 2
        elif not readonly and opt == b"store" and left >= 1:
            store = args[j + 1]
            j += 1
        elif opt == b"by" and left >= 1:
            sortby = args[j + 1]
            if b"*" not in sortby.split(b"\0", 1)[0]:
                dontsort = True  # (a later BY with a '*' does not undo it, as in Redis)
            j += 1
        elif opt == b"get" and left >= 1:
            gets.append(args[j + 1])
            j += 1
        else:
            raise CommandError(SYNTAX)
        j += 1

    ks = ctx.keyspace
    type_, items = ks.sort_source(args[0])
    if type_ == T_SET:
        items = _set_order(items)
    if dontsort and type_ == T_SET and store is not None:
        dontsort, alpha, sortby = False, True, None  # a stored result must not depend on set order

    vectorlen = len(items)
    start = min(max(limit_start, 0), vectorlen)
    limit_count = min(max(limit_count, -1), vectorlen)
    end = vectorlen - 1 if limit_count < 0 else start + limit_count - 1
    if start >= vectorlen:
        start, end = vectorlen - 1, vectorlen - 2
    end = min(end, vectorlen - 1)

    if dontsort:
        if desc and type_ in (T_LIST, T_ZSET):
            items = items[::-1]
    else:
        items = _sorted(ks, items, sortby, alpha=alpha, desc=desc, binary=store is not None)
    chosen = items[start:end + 1] if end >= start else []

    if not gets:
        out: list[Any] = list(chosen)
    else:
        out = [lookup_pattern(ks, pattern, elem) for elem in chosen for pattern in gets]
    if store is None:
        return out
    ks.store_list(store, [b"" if v is None else v for v in out])
    return len(out)


def _sorted(ks: Keyspace, items: list[bytes], sortby: bytes | None, *, alpha: bool, desc: bool,
            binary: bool) -> list[bytes]:
    """Sort SORT's elements (see the module docstring for the comparison rules)."""
    if alpha and sortby is None:
        if binary:
            return sorted(items, reverse=desc)
        return sorted(items, key=lambda x: x.split(b"\0", 1)[0], reverse=desc)
    weights: list[Any] = []
    failed = False
    for elem in items:
        byval = elem if sortby is None else lookup_pattern(ks, sortby, elem)
        if alpha:
            if byval is None:
                weights.append((0, b""))
            else:
                weights.append((1, byval if binary else byval.split(b"\0", 1)[0]))
        elif byval is None:
            weights.append((0.0, elem))
        else:
            score = sort_weight(byval)
            if score is None:
                failed = True
                score = 0.0
            weights.append((score, elem))
    if failed:
        raise CommandError(NOT_DOUBLE)
    order = sorted(range(len(items)), key=weights.__getitem__, reverse=desc)
    return [items[i] for i in order]


@command("sort", -2, write=True)
def sort(ctx: Context, args: list[bytes]) -> object:
    return _sort(ctx, args, readonly=False)


@command("sort_ro", -2)
def sort_ro(ctx: Context, args: list[bytes]) -> object:
    return _sort(ctx, args, readonly=True)
