"""The keys SQLite holds, per database, in Bloom filters: a read of a key it does not hold skips SQLite.

A GET (EXISTS, TYPE, HGET...) of a key in no buffer layer is a point read of SQLite on the event
loop, 4-7 µs, and a key that does not exist costs the same: agents probe for state that is not
there yet all the time. A Bloom filter answers "certainly not stored" in ~0.25 µs (``rbloom``, in
Rust: a pure-Python filter costs about as much as the read it saves).

No false negatives, ever: the flush adds its keys *before* its transaction commits (a bit set
early only costs a false positive), and a build (at start, on the event loop in steps, reads falling
back to SQLite until it is ready) swaps in filters that also hold every key a flush added or
committed while it ran, and every key of a flush not committed yet when it swaps: a flush
racing a build's snapshot cannot lose a key, whatever the interleaving. Deleted keys stay in the filter (a Bloom filter
cannot remove): they only cost false positives, and so does a filter filled past its capacity;
the engine rebuilds it in the background when either has grown (:meth:`KeyFilter.needs_rebuild`).

Sizing: :data:`FP_RATE` at :data:`HEADROOM` times the keys found, so a fresh filter costs
1.2 * HEADROOM bytes a key (1.8) and errs well under 1% until it fills.
"""

from __future__ import annotations

import itertools
import logging
import operator
import sqlite3
import threading
import time
from collections.abc import Iterator

from rbloom import Bloom

log = logging.getLogger("memd.store")
_first = operator.itemgetter(0)
_second = operator.itemgetter(1)

FP_RATE = 0.01  # false positives at capacity
HEADROOM = 1.5  # capacity over the keys found at a build
MIN_CAPACITY = 1024
BUILD_BATCH = 1024  # keys per step of a build on the event loop
ADD_BATCH = 16_384  # keys a flush adds in one C call
SWAP_MAX = 4096  # keys a build may still have to add when it swaps its filters in (under the lock)


