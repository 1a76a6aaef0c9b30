"""Element scans for HSCAN and SSCAN (and any keyed collection): resumable pages in sub-key order.

Redis's SCAN family promises that an element present for the whole
iteration is returned at least once. Redis gets that from its reverse-binary
cursor over hash buckets; memd gets it the way its keyspace SCAN does
(:meth:`memd.engine.keyspace.Keyspace.scan`): elements are visited in byte
order of their sub-key and a page resumes *after* the last sub-key it
considered, so a flush, an insertion or a deletion between pages can move
nothing across the cursor. An element is returned exactly once unless the
cursor had to be cut (see :mod:`memd.commands.elemscan`).

A page costs one bounded range read of the store (``count`` rows after the
cursor) plus, for each buffer layer holding changes to the key, a binary
search in that layer's buffered sub-keys in sorted order. Sorting them costs
O(m log m) for m buffered elements of the key, so the sorted list is kept
between pages (:class:`_SortedSubs`) while the layer takes no write: a frozen
layer sorts once, the active one once per page only while writes arrive
between pages.
"""

from __future__ import annotations

import bisect
import itertools
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from memd.engine.memtable import DELETED, Memtable

if TYPE_CHECKING:
    from memd.engine.keyspace import Keyspace

_SMALL = 256  # fewer buffered elements than this are sorted on each page: cheaper than caching


class _SortedSubs:
    """The sorted sub-keys of a few (layer, key) overlays, valid while their layer takes no write.

    A layer is told apart by ``id`` together with its first LSN (unique to a
    layer that holds any record) and its write count (which grows on every
    applied op), so a list is never served for a layer that changed or for
    a new layer at a recycled address; no reference to a layer is kept.
    """

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self._lists: OrderedDict[bytes, tuple[tuple[int, int, int], list[bytes]]] = OrderedDict()

    def get(self, layer: Memtable, key: bytes, overlay: dict[bytes, Any]) -> list[bytes]:
        stamp = (id(layer), layer.first_lsn, layer.writes)
        hit = self._lists.get(key)
        if hit is not None and hit[0] == stamp:
            self._lists.move_to_end(key)
            return hit[1]
        subs = sorted(overlay)
        self._lists[key] = (stamp, subs)
        self._lists.move_to_end(key)
        while len(self._lists) > self.size:
            self._lists.popitem(last=False)
        return subs


class ElemScanMixin:
    """Paged, ordered reads of a collection's elements; mixed into :class:`Keyspace`."""

    def _sorted_subs(self) -> _SortedSubs:
        cache: _SortedSubs | None = getattr(self, "_elem_scan_cache", None)
        if cache is None:
            cache = _SortedSubs()
            self._elem_scan_cache = cache
        return cache

    def scan_elems(self: Keyspace, key: bytes, after: bytes | None, count: int
                   ) -> tuple[list[tuple[bytes, Any]], bytes | None]:
        """Live ``(sub, value)`` pairs after ``after`` in sub order, about ``count`` candidates.

        Returns (pairs, resume point or None when the scan is done). The
        caller has checked that ``key`` is a live collection of the right type.
        """
        count = max(1, count)
        overlays: list[dict[bytes, Any]] = []  # newest first
        layers: list[Memtable] = []  # the memtable of each overlay: its write count stamps a cached sort
        bottom = False
        for layer, table in zip(self._layers(), self.engine.layers()):  # (both newest first)
            e = layer.entries.get(key)
            if e is not None:
                if e.elems:
                    overlays.append(e.elems)
                    layers.append(table)
                if e.reset:
                    bottom = True
                    break
            if layer.flushall:
                bottom = True
                break
        stored: dict[bytes, Any] = {}
        limit: bytes | None = None
        if not bottom:
            rows = self.engine.store.iter_elems(self.db, key, None if after is None else after + b"\x00")
            try:
                stored = dict(itertools.islice(rows, count))
            finally:
                rows.close()  # type: ignore[attr-defined]
            if len(stored) == count:
                limit = max(stored)  # the store may hold more after this: this page stops here
        candidates = set(stored)
        more_in_memory = False
        for layer, overlay in zip(layers, overlays):
            if len(overlay) < _SMALL:
                subs = sorted(s for s in overlay
                              if (after is None or s > after) and (limit is None or s <= limit))
            else:
                ordered_subs = self._sorted_subs().get(layer, key, overlay)
                i = 0 if after is None else bisect.bisect_right(ordered_subs, after)
                j = len(ordered_subs) if limit is None else bisect.bisect_right(ordered_subs, limit)
                subs = ordered_subs[i:min(j, i + count + 1)]
            if len(subs) > count:  # keep each page bounded even when the buffer holds many elements
                subs = subs[:count]
                more_in_memory = True
            candidates.update(subs)
        ordered = sorted(candidates)
        if more_in_memory or limit is not None:
            ordered = ordered[:count]
        if not ordered:
            return [], None
        done = limit is None and not more_in_memory and len(ordered) == len(candidates)
        # every candidate is at or below the page's end, where the store rows read are complete
        live: list[tuple[bytes, Any]] = []
        for sub in ordered:
            for overlay in overlays:
                v = overlay.get(sub, overlay)
                if v is not overlay:
                    break
            else:
                v = stored.get(sub, DELETED)
            if v is not DELETED:
                live.append((sub, v))
        return live, (None if done else ordered[-1])


__all__ = ["ElemScanMixin"]
