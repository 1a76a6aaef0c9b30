"""The SQLite store: one local file, migrated at open, point reads on the loop, whole transactions in a thread.

Three kinds of connection, three jobs:

- the *writer* runs one whole transaction per call in a worker thread (``BEGIN
  IMMEDIATE``, every row, ``COMMIT`` with ``synchronous=FULL`` so the commit is durable
  before the WAL segments it covers are deleted). Calls are serialized by a capacity
  limiter of one, so this is the only writer; one thread hop per transaction, not per
  statement;
- the *reader* (on the event-loop thread) answers point reads in microseconds. In WAL
  journal mode it never waits for the writer, and being synchronous it lets a
  read-modify-write command run start to finish without an ``await``;
- a small *pool* of read connections serves slow reads (searches) in worker threads.
"""

from __future__ import annotations

import contextlib
import json
import functools
import itertools
import logging
import operator
import os
import random
import sqlite3
import time
from collections.abc import Callable, Generator, Iterator
from typing import Any, TypeVar

import anyio

from memd.engine.memtable import IndexSpec, Memtable, under
from memd.errors import CommandError, StoreDamagedError, StoreError
from memd.store import csqlite, search, statements
from memd.store.base import Cond, HistoryRow, KeyRow, MemRow, Scope, SearchRow
from memd.store.filters import json_eq, json_text, member_text
from memd.store.keyfilter import KeyFilter, count_keys
from memd.release import release_steps
from memd.store.readcache import MISSING, ReadCache, sorted_elems
from memd.store.rows import empty_rows, flush_row_steps
from memd.store.schema import BUSY_TIMEOUT_MS, MigrationProgress, connect, migrate, register_functions
from memd.store.sqlitefile import connect_ro
from memd.store.tokens import ns_tokens
from memd.store.vectors import VectorIndex
from memd.store.zindex import Fences, ZsetIndex
from memd.steps import run_on_loop

T = TypeVar("T")
_heads_sql = functools.lru_cache(maxsize=None)(statements.mem_heads)

log = logging.getLogger("memd.store")
Groups = list[tuple[str, list[tuple[Any, ...]]]]

JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024
# The reader's page cache: anonymous memory, outside [cache] max_bytes and the buffer's bound. No
# mmap: the pages of a mapped database count in RSS (up to the map's size), which the watchdog and
# the RSS bound with a full read cache (benchmarks/bench_cacherss.py) judge memd by. Measured on a
# 1M-key, 257 MB table, random point reads (2026-12-08): 64 MiB cache + 256 MiB map 9.4-9.8 us,
# 64 MiB cache alone 11.7-12.3, 32 MiB 12.3-12.9; the read cache answers hot keys before either.
READER_CACHE_KIB = 32 * 1024
RANDOM_KEY_LEVELS = 256  # random_key's deepest descent (a balanced one needs ~log2(keys))
BULK_ROWS = 16_384  # rows per memd._sqlite.executemany call (see _transaction)
_PAIRS_STEP = 8192  # (db, key) pairs taken from the upserts in one step of a flush
_DB_KEY = operator.itemgetter(0, 1)
LOAD_BATCH = 10_000  # memories per VectorIndex.replace_many while loading: bounds the temporary copies
SEARCH_THREADS = 2  # concurrent slow reads (searches) off the event loop; more would only queue for the cores


