"""What a committed flush does to the read cache (see :mod:`memd.store.readcache`): a mixin of ReadCache.

Rows come as :class:`memd.store.rows.FlushRows` (store-agnostic), in the order the store wrote
them; they are applied on the event loop in steps of :data:`CHUNK` rows, each under the cache's lock
with its epoch bumped.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from memd.engine.records import T_STRING
from memd.store.cacheentry import ABSENT, ELEMS_MAX, SMALL, Entry, _getsizeof, _ROW6, _row_cost
from memd.store.rows import FlushRows

SMALL_SHARE = 0.1  # of max_bytes: the small FIFO new entries go through (and a flush's fill budget)
CHUNK = 1024  # flush rows applied per hold of the lock


class FlushUpdates:
    """ReadCache's writer side for flushes; the state and the helpers it uses are ReadCache's."""

    map: dict[tuple[Any, Any], Entry]
    lock: threading.Lock
    epoch: int
    limit: int
    bytes: int
    _small_bytes: int

    def _insert(self, key: tuple[Any, Any], row: tuple[Any, ...]) -> Entry:
        raise NotImplementedError

    def _set_row(self, e: Entry, row: tuple[Any, ...], keep_elems: bool) -> None:
        raise NotImplementedError

    def _recost(self, e: Entry) -> None:
        raise NotImplementedError

    def _drop(self, key: tuple[Any, Any]) -> None:
        raise NotImplementedError

    def _evict(self) -> None:
        raise NotImplementedError

    def apply_flush(self, rows: FlushRows) -> None:
        """:meth:`apply_flush_steps` run to its end (tests)."""
        for _ in self.apply_flush_steps(rows):
            pass

    def apply_flush_steps(self, rows: FlushRows) -> Iterator[None]:
        """Bring the cache to what a flush just committed; keep new rows while the fill budget lasts.

        In steps of :data:`CHUNK` rows, for the event loop to run between its other work (see
        memd.steps). The budget is the room the cache has left, and at least the small FIFO's
        share: rows beyond that would only push each other out of the small FIFO (S3-FIFO evicts
        only once the cache is full, so while it has room a flush fills it: a working set that
        fits is cached by the flush that wrote it, not by a miss each).
        """
        if self.limit <= 0:
            return
        budget = [max(int(self.limit * SMALL_SHARE), self.limit - self.bytes)]
        for (db,) in rows.wipe_keys:
            with self.lock:
                self.epoch += 1
                for key in [k for k in self.map if k[0] == db and k[0].__class__ is int]:
                    self._drop(key)
            yield
        yield from self._chunked(rows.deletes, self._apply_delete, budget)
        yield from self._chunked(rows.upserts, self._apply_upsert, budget)
        yield from self._chunked(rows.metas, self._apply_meta, budget)
        yield from self._chunked(rows.elems, self._apply_elem, budget)
        yield from self._chunked(rows.elem_deletes, self._apply_elem_delete, budget)
        yield from self._chunked(rows.trims, self._apply_trim, budget)
        yield from self._chunked(rows.mems, self._apply_mem, budget)

    def _chunked(self, rows: list[tuple[Any, ...]], fn: Any, budget: list[int]) -> Iterator[None]:
        for i in range(0, len(rows), CHUNK):
            with self.lock:
                self.epoch += 1
                touched: dict[int, Entry] = {}
                if fn == self._apply_upsert:
                    self._upserts(rows[i:i + CHUNK], budget, touched)
                else:
                    for row in rows[i:i + CHUNK]:
                        fn(row, budget, touched)
                for e in touched.values():
                    if e.live:
                        self._recost(e)
                self._evict()
            yield

    def _upserts(self, rows: list[tuple[Any, ...]], budget: list[int], touched: dict[int, Entry]) -> None:
        """:meth:`_apply_upsert` over a chunk, the common case (a string already cached, or a key past the
        budget) inlined: a busy flush's rows are mostly these, and its thread holds the GIL meanwhile."""
        get, getsize, upsert = self.map.get, _getsizeof, self._apply_upsert
        for row in rows:
            e = get((row[0], row[1]))
            if e is None:
                if budget[0] > 0:
                    upsert(row, budget, touched)
            elif row[2] == T_STRING and e.elems is None:
                value, exp = row[3], row[4]
                cost = e.kcost + _ROW6 + (0 if value is None else getsize(value)) + (0 if exp is None else getsize(exp))
                e.row = row[2:8]
                delta = cost - e.cost
                e.cost = cost
                self.bytes += delta
                if e.queue == SMALL:
                    self._small_bytes += delta
            else:
                upsert(row, budget, touched)

    def _apply_delete(self, row: tuple[Any, ...], budget: list[int], touched: dict[int, Entry]) -> None:
        self._drop((row[0], row[1]))

    def _apply_upsert(self, row: tuple[Any, ...], budget: list[int], touched: dict[int, Entry]) -> None:
        e = self.map.get((row[0], row[1]))
        if e is None:
            if budget[0] <= 0:
                return
            e = self._insert((row[0], row[1]), row[2:8])
            budget[0] -= e.cost
        else:  # (_set_row inlined: most rows of a busy flush land here)
            new = row[2:8]
            e.row = new
            e.elems, e.complete = None, False
            cost = e.kcost + _row_cost(new)
            delta = cost - e.cost
            e.cost = cost
            self.bytes += delta
            if e.queue == SMALL:
                self._small_bytes += delta
        if row[5] and row[5] <= ELEMS_MAX:  # a collection written whole: its elements follow in this flush
            e.elems, e.complete = {}, True
            touched[id(e)] = e

    def _apply_meta(self, row: tuple[Any, ...], budget: list[int], touched: dict[int, Entry]) -> None:
        e = self.map.get((row[0], row[1]))
        if e is not None:
            old = e.row
            e.row = (old[0], old[1], row[2], row[3], row[4], row[5])
            if row[3] > ELEMS_MAX:
                e.elems, e.complete = None, False
            touched[id(e)] = e

    def _apply_elem(self, row: tuple[Any, ...], budget: list[int], touched: dict[int, Entry]) -> None:
        e = self.map.get((row[0], row[1]))
        if e is not None and e.elems is not None:
            e.elems[row[2]] = row[3] if row[4] is None else row[4]
            if len(e.elems) > ELEMS_MAX:
                e.elems, e.complete = None, False
            touched[id(e)] = e

    def _apply_elem_delete(self, row: tuple[Any, ...], budget: list[int], touched: dict[int, Entry]) -> None:
        e = self.map.get((row[0], row[1]))
        if e is not None and e.elems is not None:
            if e.complete:
                e.elems.pop(row[2], None)
            else:
                e.elems[row[2]] = ABSENT
            touched[id(e)] = e

    def _apply_trim(self, row: tuple[Any, ...], budget: list[int], touched: dict[int, Entry]) -> None:
        e = self.map.get((row[0], row[1]))
        if e is not None and e.elems is not None:
            lo, hi = row[2], row[3]
            e.elems = {sub: v for sub, v in e.elems.items() if lo <= sub < hi}
            touched[id(e)] = e

    def _apply_mem(self, row: tuple[Any, ...], budget: list[int], touched: dict[int, Entry]) -> None:
        key = (row[0], row[1])
        new = row[2:8]
        e = self.map.get(key)
        if e is not None:
            self._set_row(e, new, keep_elems=False)
        elif budget[0] > 0:
            budget[0] -= self._insert(key, new).cost
