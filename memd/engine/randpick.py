"""Uniform random elements of a hash or a set without reading all of it (SPOP, SRANDMEMBER, HRANDFIELD).

A collection's live elements are spread over the store and the buffer
layers. A pick draws one *candidate slot* uniformly among the store's rows
(reached by offset, :meth:`memd.store.base.Store.elem_at`) and every
buffered sub-key of the key, then keeps it only if that slot is the one
that decides the element: a stored row is rejected when any buffer layer
holds the same sub-key, a buffered one when a newer layer holds it too or
when it marks a deletion. Each live element owns exactly one accepting slot,
so accepted picks are uniform over the live elements; a distinct pick also
rejects what it already chose (a uniform subset). A pick costs an offset
walk of the store's index, in C; reading the whole collection costs a
Python object per element (about 50x a step of that walk), so for large
counts, or a distinct count near the size, one full read wins and is used.
So is a full read when too many draws are rejected (a buffer that deleted
most of the collection).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from memd.engine.memtable import DELETED

if TYPE_CHECKING:
    from memd.engine.keyspace import Keyspace

PICKS_MAX = 32  # more wanted than this: one full read is cheaper than that many offset walks


class RandomPickMixin:
    """Random sub-keys of a live hash or set; mixed into :class:`Keyspace`."""

    def _overlays(self: Keyspace, key: bytes) -> tuple[list[dict[bytes, Any]], bool]:
        """The key's buffered element changes, newest first, and whether the store is hidden below them."""
        overlays: list[dict[bytes, Any]] = []
        for layer in self._layers():
            e = layer.entries.get(key)
            if e is not None:
                if e.elems:
                    overlays.append(e.elems)
                if e.reset:
                    return overlays, True
            if layer.flushall:
                return overlays, True
        return overlays, False

    def random_subs(self: Keyspace, key: bytes, n: int, k: int, *, distinct: bool) -> list[bytes]:
        """``k`` uniform random sub-keys of a live collection of ``n`` elements; all different when
        ``distinct`` (then at most ``n`` of them, in random order), else drawn with repetition."""
        if k <= 0 or n <= 0:
            return []
        if _read_all(n, k, distinct):
            return self._full_pick(key, n, k, distinct=distinct)
        overlays, bottom = self._overlays(key)
        row = None if bottom else self.engine.store.get_key(self.db, key)
        stored = 0 if row is None else row[3]
        buffered = [list(o) for o in overlays]
        total = stored + sum(len(b) for b in buffered)
        out: list[bytes] = []
        chosen: set[bytes] = set()
        attempts = 0
        while len(out) < k:
            attempts += 1
            if attempts > 16 * k + 64 or total <= 0:
                return self._full_pick(key, n, k, distinct=distinct)
            r = random.randrange(total)
            if r < stored:
                sub = self.engine.store.elem_at(self.db, key, r)
                if sub is None or any(sub in o for o in overlays):
                    continue  # gone, or decided by the buffer (counted there)
            else:
                r -= stored
                j = 0
                while r >= len(buffered[j]):
                    r -= len(buffered[j])
                    j += 1
                sub = buffered[j][r]
                if overlays[j][sub] is DELETED or any(sub in overlays[i] for i in range(j)):
                    continue  # a deletion, or an older write a newer layer decides
            if distinct:
                if sub in chosen:
                    continue
                chosen.add(sub)
            out.append(sub)
        return out

    def _full_pick(self: Keyspace, key: bytes, n: int, k: int, *, distinct: bool) -> list[bytes]:
        subs = list(self.elems(key))
        if distinct:
            return random.sample(subs, min(k, len(subs)))
        return random.choices(subs, k=k)

    def random_items(self: Keyspace, key: bytes, n: int, k: int, *, distinct: bool) -> list[tuple[bytes, Any]]:
        """As :meth:`random_subs`, with each element's value (HRANDFIELD WITHVALUES)."""
        if k <= 0 or n <= 0:
            return []
        if _read_all(n, k, distinct):
            items = self.elems(key)
            fields = list(items)
            picked = random.sample(fields, min(k, len(fields))) if distinct else random.choices(fields, k=k)
            return [(f, items[f]) for f in picked]
        return [(f, self.elem(key, f)) for f in self.random_subs(key, n, k, distinct=distinct)]


def _read_all(n: int, k: int, distinct: bool) -> bool:
    """Whether one full read beats ``k`` picks: many picks, or a distinct count near the size."""
    return k > PICKS_MAX or distinct and 4 * k > n


__all__ = ["PICKS_MAX", "RandomPickMixin"]
