"""A bounded read cache of stored rows, under the buffer: a hit answers in well under a microsecond.

A read of a key no buffer layer holds is a point read of SQLite on the event loop, 4-7 µs. This
cache answers it from a dict instead. It is store-agnostic: it holds rows in the shapes of
:mod:`memd.store.base` (a key's row, a collection's elements, a memory's row) under the keys the
store reads them by, ``(physical db, key)`` or ``(ns, key)``, and it learns what a flush wrote from
the store-agnostic :class:`memd.store.rows.FlushRows`.

**What fills it.** Only the store itself: a read that missed (the row SQLite returned), and the
flush (what it just wrote, up to a budget: keys written a moment ago stay hot). Command handlers
never touch it, so its correctness does not depend on each new command: it can only ever hold what
SQLite holds.

**Invalidation.** Whatever changes stored rows tells it, after its transaction commits: the flush
(updates rows in place, drops deleted keys, drops a database's entries on FLUSHDB/FLUSHALL),
compaction's purge (drops the purged keys and memories), a raw statement (clears it). History
(``mem_history``) is never cached, so pruning it changes nothing here; SWAPDB moves no rows (it
changes the map from Redis's numbers to physical ones, above the store). A restore replaces the
file while memd is stopped: the cache starts empty. A cached row carries its expiry and is checked
at every hit: an expired row is not served (SQLite answers until compaction purges it).

**Why a hit is never older than SQLite.** The flush's thread updates the cache after its commit,
and the engine drops the frozen buffer layer only after the flush has returned, so the update is
done first. Between the commit and the update the cache may still hold a key's previous row, but
every key the flush changed is in the frozen layer, which every layered read consults first: no
read that falls through the buffer can see that row (a database the flush wiped is marked
``flushall`` in the layer, which stops the read too). Reads that do not go through the layers
(DBSIZE asking about buffered keys, RANDOMKEY) run inside :meth:`Store.snapshot`, where the store
bypasses the cache altogether: a snapshot sees SQLite at one commit, which the cache may be ahead
of or behind.

**Why a fill from a read never installs a stale row.** A read on the loop takes :attr:`epoch`
before asking SQLite, and its fill is accepted only if the epoch has not moved. Every writer bumps
the epoch after its commit, under :attr:`lock`, in the same locked section that updates the rows.
So a read of the row before a commit either fills before that section (which then overwrites or
drops it) or is refused after it. A fill from the loop only *tries* the lock: if a writer's
thread (purge, a statement by hand) holds it, the fill is skipped (a lost fill, never a stall).

**Threads.** Hits are lock-free: a dict lookup and a counter bump under the GIL; entries are
updated in place by attribute assignment, which a reader sees whole, old or new. Every change of
the queues and the map happens under :attr:`lock`. The flush's updates run on the event loop
after its commit, in steps of :data:`CHUNK` rows (memd.steps), while the frozen layer still
answers for every key they touch.

**Eviction: S3-FIFO** (Yang et al., SOSP 2023), which resists scans: a new entry enters a small
FIFO (:data:`SMALL_SHARE` of the bytes); a hit only bumps its frequency (capped at 3). When the small
queue is over its share, its oldest entry moves to the main FIFO if it was read at least
:data:`PROMOTE_AT` times, else it leaves and its key's hash goes to a ghost queue; a key missed
while its hash is a ghost enters the main queue directly. The main queue's oldest entry is
re-queued with its frequency decremented while that is above zero, else it leaves. A sweep over
the whole keyspace (SCAN, then a GET of each key) passes through the small queue and out, while
the hot set keeps its place in the main one.

**Bounds.** ``max_bytes`` counts what entries really cost in Python: each object's
``sys.getsizeof`` (key tuple and bytes, row tuple, value, ints outside the small-int cache,
element dicts), the entry object, its share of the map's and queue's slots, and the ghost queue.
A test checks the figure against tracemalloc.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from memd.store.cacheentry import (
    ABSENT, ELEMS_MAX, GHOST_COST, MAIN, MISSING, SMALL, Entry, _cost, _key_cost)
from memd.store.cacheflush import CHUNK, SMALL_SHARE, FlushUpdates

PROMOTE_AT = 2  # hits while in the small FIFO that earn a place in the main one
MAX_FREQ = 3
DEFAULT_MAX_BYTES = 64 << 20


def _now_ms() -> int:
    return int(time.time() * 1000)


class ReadCache(FlushUpdates):
    """The cache (see the module docstring). ``max_bytes`` 0: disabled (nothing is kept)."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.map: dict[tuple[Any, Any], Entry] = {}
        self.lock = threading.Lock()
        self.epoch = 0
        self.max_bytes = max_bytes  # as configured
        self.limit = max_bytes  # in force: lower while the memory watchdog sheds
        self.bytes = 0  # every entry's cost plus the ghost queue's
        self._small: deque[Entry] = deque()
        self._main: deque[Entry] = deque()
        self._small_bytes = 0
        self._dead = 0  # entries dropped but still in a queue (skipped when reached)
        self._ghost: OrderedDict[int, None] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.sheds = 0
        # the clock expiries are judged by: the engine sets its own (which never runs backwards), so a row
        # the keyspace would find expired is never served
        self.now_ms: Callable[[], int] = _now_ms

    @property
    def enabled(self) -> bool:
        return self.limit > 0

    # ---- the read path (the event loop) ---------------------------------------------------

    def row(self, key: tuple[Any, Any], exp_at: int) -> tuple[Any, ...] | None:
        """The cached row for ``key`` unless it is absent or expired (its expiry is item ``exp_at``)."""
        e = self.map.get(key)
        if e is not None:
            row = e.row
            exp = row[exp_at]
            if exp is None or exp > self.now_ms():
                if e.freq < MAX_FREQ:
                    e.freq += 1
                self.hits += 1
                return row
        self.misses += 1
        return None

    def fill(self, key: tuple[Any, Any], row: tuple[Any, ...], epoch: int, exp_at: int) -> None:
        """A row the store just read for ``key`` (``epoch``: :attr:`epoch` before that read)."""
        exp = row[exp_at]
        if exp is not None and exp <= self.now_ms() or not self.lock.acquire(blocking=False):
            return
        try:
            if epoch == self.epoch and self.limit > 0:
                e = self.map.get(key)
                if e is None:
                    self._insert(key, row)
                elif e.row != row:
                    self._set_row(e, row, keep_elems=False)
                self._evict()
        finally:
            self.lock.release()

    def elem(self, key: tuple[Any, Any], sub: bytes) -> Any:
        """A cached element: its value, None when known absent, or :data:`MISSING` when unknown."""
        e = self.map.get(key)
        if e is not None:
            elems = e.elems
            if elems is not None:
                v = elems.get(sub, MISSING)
                if v is not MISSING:
                    self.hits += 1
                    return None if v is ABSENT else v
                if e.complete:
                    self.hits += 1
                    return None
        self.misses += 1
        return MISSING

    def fill_elem(self, key: tuple[Any, Any], sub: bytes, value: Any, epoch: int) -> None:
        """An element the store just read (None: not stored), kept only under a cached small collection."""
        if not self.lock.acquire(blocking=False):
            return
        try:
            e = self.map.get(key)
            if epoch != self.epoch or e is None or e.complete or e.row[3] > ELEMS_MAX:
                return
            if e.elems is None:
                e.elems = {}
            elif len(e.elems) >= ELEMS_MAX:
                return
            e.elems[sub] = ABSENT if value is None else value
            self._recost(e)
            self._evict()
        finally:
            self.lock.release()

    def all_elems(self, key: tuple[Any, Any]) -> dict[bytes, Any] | None:
        """Every element of a collection when the cache holds them all (do not modify), else None."""
        e = self.map.get(key)
        if e is not None and e.complete:
            self.hits += 1
            return e.elems
        self.misses += 1
        return None

    def wants_elems(self, key: tuple[Any, Any]) -> bool:
        """Whether a whole read of this collection's elements should be kept (its row is cached and small)."""
        e = self.map.get(key)
        return e is not None and not e.complete and e.row[3] <= ELEMS_MAX

    def fill_elems(self, key: tuple[Any, Any], items: list[tuple[bytes, Any]], epoch: int) -> None:
        """Every element of a collection, just read whole."""
        if len(items) > ELEMS_MAX or not self.lock.acquire(blocking=False):
            return
        try:
            e = self.map.get(key)
            if epoch == self.epoch and e is not None:
                e.elems, e.complete = dict(items), True
                self._recost(e)
                self._evict()
        finally:
            self.lock.release()


    def invalidate(self, keys: Iterable[tuple[Any, Any]]) -> None:
        """Drop these keys (rows a writer other than the flush changed), after its commit."""
        with self.lock:
            self.epoch += 1
            for key in keys:
                self._drop(key)

    def clear(self) -> None:
        """Drop everything (a raw statement changed who knows what)."""
        with self.lock:
            self.epoch += 1
            self._clear()

    # ---- bounds ----------------------------------------------------------------------------

    def resize(self, max_bytes: int) -> None:
        """A new configured bound (config reload); 0 disables and empties the cache."""
        with self.lock:
            self.epoch += 1
            self.max_bytes = self.limit = max_bytes
            if max_bytes <= 0:
                self._clear()
            self._evict()

    def shed(self) -> int:
        """The memory watchdog's first resort: halve what the cache holds (all of it under 1 MiB) and
        keep it there until :meth:`unshed`; returns the tracked bytes freed."""
        with self.lock:
            self.epoch += 1
            before = self.bytes
            self.sheds += 1
            if self.bytes < 1 << 20:
                self._clear()
                self.limit = min(self.limit, 1 << 20) if self.max_bytes > 0 else 0
            else:
                self.limit = self.bytes // 2
                self._evict()
            return before - self.bytes

    def unshed(self) -> None:
        """Memory is back under the watchdog's soft limit: the configured bound again."""
        self.limit = self.max_bytes

    # ---- internals (the lock held) ----------------------------------------------------------

    def _insert(self, key: tuple[Any, Any], row: tuple[Any, ...]) -> Entry:
        h = hash(key)
        ghost = self._ghost
        if h in ghost:
            del ghost[h]
            self.bytes -= GHOST_COST
            e = Entry(key, row, MAIN)
            self._main.append(e)
        else:
            e = Entry(key, row, SMALL)
            self._small.append(e)
        e.kcost = _key_cost(key)
        e.cost = _cost(e)
        self.bytes += e.cost
        if e.queue == SMALL:
            self._small_bytes += e.cost
        self.map[key] = e
        return e

    def _set_row(self, e: Entry, row: tuple[Any, ...], keep_elems: bool) -> None:
        e.row = row
        if not keep_elems:
            e.elems, e.complete = None, False
        self._recost(e)

    def _recost(self, e: Entry) -> None:
        cost = _cost(e)
        delta = cost - e.cost
        e.cost = cost
        self.bytes += delta
        if e.queue == SMALL:
            self._small_bytes += delta

    def _drop(self, key: tuple[Any, Any]) -> None:
        e = self.map.pop(key, None)
        if e is not None:
            self._forget(e)
            self._dead += 1
            if self._dead > 1024 and self._dead > len(self.map):
                self._compact()

    def _forget(self, e: Entry) -> None:
        e.live = False
        self.bytes -= e.cost
        if e.queue == SMALL:
            self._small_bytes -= e.cost

    def _compact(self) -> None:
        """Rebuild the queues without the entries already dropped (invalidations leave them behind)."""
        self._small = deque(e for e in self._small if e.live)
        self._main = deque(e for e in self._main if e.live)
        self._dead = 0

    def _clear(self) -> None:
        self.map.clear()
        self._small.clear()
        self._main.clear()
        self._ghost.clear()
        self.bytes = self._small_bytes = self._dead = 0

    def _evict(self) -> None:
        small, main, limit = self._small, self._main, self.limit
        while self.bytes > limit and (small or main):
            if main and self._small_bytes <= limit * SMALL_SHARE or not small:
                e = main.popleft()
                if not e.live:
                    self._dead -= 1
                elif e.freq > 0:
                    e.freq -= 1
                    main.append(e)
                else:
                    self._evict_entry(e)
            else:
                e = small.popleft()
                if not e.live:
                    self._dead -= 1
                elif e.freq >= PROMOTE_AT:
                    self._small_bytes -= e.cost
                    e.queue, e.freq = MAIN, 0
                    main.append(e)
                else:
                    self._evict_entry(e)
                    self._ghost[hash(e.key)] = None
                    self.bytes += GHOST_COST
                    while len(self._ghost) > max(len(main), 1):
                        self._ghost.popitem(last=False)
                        self.bytes -= GHOST_COST
        if self.bytes > limit and not (small or main):  # only ghosts left: they go too
            self.bytes -= GHOST_COST * len(self._ghost)
            self._ghost.clear()

    def _evict_entry(self, e: Entry) -> None:
        del self.map[e.key]
        self._forget(e)
        self.evictions += 1

    # ---- figures ----------------------------------------------------------------------------

    def stats(self) -> dict[str, int | float]:
        """INFO's figures (persistence section, as ``memd_readcache_*``)."""
        looked = self.hits + self.misses
        return {"readcache_max_bytes": self.max_bytes, "readcache_limit_bytes": self.limit,
                "readcache_bytes": self.bytes, "readcache_entries": len(self.map), "readcache_hits": self.hits,
                "readcache_misses": self.misses, "readcache_hit_rate": round(self.hits / looked, 4) if looked else 0.0,
                "readcache_evictions": self.evictions, "readcache_sheds": self.sheds}


def sorted_elems(elems: dict[bytes, Any], sub_from: bytes | None, sub_to: bytes | None,
                 rev: bool) -> Iterator[tuple[bytes, Any]]:
    """A complete element cache read like the store's ``iter_elems`` (sub order, optional range)."""
    items = sorted(elems.items(), reverse=rev)
    for sub, v in items:
        if v is ABSENT or sub_from is not None and sub < sub_from or sub_to is not None and sub >= sub_to:
            continue
        yield sub, v


__all__ = ["CHUNK", "DEFAULT_MAX_BYTES", "ELEMS_MAX", "MISSING", "ReadCache", "sorted_elems"]
