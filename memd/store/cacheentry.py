"""A read cache entry and what it costs in Python's memory (see :mod:`memd.store.readcache`).

The cost is computed per object with ``sys.getsizeof`` (key tuple and bytes, row tuple, value,
ints outside the small-int cache, element dicts) plus the entry object and its share of the
cache's map and queue slots; ``tests/unit/test_readcache.py`` checks the sum against tracemalloc.
"""

from __future__ import annotations

import sys
from typing import Any

ELEMS_MAX = 128  # a collection with more elements never has them cached whole (nor more than this many)
ABSENT: Any = object()  # an element known not to be stored (partial element caches only)
MISSING: Any = object()  # an element the cache knows nothing of
SMALL, MAIN = 0, 1  # the S3-FIFO queue an entry is in


class Entry:
    """One cached row: a key's (with, for a small collection, some or all of its elements) or a memory's."""

    __slots__ = ("key", "row", "elems", "complete", "freq", "cost", "kcost", "queue", "live")

    def __init__(self, key: tuple[Any, Any], row: tuple[Any, ...], queue: int) -> None:
        self.key = key
        self.row = row
        self.elems: dict[bytes, Any] | None = None  # sub -> value (score in a zset), or ABSENT
        self.complete = False  # elems holds every element the store holds
        self.freq = 0
        self.cost = 0
        self.kcost = 0  # the part of ``cost`` that never changes: the entry's own and its key's
        self.queue = queue
        self.live = True


# ---- what an entry costs ---------------------------------------------------------------------

_getsizeof = sys.getsizeof
# the entry object, its map slot (a dict entry of 3 words, at dict's 2/3 load plus its index byte-array),
# its queue slot (a deque holds 8-byte pointers in 64-slot blocks)
ENTRY_OVERHEAD = _getsizeof(Entry((0, b""), (), 0)) + 3 * 8 * 3 // 2 + 8 + 8
_ROW6 = _getsizeof((0, 0, 0, 0, 0, 0))  # a key's row tuple
GHOST_COST = 104  # an OrderedDict item (dict slot + linked node) and its int hash (measured with tracemalloc)


def _obj_cost(x: Any) -> int:
    """The bytes an item of a row adds: None and small ints are shared singletons."""
    if x is None or x.__class__ is int and -5 <= x <= 256:
        return 0
    return _getsizeof(x)


def _row_cost(row: tuple[Any, ...]) -> int:
    n = _getsizeof(row)
    for x in row:  # (_obj_cost inlined: the flush's thread runs this for every row it updates)
        if x is None or x.__class__ is int and -5 <= x <= 256:
            continue
        n += _getsizeof(x)
    return n


def _elems_cost(elems: dict[bytes, Any]) -> int:
    n = _getsizeof(elems)
    for sub, v in elems.items():
        n += _getsizeof(sub) + (0 if v is ABSENT else _obj_cost(v))
    return n


def _key_cost(key: tuple[Any, Any]) -> int:
    return ENTRY_OVERHEAD + _getsizeof(key) + _obj_cost(key[0]) + _getsizeof(key[1])


def _cost(e: Entry) -> int:
    n = e.kcost + _row_cost(e.row)
    if e.elems is not None:
        n += _elems_cost(e.elems)
    return n