class SqliteStore(ZsetIndex):
    """The Store protocol (memd.store.base) over one SQLite file."""

    def __init__(self, path: str, migration_progress: MigrationProgress | None = None) -> None:
        self.path = path
        self.migration_progress = migration_progress  # called from the migrating thread, ~every second
        self._reader: sqlite3.Connection | None = None
        self._writer: sqlite3.Connection | None = None
        self._writer_limiter = anyio.CapacityLimiter(1)
        self._pool: list[sqlite3.Connection] = []  # read connections for slow reads
        self._pool_limiter = anyio.CapacityLimiter(SEARCH_THREADS)
        self._rank = "bm25"  # FTS5's own, until open() finds memd._sqlite working
        self._bulk: str | None = None  # the writer's file name for memd._sqlite.executemany, if that works
        self.flushed_lsn = 0
        # the vector indexes declared, and every vector they hold in memory (memd.store.vectors): loaded
        # at open, changed right after each flush that changes them commits
        self._specs: dict[str, IndexSpec] = {}
        self._vectors: dict[str, VectorIndex] = {}
        self._zfences: dict[tuple[int, bytes], tuple[Any, Fences]] = {}  # (db, key) -> (flushed LSN, fences)
        self.keyfilter = KeyFilter()  # the keys stored: a read of one not stored skips SQLite (built by maintain_keyfilter)
        self._keyfilter_building = False
        # stored rows already read or just flushed (memd.store.readcache); ``_cached`` is False while it is
        # disabled and inside a snapshot, where reads must see SQLite's one commit, not the cache's view
        self.readcache = ReadCache()
        self._cached = self.readcache.enabled

    async def open(self) -> None:
        try:
            await anyio.to_thread.run_sync(migrate, self.path, self.migration_progress)
            self._rank = csqlite.ranking_function(self.path)
            self._reader = self._open_reader()
            self._writer = self._open_writer()
            row = self.reader.execute("SELECT value FROM meta WHERE name = 'flushed_lsn'").fetchone()
            if row is None:
                raise StoreError(f"{self.path} is damaged: its meta table has no flushed LSN")
        except (sqlite3.Error, StoreError) as exc:
            await self.close()
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"cannot open {self.path}: {exc}") from exc
        self.flushed_lsn = int(row[0])
        await anyio.to_thread.run_sync(self._load_vectors)

    def _load_vectors(self) -> None:
        """Every declared index and the vectors of every live memory under it, into memory.

        The in-memory index is never persisted: it is rebuilt from ``mem_vectors`` at each
        start, so it cannot disagree with the data after a crash or a restore.
        """
        conn = connect_ro(self.path)
        try:
            for prefix, dims, distance, fields in conn.execute(
                    "SELECT prefix, dims, distance, fields FROM mem_indexes ORDER BY prefix").fetchall():
                t0 = time.perf_counter()
                index = VectorIndex(dims, distance)
                cur = conn.execute(statements.LOAD_VECTORS, (prefix,))
                batch: list[tuple[str, str, int | None, list[tuple[str, bytes]]]] = []
                for (ns, key), rows in itertools.groupby(cur, key=lambda r: (r[0], r[1])):
                    found = list(rows)
                    batch.append((ns, key, found[0][4], [(r[2], r[3]) for r in found]))
                    if len(batch) == LOAD_BATCH:
                        index.replace_many(batch)
                        batch = []
                index.replace_many(batch)
                self._specs[prefix] = (dims, distance, fields)
                self._vectors[prefix] = index
                log.info("vector_index_loaded prefix=%r dims=%d distance=%s vectors=%d memories=%d seconds=%.3f",
                         prefix, dims, distance, len(index), index.memories, time.perf_counter() - t0)
        finally:
            conn.close()

    # ---- vector indexes ----------------------------------------------------------------

    def vector_indexes(self) -> dict[str, IndexSpec]:
        """The vector indexes declared and flushed: prefix -> (dims, distance, fields JSON)."""
        return dict(self._specs)

    def vector_stats(self, prefix: str) -> tuple[int, int, int, bool]:
        """(vectors, memories, bytes in memory, ANN in use) of an index; zeros if none."""
        index = self._vectors.get(prefix)
        if index is None:
            return 0, 0, 0, False
        return len(index), index.memories, index.nbytes, index.ann

    def vector_bytes(self) -> int:
        return sum(index.nbytes for index in list(self._vectors.values()))

    async def maintain_vectors(self) -> int:
        """Rebuild the ANN structures that need it (compaction's job); how many were rebuilt."""
        n = 0
        for index in list(self._vectors.values()):
            n += int(await anyio.to_thread.run_sync(index.maintain))
        return n

    def _index_of(self, ns: str) -> VectorIndex | None:
        """The index governing namespace (or namespace prefix) ``ns``.

        Iterates a copy: searches call it from pool threads while a flush may declare or drop an
        index in the writer's thread.
        """
        return next((index for prefix, index in list(self._vectors.items()) if under(ns, prefix)), None)

    def _apply_vectors(self, table: Memtable) -> None:
        """Bring the in-memory indexes to what the flush of ``table`` just committed."""
        for prefix in table.index_drops:
            self._vectors.pop(prefix, None)
            self._specs.pop(prefix, None)
        for prefix, spec in table.indexes.items():
            if spec is None:
                continue
            old = self._specs.get(prefix)
            self._specs[prefix] = spec
            if old is None or old[:2] != spec[:2]:  # (a new DIMS or DISTANCE: only ever on an empty index)
                self._vectors[prefix] = VectorIndex(spec[0], spec[1])
        if not self._vectors:
            return
        changes = []
        for (ns, key), m in table.mem.items():
            if m.vectors is None and m.value is not None:  # a TTL refresh: same vectors
                index = self._index_of(ns)
                if index is not None:
                    index.set_expiry(ns, key, m.expires_at)
                continue
            changes.append((ns, key, m.expires_at, () if m.value is None else m.vectors))
        self._replace_vectors(changes)

    def _replace_vectors(self, changes: list[tuple[str, str, int | None, Any]]) -> None:
        """Give each memory exactly these vectors (none: it leaves), in the index governing it.

        One ``replace_many`` per index: a flush of 100,000 memories is not 100,000 calls, and
        the IVF gets one removal and one addition.
        """
        by_index: dict[int, tuple[VectorIndex, list[Any]]] = {}
        for change in changes:
            index = self._index_of(change[0])
            if index is not None:
                by_index.setdefault(id(index), (index, []))[1].append(change)
        for index, items in by_index.values():
            index.replace_many(items)

    async def close(self) -> None:
        if self._writer is not None:
            async with self._writer_limiter:  # a transaction still running in its thread finishes first
                self._writer.close()
                self._writer = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        while self._pool:
            self._pool.pop().close()

    def ranking(self) -> str:
        return "memd_bm25 (memd._sqlite)" if self._rank == "memd_bm25" else csqlite.ranking_status()

    @property
    def reader(self) -> sqlite3.Connection:
        """The event loop's read connection (tests trace it)."""
        if self._reader is None:
            raise StoreError("store is closed")
        return self._reader

    def _open_writer(self) -> sqlite3.Connection:
        writer = connect(self.path)
        register_functions(writer)
        writer.execute("PRAGMA synchronous = FULL")
        writer.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
        self._bulk = csqlite.bulk_file(writer)
        return writer

    def _open_reader(self) -> sqlite3.Connection:
        reader = connect(self.path)
        reader.execute("PRAGMA query_only = 1")
        # point reads run on the event loop: keep hot pages in memory (see READER_CACHE_KIB)
        reader.execute(f"PRAGMA cache_size = -{READER_CACHE_KIB}")
        reader.create_function("memd_json_eq", 2, json_eq, deterministic=True)
        reader.create_function("memd_json_text", 1, json_text, deterministic=True)
        reader.create_function("memd_member_text", 2, member_text, deterministic=True)
        if self._rank == "memd_bm25":
            csqlite.ext.register_rank(reader, csqlite.main_file(reader), "mem_fts_docsize")
        return reader

    # ---- point reads (synchronous, event-loop thread) ---------------------------------

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """Reads inside see one state of the file: a flush commits before all of them or after.

        Needed by reads that combine several statements arithmetically (DBSIZE): the
        writer commits in its own thread while the loop thread reads.
        """
        reader = self.reader
        if reader.in_transaction:
            yield
            return
        reader.execute("BEGIN")
        # the snapshot is taken now, not at the first read inside: a read the key filter answers
        # without SQLite must not come before it (a flush commits its keys after adding them there)
        reader.execute("SELECT value FROM meta WHERE name = 'flushed_lsn'").fetchone()
        self._cached = False  # the cache may be ahead of this commit (or behind it): see memd.store.readcache
        try:
            yield
        finally:
            self._cached = self.readcache.enabled
            reader.execute("COMMIT")

    def get_key(self, db: int, key: bytes) -> KeyRow | None:
        cache = self.readcache
        if self._cached:
            ckey = (db, key)
            row = cache.row(ckey, 2)
            if row is not None:
                return row  # type: ignore[return-value]
        keyfilter = self.keyfilter
        if not keyfilter.might_hold(db, key):
            return None
        epoch = cache.epoch
        row = self.reader.execute(
            "SELECT type, value, expires_at, count, lo, hi FROM keys WHERE db = ? AND key = ?", (db, key)).fetchone()
        if row is None:
            keyfilter.missed()
        elif self._cached:
            cache.fill(ckey, row, epoch, 2)
        return row  # type: ignore[no-any-return]

    def get_elem(self, db: int, key: bytes, sub: bytes) -> Any:
        cache = self.readcache
        if self._cached:
            v = cache.elem((db, key), sub)
            if v is not MISSING:
                return v
        epoch = cache.epoch
        row = self.reader.execute("SELECT value, score FROM elems WHERE db = ? AND key = ? AND sub = ?",
                                  (db, key, sub)).fetchone()
        v = None if row is None else row[0] if row[1] is None else row[1]
        if self._cached:
            cache.fill_elem((db, key), sub, v, epoch)
        return v

    def iter_elems(self, db: int, key: bytes, sub_from: bytes | None = None, sub_to: bytes | None = None,
                   rev: bool = False) -> Iterator[tuple[bytes, Any]]:
        if self._cached:
            cache = self.readcache
            ckey = (db, key)
            elems = cache.all_elems(ckey)
            if elems is not None:
                return sorted_elems(elems, sub_from, sub_to, rev)
            if sub_from is None and sub_to is None and cache.wants_elems(ckey):  # a small collection read whole
                epoch = cache.epoch
                items = [(sub, value if score is None else score) for sub, value, score in self.reader.execute(
                    "SELECT sub, value, score FROM elems WHERE db = ? AND key = ? ORDER BY sub", (db, key))]
                cache.fill_elems(ckey, items, epoch)
                return _yield_all(items[::-1] if rev else items)
        return self._iter_elems(db, key, sub_from, sub_to, rev)

    def _iter_elems(self, db: int, key: bytes, sub_from: bytes | None, sub_to: bytes | None,
                    rev: bool) -> Iterator[tuple[bytes, Any]]:
        order = "DESC" if rev else ""
        if sub_from is None:
            cur = self.reader.execute(
                f"SELECT sub, value, score FROM elems WHERE db = ? AND key = ? ORDER BY sub {order}", (db, key))
        elif sub_to is None:  # open above: HSCAN/SSCAN resume after a sub and stop when they have enough
            cur = self.reader.execute(
                f"SELECT sub, value, score FROM elems WHERE db = ? AND key = ? AND sub >= ? ORDER BY sub {order}",
                (db, key, sub_from))
        else:
            cur = self.reader.execute(
                f"SELECT sub, value, score FROM elems WHERE db = ? AND key = ? AND sub >= ? AND sub < ? "
                f"ORDER BY sub {order}", (db, key, sub_from, sub_to))
        for sub, value, score in cur:
            yield sub, (value if score is None else score)

    def elem_at(self, db: int, key: bytes, offset: int) -> bytes | None:
        row = self.reader.execute("SELECT sub FROM elems WHERE db = ? AND key = ? ORDER BY sub LIMIT 1 OFFSET ?",
                                  (db, key, offset)).fetchone()
        return None if row is None else row[0]  # type: ignore[no-any-return]

    def scan_keys(self, db: int, after: bytes | None, limit: int) -> list[tuple[bytes, int, int | None]]:
        if after is None:
            cur = self.reader.execute("SELECT key, type, expires_at FROM keys WHERE db = ? ORDER BY key LIMIT ?",
                                      (db, limit))
        else:
            cur = self.reader.execute(
                "SELECT key, type, expires_at FROM keys WHERE db = ? AND key > ? ORDER BY key LIMIT ?",
                (db, after, limit))
        return cur.fetchall()

    def count_live_keys(self, db: int, now_ms: int) -> int:
        row = self.reader.execute(
            "SELECT count(*) FROM keys WHERE db = ? AND (expires_at IS NULL OR expires_at > ?)", (db, now_ms)
        ).fetchone()
        return int(row[0])

    def dbmap(self) -> list[int] | None:
        row = self.reader.execute("SELECT value FROM meta WHERE name = 'dbmap'").fetchone()
        return None if row is None else [int(x) for x in json.loads(row[0])]

    def max_db(self) -> int:
        row = self.reader.execute("SELECT max(db) FROM keys").fetchone()
        return -1 if row[0] is None else int(row[0])

    def random_key(self, db: int, rng: random.Random) -> bytes | None:
        """A random descent over the key index, two point reads a level (``keys`` has no rowid to draw).

        [lo, hi] starts as the first and last keys; a probe strictly above lo and
        at most hi, picked at the first byte where they differ, finds a key m
        (lo < m <= hi); the range becomes [lo, key before m] or [m, hi], a coin
        toss each. Every key can be reached, nearer the root of an unbalanced
        split more often; about log2(keys) levels (~40 point reads for a
        million keys), at most :data:`RANDOM_KEY_LEVELS`.
        """
        reader = self.reader
        with self.snapshot():  # one state of the file throughout: a flush may commit between two reads
            first = reader.execute("SELECT key FROM keys WHERE db = ? ORDER BY key LIMIT 1", (db,)).fetchone()
            if first is None:
                return None
            lo: bytes = first[0]
            hi: bytes = reader.execute("SELECT key FROM keys WHERE db = ? ORDER BY key DESC LIMIT 1",
                                       (db,)).fetchone()[0]
            for _ in range(RANDOM_KEY_LEVELS):
                if lo == hi:
                    return lo
                i = 0
                while i < len(lo) and lo[i] == hi[i]:
                    i += 1
                probe = hi[:i] + bytes([rng.randint(lo[i] + 1 if i < len(lo) else 0, hi[i])])
                m: bytes = reader.execute("SELECT key FROM keys WHERE db = ? AND key >= ? ORDER BY key LIMIT 1",
                                          (db, probe)).fetchone()[0]
                if rng.random() < 0.5:
                    lo = m
                else:
                    hi = reader.execute("SELECT key FROM keys WHERE db = ? AND key < ? ORDER BY key DESC LIMIT 1",
                                        (db, m)).fetchone()[0]
            return lo if rng.random() < 0.5 else hi

    def get_mem(self, ns: str, key: str) -> MemRow | None:
        cache = self.readcache
        if self._cached:
            row = cache.row((ns, key), 4)
            if row is not None:
                return row  # type: ignore[return-value]
        epoch = cache.epoch
        row = self.reader.execute(
            "SELECT value, version, created_at, updated_at, expires_at, ttl FROM mem_items WHERE ns = ? AND key = ?",
            (ns, key)).fetchone()
        if row is not None and self._cached:
            cache.fill((ns, key), row, epoch, 4)
        return row  # type: ignore[no-any-return]

    def mem_heads(self, idents: list[tuple[str, str]]) -> dict[tuple[str, str], tuple[MemRow | None, int]]:
        heads: dict[tuple[str, str], tuple[MemRow | None, int]] = {}
        step = statements.MEM_HEADS_MAX
        for i in range(0, len(idents), step):
            chunk = idents[i:i + step]
            size = 1 << (len(chunk) - 1).bit_length()  # a power of two: a few cached plans for every run
            chunk += [chunk[-1]] * (size - len(chunk))
            for row in self.reader.execute(_heads_sql(size), list(itertools.chain.from_iterable(chunk))):
                heads[(row[0], row[1])] = (None if row[3] is None else row[2:8], row[8])
        return heads

    def mem_history(self, ns: str, key: str, keep: int, since_ms: int, limit: int | None) -> list[HistoryRow]:
        n = keep if limit is None else min(keep, limit)
        return self.reader.execute(
            "SELECT version, value, created_at, updated_at, superseded_at, deleted FROM mem_history "
            "WHERE ns = ? AND key = ? AND superseded_at > ? ORDER BY version DESC LIMIT ?",
            (ns, key, since_ms, n)).fetchall()

    # ---- slow reads (worker threads, pooled connections) ------------------------------

    async def search_mem(self, prefix: str, query: str | None, conds: list[Cond], limit: int, offset: int,
                         now_ms: int, scope: Scope = (), vector: Any = None) -> list[SearchRow]:
        if vector is None:
            return await self._in_pool(search.search_mem, self._rank, prefix, query, conds, limit, offset, now_ms,
                                       scope)
        index = self._index_of(prefix)
        if index is None:
            raise CommandError(f"no vector index covers namespace prefix {prefix!r} (it was dropped meanwhile)")
        return await self._in_pool(search.vector_search, self._rank, index, vector, prefix, query, conds, limit,
                                   offset, now_ms, scope)

    async def mem_namespaces(self, prefix: str, now_ms: int) -> list[str]:
        return await self._in_pool(search.mem_namespaces, prefix, now_ms)

    async def _in_pool(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` in a worker thread on a pooled read connection.

        For reads that can take milliseconds (FTS ranking over many matches, filter scans):
        on the event loop they would stall every other client; sqlite3 releases the GIL
        while it steps, so here they run beside the loop. One statement reads one
        committed state, so no snapshot is needed.
        """
        def run() -> T:
            conn = self._pool.pop() if self._pool else self._open_reader()
            try:
                return fn(conn, *args)
            finally:
                if self._reader is None:  # the store closed meanwhile: nobody will close it later
                    conn.close()
                else:
                    self._pool.append(conn)
        return await anyio.to_thread.run_sync(run, limiter=self._pool_limiter)

    # ---- writes (the writer connection, one transaction per thread call) ------------------

    async def _in_writer(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(writer)`` in a worker thread, one call at a time.

        Shielded: a cancelled caller cannot stop SQL already running in the thread, so it
        waits for it (a transaction left open would fail the next writer's BEGIN).
        """
        with anyio.CancelScope(shield=True):
            async with self._writer_limiter:
                writer = self._writer
                if writer is None:
                    raise StoreError("store is closed")
                try:
                    return await anyio.to_thread.run_sync(fn, writer)
                except sqlite3.DatabaseError as exc:
                    if type(exc) is sqlite3.DatabaseError:  # corrupt, or not a database (not a busy or full disk)
                        raise StoreDamagedError(f"{self.path}: {exc}") from exc
                    raise

    def _transaction(self, writer: sqlite3.Connection, groups: Groups) -> None:
        """One BEGIN IMMEDIATE transaction of executemany groups (empty ones skipped); in the writer's thread."""
        writer.execute("BEGIN IMMEDIATE")
        try:
            for sql, rows in groups:
                if not rows:
                    continue
                if self._bulk is not None and len(rows) > 1:
                    # the GIL released for each batch; reading a batch's values into C holds it, so
                    # batches are bounded (1,000,000 rows at once held it ~100 ms: the loop stalled)
                    for i in range(0, len(rows), BULK_ROWS):
                        csqlite.ext.executemany(writer, self._bulk, sql, rows if len(rows) <= BULK_ROWS
                                                else rows[i:i + BULK_ROWS])
                else:
                    writer.executemany(sql, rows)
            writer.execute("COMMIT")
        except BaseException:
            if writer.in_transaction:  # SQLite may have rolled back already (SQLITE_FULL, I/O errors)
                writer.execute("ROLLBACK")
            raise

    async def flush(self, table: Memtable) -> None:
        """Write a frozen memtable: its rows built on the loop in steps, written in the writer's thread,
        then the read cache brought up to date on the loop in steps (see memd.steps for why the Python
        parts are not in the thread)."""
        assert table.frozen
        with anyio.CancelScope(shield=True):  # (a cancelled caller waits for the flush: it is whole or not at all)
            await self._flush(table)

    async def _flush(self, table: Memtable) -> None:
        rows = empty_rows()
        await run_on_loop(flush_row_steps(table, rows, tuple(self._specs)))
        created = await run_on_loop(_key_pairs(rows.upserts))
        groups = list(zip(statements.FLUSH, rows))

        def work(writer: sqlite3.Connection) -> None:
            try:
                self._transaction(writer, [*groups, (statements.SET_FLUSHED_LSN, [(table.max_lsn,)])])
                table.committed = True  # (a retry of this flush must archive and unindex every memory)
            except BaseException:
                self.readcache.clear()  # (the rows did not change; but what a failure left is not worth a doubt)
                raise
            self._apply_vectors(table)

        await run_on_loop(self.keyfilter.add_steps(created))  # before the commit: never a false negative
        try:
            await self._in_writer(work)
        finally:
            self.keyfilter.committed(created)
        # after the commit, before the engine drops the frozen layer (which answers for these keys meanwhile)
        await run_on_loop(self.readcache.apply_flush_steps(rows))
        self.flushed_lsn = table.max_lsn
        await run_on_loop(release_steps(rows))  # (FlushRows: its lists)

    async def maintain_keyfilter(self) -> None:
        """Build the key filter if it is not ready or has worn (on the loop in steps, on a connection of its own)."""
        if self._keyfilter_building or self.keyfilter.ready and not self.keyfilter.needs_rebuild():
            return
        self._keyfilter_building = True
        try:
            counts = await anyio.to_thread.run_sync(_count_keys, self.path)  # (SQLite steps without the GIL)
            conn = connect_ro(self.path)
            try:
                await run_on_loop(self.keyfilter.build_steps(conn, counts))  # (see KeyFilter.build_steps)
            finally:
                conn.close()
        finally:
            self._keyfilter_building = False

    def keyfilter_stats(self) -> dict[str, int | float]:
        return self.keyfilter.stats()

    async def execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """One statement on the writer connection (tests, repairs by hand); it may change any row: the
        read cache is emptied after it."""
        def work(writer: sqlite3.Connection) -> list[Any]:
            try:
                return writer.execute(sql, params).fetchall()
            finally:
                self.readcache.clear()
        return await self._in_writer(work)

    def configure_readcache(self, max_bytes: int) -> None:
        """A new bound for the read cache (0: off); takes effect at once."""
        self.readcache.resize(max_bytes)
        if self._reader is None or not self._reader.in_transaction:  # (a snapshot restores it at its end)
            self._cached = self.readcache.enabled

    # ---- compaction (the caller holds the engine's flush lock: no flush interleaves) ----------

    def expired_keys(self, now_ms: int, limit: int) -> list[tuple[int, bytes]]:
        return self.reader.execute(  # type: ignore[no-any-return]
            "SELECT db, key FROM keys WHERE expires_at IS NOT NULL AND expires_at <= ? LIMIT ?", (now_ms, limit)
        ).fetchall()

    def expired_memories(self, now_ms: int, limit: int) -> list[tuple[str, str]]:
        return self.reader.execute(  # type: ignore[no-any-return]
            "SELECT ns, key FROM mem_items WHERE expires_at IS NOT NULL AND expires_at <= ? AND value IS NOT NULL "
            "LIMIT ?", (now_ms, limit)).fetchall()

    async def purge(self, keys: list[tuple[int, bytes]], expired: list[tuple[str, str]]) -> None:
        """Delete expired keys (triggers take their elements); archive and unindex expired memories
        (their version ends at its expiry) and leave a tombstone: it keeps the version count, so a
        later put never reuses a version number, in one transaction."""
        fts = [(*ident, ns_tokens(ident[0])) for ident in expired]
        archive = [(*ident, 1 << 62, 0, 1 << 62, 0) for ident in expired]  # ended at their expiry (the CASE)
        groups: Groups = [(statements.DELETE_KEY, list(keys)), (statements.ARCHIVE_MEM, archive),
                          (statements.UNINDEX_MEM, fts), (statements.TOMBSTONE_MEM, list(expired)),
                          (statements.DELETE_VECTORS, list(expired) if self._specs else [])]

        def work(writer: sqlite3.Connection) -> None:
            try:
                self._transaction(writer, groups)
            finally:
                self.readcache.invalidate([*keys, *expired])  # after the commit (or its failure)
            self._replace_vectors([(ns, key, None, ()) for ns, key in expired])
        if any(rows for _, rows in groups):
            await self._in_writer(work)

    async def prune_history(self, keep: int, before_ms: int) -> int:
        def work(writer: sqlite3.Connection) -> int:
            n0 = writer.execute("SELECT count(*) FROM mem_history").fetchone()[0]
            self._transaction(writer, [(statements.PRUNE_HISTORY, [(keep, before_ms)])])
            return int(n0 - writer.execute("SELECT count(*) FROM mem_history").fetchone()[0])
        return await self._in_writer(work)

    async def checkpoint(self, truncate_over: int) -> str:
        """Checkpoint SQLite's WAL: PASSIVE always; TRUNCATE when the file grew past ``truncate_over``
        bytes and no reader holds it (a busy TRUNCATE is skipped, not waited for)."""
        wal = self.path + "-wal"

        def work(writer: sqlite3.Connection) -> str:
            writer.execute("PRAGMA wal_checkpoint(PASSIVE)")
            if not os.path.exists(wal) or os.path.getsize(wal) <= truncate_over:
                return "passive"
            writer.execute("PRAGMA busy_timeout = 0")
            try:
                busy = writer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            finally:
                writer.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            return "truncate-busy" if busy else "truncate"
        return await self._in_writer(work)

    async def vacuum(self) -> int:
        """Return free pages to the file system (incremental vacuum), refresh planner stats; pages freed.

        Run it before :meth:`checkpoint`: in WAL mode the file shrinks when the checkpoint
        copies the truncated database back.
        """
        def work(writer: sqlite3.Connection) -> int:
            free = int(writer.execute("PRAGMA freelist_count").fetchone()[0])
            # it frees one page per step and returns no rows, so execute() would free just one page;
            # executescript() (sqlite3_exec) steps it to the end
            writer.executescript("PRAGMA incremental_vacuum;")
            writer.execute("PRAGMA optimize")
            return free
        free = await self._in_writer(work)
        self.shrink_memory()
        return free

    def shrink_memory(self) -> None:
        """Drop the event loop's reader's page cache (it refills from the file as reads need it).

        The read cache is not emptied here: the memory watchdog sheds it first, by its own bytes.
        """
        try:
            self.reader.execute("PRAGMA shrink_memory")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot shrink the read cache of {self.path}: {exc}") from exc

    def disk_bytes(self) -> int:
        """The database file plus its -wal file."""
        return sum(os.path.getsize(p) for p in (self.path, self.path + "-wal") if os.path.exists(p))

    # ---- backup -----------------------------------------------------------------

    def copy_to(self, dest: str) -> int:
        """Copy the database to ``dest`` as of one commit; return that copy's flushed LSN.

        Runs in a worker thread on two connections of its own. SQLite's backup
        API in a single step holds one read transaction on the source: in WAL
        mode a flush committing meanwhile neither waits for it nor restarts
        it. The copy is switched to a rollback journal so it is one
        self-contained file (the next open by memd turns WAL back on).
        """
        src = connect_ro(self.path)
        dst = sqlite3.connect(dest, isolation_level=None)
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode = DELETE")
            return int(dst.execute("SELECT value FROM meta WHERE name = 'flushed_lsn'").fetchone()[0])
        finally:
            dst.close()
            src.close()


def _count_keys(path: str) -> dict[int, int]:
    conn = connect_ro(path)
    try:
        return count_keys(conn)
    finally:
        conn.close()


def _key_pairs(upserts: list[tuple[Any, ...]]) -> Generator[None, None, list[tuple[int, bytes]]]:
    """The (db, key) of each upserted row, for the key filter, in steps (a C call per slice); returns them."""
    pairs: list[tuple[int, bytes]] = []
    for i in range(0, len(upserts), _PAIRS_STEP):
        pairs.extend(map(_DB_KEY, upserts[i:i + _PAIRS_STEP]))
        yield
    return pairs


def _yield_all(items: list[tuple[bytes, Any]]) -> Iterator[tuple[bytes, Any]]:
    """A list as a generator (callers of ``iter_elems`` may ``close()`` it)."""
    yield from items