class KeyFilter:
    """Per-database Bloom filters of the stored keys (see the module docstring).

    Thread use: the event loop asks (:meth:`might_hold`) and builds (:meth:`build_steps`); the flush's
    worker thread adds (:meth:`add`). rbloom holds the GIL for each call;
    the lock orders a build's swap with concurrent adds.
    """

    def __init__(self) -> None:
        self._filters: dict[int, Bloom] = {}
        self._capacity: dict[int, int] = {}
        self._added: dict[int, int] = {}  # keys added since the build, by database
        self._lock = threading.Lock()
        self._pending: list[tuple[int, bytes]] | None = None  # while a build reads: what flushes added meanwhile
        self._inflight: list[list[tuple[int, bytes]]] = []  # keys added by flushes that have not committed yet
        self.ready = False
        self.build_seconds = 0.0
        self.builds = 0
        self.rejected = 0  # reads it answered "not stored" without SQLite
        self.maybes = 0  # reads it let through to SQLite...
        self.false = 0  # ... that found nothing there

    # ---- the read path (event loop) ----------------------------------------------------

    def might_hold(self, db: int, key: bytes) -> bool:
        """False when SQLite certainly holds no ``key`` in ``db``; True when it may (or no filter is ready)."""
        if not self.ready:
            return True
        f = self._filters.get(db)
        if f is None or key not in f:
            self.rejected += 1
            return False
        self.maybes += 1
        return True

    def missed(self) -> None:
        """A read :meth:`might_hold` let through found no row: a false positive (counted for INFO)."""
        if self.ready:
            self.false += 1

    # ---- writes (a flush, on the event loop) ------------------------------------------------

    def add(self, keys: list[tuple[int, bytes]]) -> None:
        """Keys about to be committed to SQLite, in one go (tests; a flush runs :meth:`add_steps`)."""
        for _ in self.add_steps(keys):
            pass

    def add_steps(self, keys: list[tuple[int, bytes]]) -> Iterator[None]:
        """Keys about to be committed to SQLite (run it to the end before the commit, then call
        :meth:`committed`), :data:`ADD_BATCH` keys a step, for the event loop.

        Why not in the flush's thread, next to its transaction: there, the batches' Python (a list
        per database, a C call each) held the GIL while the loop waited for it at each of its system
        calls: loop stalls of 32-38 ms under redis-benchmark were caught in this very call. Each
        step reads the filters in force, under the lock: a build that swaps its filters in between
        has added every in-flight list already (see :meth:`_catch_up`), so no key is missed either side.
        """
        with self._lock:
            self._inflight.append(keys)
            if self._pending is not None:
                self._pending.extend(keys)
        for i in range(0, len(keys), ADD_BATCH):
            with self._lock:
                for _ in _add_pairs(self._filters, self._capacity, self._added, keys[i:i + ADD_BATCH]):
                    pass  # (one step: ADD_BATCH keys)
            yield

    def committed(self, keys: list[tuple[int, bytes]]) -> None:
        """The keys :meth:`add` took are committed now (or their flush failed): a build running may have read
        before that."""
        with self._lock:
            self._inflight = [k for k in self._inflight if k is not keys]
            if self._pending is not None:
                self._pending.extend(keys)

    # ---- builds (the event loop, in steps) ------------------------------------------------------------

    def build(self, conn: sqlite3.Connection) -> None:
        """Fill new filters from every key stored, then swap them in, in one go (tests)."""
        for _ in self.build_steps(conn):
            pass

    def build_steps(self, conn: sqlite3.Connection, counts: dict[int, int] | None = None) -> Iterator[None]:
        """:meth:`build` in steps of :data:`BUILD_BATCH` keys (~1-2 ms each), for the event loop to run between its
        other work: one read transaction on ``conn`` across them.

        Why on the loop and not in a worker thread: a thread running Python while the loop serves
        takes the GIL at each of the loop's system calls and keeps it until the loop's switch-interval
        timeout claims it back, so every call cost the loop up to a millisecond, and the build itself
        (4.9 s for 1,000,000 keys, a Python call per key) starved: it had not finished after 40 s of
        redis-benchmark. Here a batch's keys go into the filter in one C call (``Bloom.update`` over
        the rows fetched): 0.7 s for 1,000,000 keys, steps of at most 1.7 ms. ``counts``: the keys per
        database (:func:`count_keys`), to size the filters, counted beforehand off the loop (one
        statement over the whole table: 30-100 ms); a flush committing meanwhile only makes them a
        little off, or misses a database: the scan covers every database in the snapshot whatever the
        counts say (a filter is sized from them, and rebuilt if the keys found overfill it). None:
        counted here, in the build's snapshot.
        """
        t0 = time.perf_counter()
        with self._lock:
            self._pending = []
        try:
            conn.execute("BEGIN")
            try:
                if counts is None:
                    counts = count_keys(conn)
                capacity = {db: max(MIN_CAPACITY, int(n * HEADROOM)) for db, n in counts.items()}
                filters = {db: Bloom(cap, FP_RATE) for db, cap in capacity.items()}
                # every database the snapshot holds, not only those counted (a flush may have committed keys
                # of a new one in between): one filled from nothing starts small, and is rebuilt once full
                found: dict[int, int] = {}
                cur = conn.execute("SELECT db, key FROM keys")
                while rows := cur.fetchmany(BUILD_BATCH):  # (fewer than ADD_BATCH: one step a batch)
                    yield from _add_pairs(filters, capacity, found, rows)
            finally:
                conn.execute("COMMIT")
        except BaseException:
            with self._lock:
                self._pending = None
            raise
        # the keys flushes added meanwhile (and those of flushes still in flight), in steps too: a flush
        # of 500,000 keys during the build made this one step of 250 ms; the last round, under the lock
        # with the swap, is small
        taken: list[list[tuple[int, bytes]]] = []  # in-flight lists already added (by identity)
        try:  # (the keys found, not the counts, decide a rebuild: a database the counts missed, at once)
            yield from self._catch_up(filters, capacity, found, taken)
        except BaseException:
            with self._lock:
                self._pending = None
            raise
        self.builds += 1
        self.build_seconds = time.perf_counter() - t0
        log.info("key_filter_built keys=%d databases=%d bytes=%d seconds=%.3f", sum(found.values()), len(filters),
                 self.bytes(), self.build_seconds)

    def _catch_up(self, filters: dict[int, Bloom], capacity: dict[int, int], added: dict[int, int],
                  taken: list[list[tuple[int, bytes]]]) -> Iterator[None]:
        """Add what flushes added during a build, in steps, until little is left; then that, and the swap,
        under the lock (``taken``: the in-flight lists added already, by identity)."""
        while True:
            with self._lock:
                pending, self._pending = self._pending or [], []
                fresh = [keys for keys in self._inflight if not any(keys is t for t in taken)]
                if len(pending) + sum(map(len, fresh)) <= SWAP_MAX:
                    self._pending = None
                    for keys in (pending, *fresh):
                        for _ in _add_pairs(filters, capacity, added, keys):
                            pass
                    self._filters, self._capacity, self._added = filters, capacity, added
                    self.rejected = self.maybes = self.false = 0
                    self.ready = True
                    return
            for keys in (pending, *fresh):
                yield from _add_pairs(filters, capacity, added, keys)
            taken += fresh

    def needs_rebuild(self) -> bool:
        """Past its capacity in some database, or erring on more than twice FP_RATE of the absent keys asked."""
        if not self.ready or self._pending is not None:
            return False
        if any(self._added.get(db, 0) > cap for db, cap in self._capacity.items()):
            return True
        absent = self.rejected + self.false
        return absent >= 1000 and self.false > 2 * FP_RATE * absent

    # ---- figures --------------------------------------------------------------------------------

    def bytes(self) -> int:
        return sum(f.size_in_bits for f in self._filters.values()) // 8

    def stats(self) -> dict[str, int | float]:
        """INFO's figures."""
        return {"keyfilter_ready": int(self.ready), "keyfilter_bytes": self.bytes(),
                "keyfilter_keys": sum(self._added.values()),
                "keyfilter_false_positive_rate": round(self.false / max(1, self.rejected + self.false), 4),
                "keyfilter_reads_saved": self.rejected,
                "keyfilter_build_seconds": round(self.build_seconds, 3), "keyfilter_builds": self.builds}


def _add_pairs(filters: dict[int, Bloom], capacity: dict[int, int], added: dict[int, int],
               keys: list[tuple[int, bytes]]) -> Iterator[None]:
    """Add (db, key) pairs to ``filters`` (a filter made for a database they bring), :data:`ADD_BATCH`
    keys per C call and per step; ``added`` counts them (past its capacity, a filter is rebuilt)."""
    for i in range(0, len(keys), ADD_BATCH):
        for db, group in itertools.groupby(keys[i:i + ADD_BATCH], key=_first):
            f = filters.get(db)
            if f is None:
                f = filters[db] = Bloom(MIN_CAPACITY, FP_RATE)
                capacity[db] = MIN_CAPACITY
            batch = list(map(_second, group))
            f.update(batch)
            added[db] = added.get(db, 0) + len(batch)
        yield


def count_keys(conn: sqlite3.Connection) -> dict[int, int]:
    """The keys stored, by database (a filter's size)."""
    return dict(conn.execute("SELECT db, count(*) FROM keys GROUP BY db").fetchall())


__all__ = ["FP_RATE", "HEADROOM", "KeyFilter", "count_keys"]
