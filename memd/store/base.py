"""The Store protocol: everything the engine, the maintenance jobs and backups ask of a store.

The engine writes into its WAL and memtables; a store holds what has been flushed.
This protocol is the whole surface between them, so that a second store can slot in
behind the same engine. Two kinds of read, on purpose:

- **point reads** (``get_key``, ``get_elem``, ``iter_elems``, ``scan_keys``,
  ``get_mem``...) are *synchronous*, called on the event-loop thread in the middle of
  a command: a read-modify-write command (INCR, MEM.PUT's version number, EXEC) runs
  start to finish without an ``await``, which is what makes every command atomic.
  A store whose point reads cannot answer in microseconds from a local file does not
  belong here; a shared store (PostgreSQL) receives what is flushed and answers the
  *asynchronous* reads below, beside a local one.
- **slow reads** (``search_mem``, ``mem_namespaces``) are ``async``: they may take
  milliseconds and must never stall other clients.

Writes are ``async`` and whole: ``flush`` writes one frozen memtable and its LSN in one
durable transaction; ``purge`` and ``prune_history`` are compaction's transactions.
Row shapes are plain tuples (a named tuple costs a point read measurably more); their
fields are documented here, once.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

from memd.engine.memtable import IndexSpec, Memtable

if TYPE_CHECKING:
    from memd.store.readcache import ReadCache

# type, value, expires_at, count, lo, hi
KeyRow = tuple[int, bytes | None, int | None, int, int, int]
# value, version, created_at, updated_at, expires_at, ttl
MemRow = tuple[str | None, int, int, int, int | None, int | None]
# ns, key, value, version, created_at, updated_at, expires_at, ttl, score (higher is better; None without a query)
SearchRow = tuple[str, str, str, int, int, int, int | None, int | None, float | None]
# version, value, created_at, updated_at, superseded_at, deleted
HistoryRow = tuple[int, str, int, int, int, int]
# a bound in a sorted set's (score, member) order: (score,) sorts before every member of that score,
# (score, member) is that very element; None: unbounded. Ranges are half-open: [lo, hi).
ZBound = tuple[float] | tuple[float, bytes] | None
Cond = tuple[str, str, Any]  # a MEM.SEARCH filter: (top-level field, $op, JSON value)
Scope = tuple[tuple[str, bool], ...]  # (namespace prefix, readable), longest prefix first


def list_sub(pos: int) -> bytes:
    """A list position as a sub-key that sorts like the integer (offset binary).

    Every store keeps list elements under these sub-keys, so the memtable and the store
    agree on element order without knowing each other.
    """
    return (pos + (1 << 63)).to_bytes(8, "big")


class Store(Protocol):
    """What the engine needs of the store that holds flushed data."""

    flushed_lsn: int  # the highest LSN durably in the store: WAL records at or below it may be deleted
    # stored rows kept in memory (memd.store.readcache): the store fills and invalidates it, nobody else;
    # the memory watchdog sheds it (shed/unshed) and INFO reads its stats()
    readcache: ReadCache

    async def open(self) -> None:
        """Create or migrate the schema and load ``flushed_lsn``; raise StoreError if unusable."""

    async def close(self) -> None: ...

    def ranking(self) -> str:
        """One line for the start-up log: how searches are ranked, and why."""

    # ---- databases ----
    def dbmap(self) -> list[int] | None:
        """The map from Redis database numbers to physical ones that the stored data was flushed with
        (SWAPDB), or None: the identity."""

    def max_db(self) -> int:
        """The highest physical database holding a key; -1 when none does."""

    # ---- point reads: synchronous, on the event loop; ``db`` is the physical database ----
    def snapshot(self) -> AbstractContextManager[None]:
        """Reads inside see one state of the store (a flush commits before all of them or after)."""

    def get_key(self, db: int, key: bytes) -> KeyRow | None: ...

    def get_elem(self, db: int, key: bytes, sub: bytes) -> Any:
        """An element's value (bytes), or its score (float) in a sorted set; None if absent."""

    def iter_elems(self, db: int, key: bytes, sub_from: bytes | None = None, sub_to: bytes | None = None,
                   rev: bool = False) -> Iterator[tuple[bytes, Any]]:
        """Elements of a key in sub order, optionally in ``[sub_from, sub_to)`` (``sub_to`` None: no upper
        bound); descending with ``rev`` (XREVRANGE). Lazy: a caller that stops early (an element SCAN
        page, an XRANGE with COUNT) reads no further rows."""

    def elem_at(self, db: int, key: bytes, offset: int) -> bytes | None:
        """The sub-key at ``offset`` (0-based) in a key's sub order, None past the end. O(offset),
        walked by the store itself: a uniform random pick without reading the collection."""

    # sorted sets in (score, member) order: what makes a range read on a big zset O(log n + what it returns)
    def zset_range(self, db: int, key: bytes, lo: ZBound, hi: ZBound, rev: bool, limit: int, offset: int = 0
                   ) -> list[tuple[float, bytes]]:
        """Up to ``limit`` (score, member) of a sorted set in ``[lo, hi)``, ascending (or descending
        with ``rev``), after skipping ``offset``."""

    def zset_count(self, db: int, key: bytes, lo: ZBound, hi: ZBound) -> int:
        """How many members of a sorted set are in ``[lo, hi)``."""

    def zset_scores(self, db: int, key: bytes, members: list[bytes]) -> dict[bytes, float]:
        """The stored score of each of ``members`` that the store holds (one read for many)."""

    def zset_page(self, db: int, key: bytes, after: bytes | None, limit: int) -> list[tuple[bytes, float]]:
        """Up to ``limit`` (member, score) of a sorted set in member byte order, after ``after`` (ZSCAN)."""

    def scan_keys(self, db: int, after: bytes | None, limit: int) -> list[tuple[bytes, int, int | None]]:
        """Up to ``limit`` keys sorted after ``after``: (key, type, expires_at)."""

    def count_live_keys(self, db: int, now_ms: int) -> int: ...

    def random_key(self, db: int, rng: random.Random) -> bytes | None:
        """A stored key chosen at random (RANDOMKEY), expired or not; None when none is stored.

        Every stored key must have a chance; uniformity is not required."""

    def get_mem(self, ns: str, key: str) -> MemRow | None: ...

    def mem_heads(self, idents: list[tuple[str, str]]) -> dict[tuple[str, str], tuple[MemRow | None, int]]:
        """For each (ns, key): its row (None: none, not even a tombstone) and the highest version
        known for it, current or archived (0: none). One read for a whole run of MEM.PUTs."""

    def mem_history(self, ns: str, key: str, keep: int, since_ms: int, limit: int | None) -> list[HistoryRow]:
        """Archived versions newest first: the newest ``keep`` that ended after ``since_ms``."""

    # ---- vector indexes (semantic recall) ----
    def vector_indexes(self) -> dict[str, IndexSpec]:
        """The vector indexes flushed: prefix -> (dims, distance, fields JSON)."""

    def vector_stats(self, prefix: str) -> tuple[int, int, int, bool]:
        """(vectors, memories, bytes in memory, ANN in use) of one index; zeros if none."""

    def vector_bytes(self) -> int:
        """Memory every index's vectors take (the memory watchdog and vector_max_bytes count it)."""

    async def maintain_vectors(self) -> int:
        """Rebuild the approximate indexes that deletes or growth have worn; how many were."""

    # ---- slow reads: off the event loop ----
    async def search_mem(self, prefix: str, query: str | None, conds: list[Cond], limit: int, offset: int,
                         now_ms: int, scope: Scope = (), vector: Any = None) -> list[SearchRow]:
        """Live memories under ``prefix`` matching full-text ``query`` and ``conds``, best first.

        With ``vector`` (a checked float32 array): the nearest by the index covering
        ``prefix`` (score: similarity), or with ``query`` too, both rankings fused (RRF).
        Raises QueryError when ``query`` cannot be parsed.
        """

    async def mem_namespaces(self, prefix: str, now_ms: int) -> list[str]:
        """Distinct namespaces under ``prefix`` ("" = all) holding a live memory, sorted."""

    # ---- writes ----
    async def flush(self, table: Memtable) -> None:
        """Write a frozen memtable and its ``max_lsn`` in one durable transaction."""

    async def maintain_keyfilter(self) -> None:
        """Build (or rebuild, when worn) the filter of stored keys that lets reads of absent keys skip the store;
        until it is first built every read goes to the store."""

    def keyfilter_stats(self) -> dict[str, int | float]:
        """The key filter's figures for INFO."""

    def configure_readcache(self, max_bytes: int) -> None:
        """Bound the read cache to ``max_bytes`` (0: off), at once (config reload)."""

    # ---- compaction (the caller holds the engine's flush lock) ----
    def expired_keys(self, now_ms: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to ``limit`` (db, key) pairs expired by ``now_ms``."""

    def expired_memories(self, now_ms: int, limit: int) -> list[tuple[str, str]]: ...

    async def purge(self, keys: list[tuple[int, bytes]], expired: list[tuple[str, str]]) -> None:
        """Delete expired keys; archive expired memories (ended at their expiry) and leave tombstones."""

    async def prune_history(self, keep: int, before_ms: int) -> int:
        """Drop archived versions beyond the newest ``keep`` per memory or ended before ``before_ms``."""

    async def vacuum(self) -> int:
        """Return free space to the file system; the number of pages freed."""

    async def checkpoint(self, truncate_over: int) -> str:
        """Fold the store's own journal back; a word for the log (passive, truncate...)."""

    def shrink_memory(self) -> None:
        """Release caches the store can rebuild (the memory watchdog's last resort before refusing writes)."""

    def disk_bytes(self) -> int: ...

    # ---- backup ----
    def copy_to(self, dest: str) -> int:
        """Copy the store as of one commit into the SQLite file ``dest``; return its flushed LSN.

        Blocking: the caller runs it in a worker thread.
        """
