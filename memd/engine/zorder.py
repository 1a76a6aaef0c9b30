"""Sorted-set order in the buffer: score ranges as bounds, and one layer's members in order.

A sorted set's members are ordered by ``(score, member)``, exactly Redis's
order. A range is half-open, ``[lo, hi)``, with bounds that compare against
those pairs: ``(score,)`` sorts before every member of that score, a pair
``(score, member)`` is that very element, and None is unbounded. Every
score interval Redis accepts maps onto that form exactly, because an open
end is the closed end one double further (``math.nextafter``): ``score > 1``
is ``score >= nextafter(1, inf)``. The store reads the same bounds through
its score index (:meth:`memd.store.base.Store.zset_range`).

One memtable layer's members in order: small entries are sorted on demand
(cheaper than keeping a structure for the few members an agent's timeline
changes between flushes); an entry with :data:`ORDER_MIN` changes or more
gets a ``SortedList`` that :meth:`memd.engine.memtable.Memtable.apply` then
keeps in step, so a big buffered zset (a bulk load not yet flushed) is
bisected, never re-sorted per read.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator, Sequence
from itertools import islice
from typing import Any

from sortedcontainers import SortedList

from memd.engine.memtable import DELETED, Entry
from memd.store.base import ZBound

ORDER_MIN = 64  # an entry with this many element changes keeps its order (a SortedList)
_INF = math.inf

Item = tuple[float, bytes]  # (score, member): what sorts in Redis's order


def key_range(lo: float, lo_open: bool, hi: float, hi_open: bool) -> tuple[ZBound, ZBound] | None:
    """A score interval (Redis's ``zrangespec``) as ``[lo, hi)`` bounds; None when it is empty."""
    if lo_open:
        if lo == _INF:
            return None
        lo = math.nextafter(lo, _INF)
    if hi_open:
        if hi == -_INF:
            return None
        hi = math.nextafter(hi, -_INF)
    if lo > hi:
        return None
    return (None if lo == -_INF else (lo,)), (None if hi == _INF else (math.nextafter(hi, _INF),))


def after(item: Item) -> tuple[float, bytes]:
    """The lowest bound above ``item``: its member followed by a NUL is the next byte string."""
    return item[0], item[1] + b"\0"


def inside(item: Item, lo: ZBound, hi: ZBound) -> bool:
    return (lo is None or item >= lo) and (hi is None or item < hi)


def ordered(entry: Entry) -> Sequence[Item]:
    """The entry's live members as sorted (score, member) pairs (see the module docstring)."""
    if entry.order is not None:
        return entry.order  # type: ignore[no-any-return]
    elems = entry.elems or {}
    live = [(v, sub) for sub, v in elems.items() if v is not DELETED]
    if len(elems) < ORDER_MIN:
        live.sort()
        return live
    entry.order = SortedList(live)
    return entry.order  # type: ignore[no-any-return]


def _positions(seq: Sequence[Item], lo: ZBound, hi: ZBound) -> tuple[int, int]:
    if isinstance(seq, SortedList):
        a = 0 if lo is None else seq.bisect_left(lo)
        b = len(seq) if hi is None else seq.bisect_left(hi)
    else:
        a = 0 if lo is None else bisect.bisect_left(seq, lo)
        b = len(seq) if hi is None else bisect.bisect_left(seq, hi)
    return a, max(a, b)


def count_in(seq: Sequence[Item], lo: ZBound, hi: ZBound) -> int:
    a, b = _positions(seq, lo, hi)
    return b - a


def slice_of(seq: Sequence[Item], lo: ZBound, hi: ZBound, rev: bool) -> Iterator[Item]:
    """The members of ``seq`` in ``[lo, hi)``, ascending (descending with ``rev``), lazily."""
    a, b = _positions(seq, lo, hi)
    if isinstance(seq, SortedList):
        it: Iterator[Any] = seq.islice(a, b, reverse=rev)
        return it
    if rev:
        return (seq[i] for i in range(b - 1, a - 1, -1))
    return islice(seq, a, b)


__all__ = ["ORDER_MIN", "Item", "after", "count_in", "inside", "key_range", "ordered", "slice_of"]
