"""The write-behind engine: the one object the command layer talks to.

Public API (stable; the server is built against it)::

    async with Engine(data_dir, fsync="everysec", ...) as engine:
        ks = engine.keyspace          # typed reads and writes, all synchronous (database 0;
                                      # engine.keyspace_of(n) for SELECT n)
        await engine.admit()          # backpressure gate: call before running write commands
        ks.set(b"k", b"v")            # applies to the memtable + frames a WAL record (no I/O)
        with engine.batch():          # MULTI/EXEC: every op inside becomes ONE WAL record
            ks.incrby(b"n", 1); ks.rpush(b"l", [b"x"])
        await engine.wait_durable()   # reply only after this: durability per fsync policy
        await engine.sync()           # WAITAOF barrier: everything so far is fsynced
        await engine.flush()          # MEMD.FLUSH
        engine.stats()                # figures for INFO / MEMD.STATS

Why reads and writes are synchronous: a command must be atomic. Running it
start to finish on the event-loop thread — memtable lookups, and for flushed
data a microsecond point read on a read-only sqlite3 connection — means no
other command can interleave. The only awaits are *around* commands:
``admit()`` before (bounded wait when the buffer is full) and
``wait_durable()`` after (group commit). The server processes a whole
pipelined batch of commands between those two awaits, so one write()+fsync
serves the batch.

Writes: every op is framed into the WAL's pending chunk with the next LSN
*before* the memtable sees it, so nothing is visible that is not logged.
Flush: past ``flush_max_records`` writes / ``flush_max_bytes`` / ``flush_max_age`` (or
``flush_max_memories`` memories buffered)
the active memtable is frozen (it keeps serving reads), the WAL rotates, the
frozen table is written to SQLite in one transaction that also stores its
highest LSN, and the WAL segments it covered are deleted.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import anyio
import anyio.lowlevel
import anyio.abc

from memd.engine.fileops import FileOps
from memd.engine.keyspace import M_EXPIRES_AT, Keyspace
from memd.engine.memories import Memories
from memd.engine.memtable import Memtable
from memd.engine.memtable import DbTable
from memd.engine.records import (
    DEFAULT_DATABASES, OP_DEL, OP_FLUSHALL, OP_FLUSHDB, OP_SELECT, OP_SET, OP_SWAPDB, OP_UPDATE, T_LIST, T_STREAM,
    T_ZSET, Op)
from memd.engine.wal import WAL, RecoveryReport
from memd.errors import CommandError, DataDirLockedError, DurabilityError, OverloadError, StoreDamagedError, StoreError
from memd.release import release_steps
from memd.steps import run_on_loop
from memd.store.base import Store
from memd.store.schema import MigrationProgress
from memd.store.sqlite import SqliteStore
from memd.histogram import Histogram, latency_buckets
from memd.looplag import LoopLag

log = logging.getLogger("memd.engine")
_KEYED_OPS = (OP_SET, OP_DEL, OP_UPDATE)
_WAKING_TYPES = (T_LIST, T_ZSET)  # the types a blocked client waits for (BLPOP..., BZPOPMIN...)
_EVERY_KEY_OPS = (OP_SWAPDB, OP_FLUSHDB, OP_FLUSHALL)  # may change what any waited-on key holds

DEFAULT_FLUSH_MAX_RECORDS = 100_000
DEFAULT_FLUSH_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_FLUSH_MAX_AGE = 5.0
DEFAULT_BUFFER_MAX_BYTES = 512 * 1024 * 1024
DEFAULT_WRITE_TIMEOUT = 5.0
FLUSH_BUCKETS = latency_buckets(0.001, 50)  # 1 ms (a few keys) .. 50 s (a full 64MiB buffer on a slow disk)
RECOVERY_PROGRESS_SECONDS = 1.0  # how often a long replay reports progress (systemd extends its start timeout)
LOCK_NAME = "memd.lock"
_STAMP_BUCKETS = 1 << 16  # WATCH may see a false conflict (1 in 65536 per pair of keys), never miss one
DB_NAME = "memd.sqlite3"
WAL_DIR = "wal"


@dataclass(frozen=True, slots=True)
class WatchMark:
    """What WATCH saw of a key: the physical database it was in, its write stamp, that database's
    flush stamp, and whether (and until when) it lived."""

    db: int
    stamp: int
    flush: int
    existed: bool
    expires_at: int | None


def lock_data_dir(data_dir: str) -> int:
    """Take the data directory's exclusive lock; return its fd (keep it open)."""
    os.makedirs(data_dir, mode=0o750, exist_ok=True)
    path = os.path.join(data_dir, LOCK_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise DataDirLockedError(
            f"{data_dir} is in use by another memd process (pid {holder}): stop it first, "
            "or point --data-dir elsewhere") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


# Memories buffered that start a flush. A memory costs its flush ~100x what a string key does
# (FTS5 indexing, ~70 µs per 1 KB memory), so bulk ingest flushed by records or bytes built one
# flush of ~60,000 memories that ran for seconds after the last put was acknowledged (and every
# search meanwhile waited for it). Flushing every few thousand memories keeps the indexing running
# on the other core while the puts arrive: a 30,000-memory load became searchable 1.6x sooner.
FLUSH_MAX_MEMORIES = 2048


class Engine:
    """WAL + memtables + SQLite, with background syncer and flusher tasks."""

    def __init__(self, data_dir: str, *, fsync: str = "everysec", recovery: str = "tolerate-tail",
                 wal_segment_bytes: int = 64 * 1024 * 1024, wal_compress_min: int = 1024,
                 flush_max_records: int = DEFAULT_FLUSH_MAX_RECORDS, flush_max_bytes: int = DEFAULT_FLUSH_MAX_BYTES,
                 flush_max_age: float = DEFAULT_FLUSH_MAX_AGE, buffer_max_bytes: int = DEFAULT_BUFFER_MAX_BYTES,
                 write_timeout: float = DEFAULT_WRITE_TIMEOUT, clock: Callable[[], float] = time.time,
                 fileops: FileOps | None = None, recovery_progress: Callable[[int], None] | None = None,
                 store: Store | None = None, migration_progress: MigrationProgress | None = None,
                 databases: int = DEFAULT_DATABASES) -> None:
        self.data_dir = data_dir
        self.recovery_progress = recovery_progress  # called with records replayed so far, ~every second
        self.recovery_mode = recovery
        self.flush_max_records = flush_max_records
        self.flush_max_bytes = flush_max_bytes
        self.flush_max_age = flush_max_age
        self.flush_max_memories = FLUSH_MAX_MEMORIES
        self.buffer_max_bytes = buffer_max_bytes
        self.write_timeout = write_timeout
        self.clock = clock  # wall-clock seconds; read through now_ms(), which never runs backwards
        self._now_ms = 0  # the latest answer of now_ms()
        self._held_from = 0  # while memd's clock holds: the wall clock's last reading (lower: a new step back)
        self._held_at = -1  # ... and the time memd's clock holds at
        self.clock_steps_back = 0  # times the wall clock was seen stepping back (memd's clock held meanwhile)
        self.wal = WAL(os.path.join(data_dir, WAL_DIR), fsync=fsync, segment_bytes=wal_segment_bytes,
                       compress_min=wal_compress_min, fileops=fileops)
        self.store: Store = store if store is not None else SqliteStore(os.path.join(data_dir, DB_NAME),
                                                                        migration_progress)
        self.store.readcache.now_ms = self.now_ms  # the cache judges expiry by the keyspace's clock
        # Redis database number (SELECT) -> the physical one its data is kept under; SWAPDB swaps two
        # entries (see OP_SWAPDB). Shared with every memtable, which applies the swaps.
        self.dbmap: list[int] = list(range(databases))
        self.active = Memtable(self.dbmap, self.clock)
        self.frozen: Memtable | None = None
        self.keyspaces = [Keyspace(self, db) for db in range(databases)]  # by physical database
        # each physical database's buffer layers, newest first (what its reads merge over SQLite)
        self.db_layers: list[list[DbTable]] = []
        self._refresh_layers()
        self.memories = Memories(self)
        self.last_lsn = 0
        self.recovery_report = RecoveryReport()
        self.flush_error: str | None = None
        self.write_refusal: str | None = None  # the memory watchdog's -OOM text while it refuses writes
        self.abandoned = False  # SHUTDOWN NOSAVE stopped a script that wrote (see abandon)
        self.flush_count = 0
        self.last_flush_seconds = 0.0
        self.last_flush_rows = 0
        self.flush_latency = Histogram(FLUSH_BUCKETS)  # one observation per flush_count (metrics)
        self.after_flush: list[Callable[[], None]] = []  # called on the loop after each flush (the daemon's GC policy)
        self.loop_lag = LoopLag()  # how late the event loop runs: every command (the engine's reads too) waits that
        self.flush_failures = 0  # failed flush attempts (each retried; the WAL keeps every write)
        self.flush_started: float | None = None  # monotonic; set until a flush succeeds (retries keep it)
        self._batch: list[Op] | None = None
        self._held: anyio.Event | None = None  # set while a script in its thread holds the engine (hold())
        self._flush_wanted = anyio.Event()
        self._flushed = anyio.Event()
        self._flush_lock = anyio.Lock()  # one flush at a time: the loop, MEMD.FLUSH and shutdown share it
        self._stamps = [0] * _STAMP_BUCKETS  # WATCH: last LSN that wrote a key hashing here
        self._flush_stamps = [0] * databases  # WATCH: last LSN that flushed (or swapped) each physical database
        self._batch_db = 0  # inside batch(): the database the batch's ops so far leave selected
        self.watching = 0  # connections with a WATCH: stamps are kept only while this is non-zero
        # Blocking commands (see memd.blocking): the keys some client waits on (the server's registry
        # fills it; empty = nobody waits, and apply() pays one truth test), and the keys among them
        # that a write may have changed for a waiting client since the server last looked (see
        # _signal_ready), in the order they became so. ``on_ready`` is called when that set stops being empty (from the
        # thread that applied the write): the server's way to be told of writes it did not run itself.
        self.wake_keys: dict[bytes, int] = {}  # key -> how many databases have clients waiting on it
        self.ready_keys: dict[bytes, None] = {}
        self.on_ready: Callable[[], None] | None = None
        self._lock_fd = -1
        self._tg: anyio.abc.TaskGroup | None = None
        self._closed = False

    # ---- lifecycle -------------------------------------------------------------

    async def __aenter__(self) -> Engine:
        self._lock_fd = lock_data_dir(self.data_dir)
        try:
            os.makedirs(self.wal.directory, mode=0o750, exist_ok=True)
            await self._open_store()
            await self._recover()
            self._tg = anyio.create_task_group()
            await self._tg.__aenter__()
            await self._tg.start(self.wal.run_syncer)
            self._tg.start_soon(self._flush_loop)
            self._tg.start_soon(self.loop_lag.run)
            self._tg.start_soon(self._maintain_keyfilter)  # reads go to SQLite until it is built
        except BaseException:
            await self.store.close()
            os.close(self._lock_fd)
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """Final flush, fsync, close. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            with anyio.CancelScope(shield=True):
                if not self.wal.fatal_error:
                    try:
                        await self.wal.sync()  # the WAL alone now holds everything, whatever happens next
                        await self._flush_all()
                    except Exception as exc:  # noqa: BLE001 - sqlite3 errors too: the WAL must still be closed
                        log.error("final_flush_failed error=%r (the WAL still holds the data)", str(exc))
                await self.wal.close()
        finally:
            # the task group must be left outside the shield: cancel scopes nest strictly
            if self._tg is not None:
                self._tg.cancel_scope.cancel()
                await self._tg.__aexit__(None, None, None)
            with anyio.CancelScope(shield=True):
                await self.store.close()
            os.close(self._lock_fd)
        log.info("engine_closed last_lsn=%d flushed_lsn=%d", self.last_lsn, self.store.flushed_lsn)

    async def _open_store(self) -> None:
        """Open SQLite; a file it cannot read stops the start with what to do (memd never rebuilds it:
        the flushed data is only there, and in the backups)."""
        try:
            await self.store.open()
        except StoreError as exc:
            d = self.data_dir
            raise StoreError(f"{exc}; `memd check --data-dir {d}` shows what is damaged; if the SQLite file is, "
                             f"restore the latest backup with `memd restore BACKUP --data-dir {d}` (what the "
                             "directory held is moved aside, not deleted) and start again") from exc

    def _load_dbmap(self) -> None:
        """Take up the database map the store was flushed with (SWAPDB), fitted to ``databases``.

        The WAL replayed next applies the swaps made since. Fewer databases than the data
        uses would hide keys: refused, with what to do.
        """
        n = len(self.dbmap)
        stored = self.store.dbmap() or []
        if sorted(stored) != list(range(len(stored))):
            raise StoreError(f"the store's database map {stored} is not a permutation: the file is damaged; "
                             f"restore a backup with `memd restore BACKUP --data-dir {self.data_dir}`")
        fitted = stored[:n] + list(range(len(stored), n))
        highest = self.store.max_db()
        if sorted(fitted) != list(range(n)) or highest >= n:  # (swapped with a database above n, or keys there)
            raise StoreError(f"the data uses more than {n} databases and `databases` is {n}: "
                             "raise `databases` in the [server] section (or FLUSHDB/MOVE the keys of the "
                             "databases above it with a memd that has them)")
        self.dbmap[:] = fitted

    async def _recover(self) -> None:
        t0 = time.perf_counter()
        self._load_dbmap()
        report = self.recovery_report
        flushed = self.store.flushed_lsn
        last = flushed
        next_progress = time.monotonic() + RECOVERY_PROGRESS_SECONDS
        with _gc_paused():
            for n, (lsn, ops) in enumerate(self.wal.replay(flushed, self.recovery_mode, report), 1):
                self.active.apply(lsn, ops)
                last = lsn
                if self.recovery_progress is not None and n % 1024 == 0 and time.monotonic() >= next_progress:
                    self.recovery_progress(n)  # systemd: EXTEND_TIMEOUT_USEC while a long WAL replays
                    next_progress = time.monotonic() + RECOVERY_PROGRESS_SECONDS
                if self.active.bytes >= self.buffer_max_bytes or self.active.writes >= 10 * self.flush_max_records:
                    # a WAL bigger than the buffer: flush as we go instead of holding it all in memory
                    self.last_lsn = last
                    await self._recovery_flush(n)
        self.last_lsn = max(last, report.last_lsn, flushed)
        self.wal.start(self.last_lsn + 1)
        report.seconds = time.perf_counter() - t0
        log.info("recovery_done replayed=%d skipped_flushed=%d segments=%d last_lsn=%d flushed_lsn=%d "
                 "truncated=%d skipped_corrupt=%d seconds=%.3f", report.records, report.skipped_flushed,
                 report.segments, self.last_lsn, flushed, len(report.truncated), len(report.skipped_corrupt),
                 report.seconds)

    # ---- time ------------------------------------------------------------------

    def now_ms(self) -> int:
        """Milliseconds since the epoch by the engine's clock; never less than an earlier answer.

        Expiry times are absolute wall-clock times (they survive restarts, as
        in Redis). A wall clock stepping forward by J expires what had less
        than J left: at most J early. Stepping back would revive keys already
        seen expired and stretch every TTL, so memd's time holds still instead
        until the wall clock catches up: keys expire late by at most the step.
        One comparison on the path of reads that look at an expiry.
        """
        now = int(self.clock() * 1000)
        if now >= self._now_ms:
            self._now_ms = now
            return now
        self._clock_held(now)
        return self._now_ms

    def _clock_held(self, wall_ms: int) -> None:
        """Count and log each step back once, not at every reading while memd's clock holds."""
        if wall_ms < self._held_from or self._held_at != self._now_ms:  # a new step (not one seen again)
            self.clock_steps_back += 1
            self._held_at = self._now_ms
            log.warning("clock_stepped_back by_ms=%d holding_at_ms=%d (memd's time stands still until the wall "
                        "clock catches up; keys expire late by at most that, never early; a restart follows the "
                        "wall clock at once)", self._now_ms - wall_ms, self._now_ms)
        self._held_from = wall_ms

    async def _recovery_flush(self, records: int) -> None:
        """Flush what recovery has buffered so far, reporting progress every second while it runs.

        The flush is one SQLite transaction in the writer's thread: a full buffer into a big store
        takes minutes (1,000,000 WAL records into a 10,000,000-key store recovered in 71-149 s on a
        loaded 2-core machine, most of it this flush; benchmarks/bench_bigstore.py). Unreported,
        systemd's start timeout kills it, and the restart replays into the same flush. The flush
        ends or fails by itself: SQLite's busy timeout bounds a wait for a lock.
        """
        table = self._freeze(rotate=False)
        report = self.recovery_progress
        if report is None:
            await self._flush_frozen(table)
            return

        async def keep_reporting() -> None:
            while True:
                await anyio.sleep(RECOVERY_PROGRESS_SECONDS)
                report(records)

        async with anyio.create_task_group() as tg:
            tg.start_soon(keep_reporting)
            await self._flush_frozen(table)
            tg.cancel_scope.cancel()

    # ---- writes ----------------------------------------------------------------

    def apply(self, ops: list[Op]) -> None:
        """Log and apply one command's effects (inside :meth:`batch`: collect them)."""
        if not ops:
            return
        lsn = self.last_lsn + 1
        if self.watching:
            self._stamp(lsn, ops)
        if self.wake_keys:
            self._signal_ready(ops)
        if self._batch is not None:
            self.active.apply(lsn, ops)  # visible to the rest of the transaction
            self._batch_extend(ops)
            return
        self.wal.check_writable()
        self.wal.append(lsn, ops)
        self.last_lsn = lsn
        self.active.apply(lsn, ops)
        self._maybe_flush()

    def _signal_ready(self, ops: list[Op]) -> None:
        """Note the waited-on keys these ops may have changed for a waiting client (Redis's
        signalKeyAsReady): a list or a sorted set left with elements (BLPOP, BZPOPMIN...), a key
        created, overwritten or deleted (a new stream for XREAD; a stream gone under XREADGROUP,
        whose clients get an error). A stream's own updates signal through :meth:`signal_key`
        instead: only a new entry or a destroyed group wakes its readers, as in Redis, not every
        XACK or XSETID. Whether the key now serves a waiting client is for the server to check
        when it looks (type, elements, ids). Keys only, never databases: a key written in one
        database is looked at in every database where a client waits on it, where those checks
        reject the ones that did not change."""
        wake, ready = self.wake_keys, self.ready_keys
        for op in ops:
            code = op[0]
            if code in _EVERY_KEY_OPS:  # (scanDatabaseForReadyKeys, scanDatabaseForDeletedStreams)
                if not ready and self.on_ready is not None:
                    self.on_ready()
                ready.update(dict.fromkeys(wake))
            elif code in _KEYED_OPS and op[1] in wake and op[1] not in ready:
                if code == OP_UPDATE and (op[2] in _WAKING_TYPES and op[5] <= 0 or op[2] == T_STREAM and not op[3]):
                    continue  # a list or sorted set emptied; a stream's own update (see signal_key)
                if not ready and self.on_ready is not None:
                    self.on_ready()
                ready[op[1]] = None

    def signal_key(self, key: bytes) -> None:
        """Mark ``key`` ready for the clients waiting on it: a write that the ops alone do not tell
        apart wakes them (a stream's new entry, one of its groups destroyed). Called after that
        write is applied."""
        if key in self.wake_keys and key not in self.ready_keys:
            if not self.ready_keys and self.on_ready is not None:
                self.on_ready()
            self.ready_keys[key] = None

    def _batch_extend(self, ops: list[Op]) -> None:
        """Add one apply()'s ops to the batch's record, keeping each op in its database.

        Each apply()'s ops start in database 0 (a keyspace of another database leads with an
        OP_SELECT), while the batch's record is one op list: an op list that starts in database 0
        after ops that selected another one gets an OP_SELECT 0 first.
        """
        batch = self._batch
        assert batch is not None
        if self._batch_db and ops[0][0] != OP_SELECT:
            batch.append((OP_SELECT, 0))
            self._batch_db = 0
        batch.extend(ops)
        for op in ops:
            if op[0] == OP_SELECT:
                self._batch_db = op[1]

    def _stamp(self, lsn: int, ops: list[Op]) -> None:
        stamps = self._stamps
        db = 0
        for op in ops:
            code = op[0]
            if code in _KEYED_OPS:
                stamps[(hash(op[1]) + db) & (_STAMP_BUCKETS - 1)] = lsn
            elif code == OP_SELECT:
                db = op[1]
            elif code == OP_FLUSHDB:
                self._flush_stamps[db] = lsn
            elif code == OP_FLUSHALL:
                self._flush_stamps = [lsn] * len(self._flush_stamps)
            elif code == OP_SWAPDB:  # what either Redis database holds changes: as a flush of both
                self._flush_stamps[self.dbmap[op[1]]] = lsn
                self._flush_stamps[self.dbmap[op[2]]] = lsn

    def key_stamp(self, key: bytes, db: int) -> int:
        """A value that changes whenever ``key`` of physical database ``db`` may have been written while
        ``watching`` (WATCH).

        Stamps are not updated while nobody watches; that is safe: a WATCH
        records the current stamp and every later write moves it. FLUSHALL
        is not in it: :meth:`watch_broken` decides what a flush means.
        """
        return self._stamps[(hash(key) + db) & (_STAMP_BUCKETS - 1)]

    def watch_mark(self, db: int, key: bytes) -> WatchMark:
        """What WATCH records of ``key`` of Redis database ``db`` now, for :meth:`watch_broken` at EXEC."""
        ks = self.keyspace_of(db)
        meta = ks.meta(key)
        return WatchMark(ks.db, self.key_stamp(key, ks.db), self._flush_stamps[ks.db], meta is not None,
                         None if meta is None else meta[M_EXPIRES_AT])

    def watch_broken(self, db: int, key: bytes, mark: WatchMark) -> bool:
        """Whether a transaction that watched ``key`` of Redis database ``db`` (``mark``) must abort, by Redis
        7.0's rules (multi.c).

        - a write that may have touched the key (its stamp moved) aborts;
        - FLUSHALL / FLUSHDB abort only if the key existed when watched: a
          key that did not exist, or had already expired, is not changed by
          a flush (``touchAllWatchedKeysInDb``); had it been created since,
          its stamp would have moved;
        - SWAPDB counts as a flush of both databases, and aborts as well if the
          key exists after it (Redis: if it exists in either database);
        - a key alive when watched that has expired since aborts
          (``isWatchedKeyExpired``): nobody wrote it, yet what the
          transaction read is gone. With its stamp unmoved, its expiry is
          still the one recorded.
        """
        if self.key_stamp(key, mark.db) != mark.stamp:
            return True
        if self._flush_stamps[mark.db] != mark.flush:
            return mark.existed or self.keyspace_of(db).peek(key) is not None
        return mark.existed and mark.expires_at is not None and mark.expires_at <= self.now_ms()

    # ---- databases ---------------------------------------------------------------

    @property
    def databases(self) -> int:
        return len(self.dbmap)

    @property
    def keyspace(self) -> Keyspace:
        """Redis database 0's keyspace."""
        return self.keyspace_of(0)

    def keyspace_of(self, db: int) -> Keyspace:
        """Redis database ``db``'s keyspace (0 <= db < databases: SELECT checks)."""
        return self.keyspaces[self.dbmap[db]]

    def swapdb(self, first: int, second: int) -> None:
        """SWAPDB of two Redis databases (0 <= each < databases): one WAL op that swaps their map entries."""
        if first != second:
            self.apply([(OP_SWAPDB, first, second)])

    def _refresh_layers(self) -> None:
        """Rebuild :attr:`db_layers` (after the active or frozen memtable changed)."""
        tables = self.layers()
        self.db_layers = [[t.dbs[db] for t in tables] for db in range(len(self.dbmap))]

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Everything applied inside becomes one WAL record: all or nothing after a crash."""
        self.begin_batch()
        try:
            yield
        finally:
            self.end_batch()

    @property
    def in_batch(self) -> bool:
        """True between :meth:`begin_batch` and :meth:`end_batch` (a transaction or a script is running)."""
        return self._batch is not None

    def begin_batch(self) -> None:
        """:meth:`batch` split in two, for a batch whose body runs across an await (a script in its thread)."""
        if self._batch is not None:
            raise RuntimeError("batches do not nest")
        self.wal.check_writable()
        self._batch = []
        self._batch_db = 0

    def end_batch(self) -> None:
        """Log what the batch applied as ONE WAL record (on the loop thread: the WAL is the loop's)."""
        ops, self._batch = self._batch, None
        if ops and not self.abandoned:
            lsn = self.last_lsn + 1
            self.wal.append(lsn, ops)
            self.last_lsn = lsn  # the memtable already saw the ops under this LSN
            self._maybe_flush()

    def hold(self) -> None:
        """A script runs in another thread and writes to the active memtable: no flush may freeze it.

        The loop may run meanwhile (it answers -BUSY), and so may the flush task: a flush of the
        frozen table already under way goes on (it reads only that table), but no new freeze
        happens until :meth:`release`. Reads merge the layers either side of that flush's end
        correctly: the frozen table is dropped only after SQLite has its rows.
        """
        if self._held is None:
            self._held = anyio.Event()

    def abandon(self) -> None:
        """SHUTDOWN NOSAVE while a script that wrote runs in its thread (Redis's way out of a script
        SCRIPT KILL may not stop): the batch under way is never logged, the buffer that holds its writes
        never reaches SQLite (the final flush writes only a table frozen before), and writes are refused
        from now on, so that nothing builds on what the script left. The synced WAL is then all that
        survives of the buffer, as after a crash: every committed write, and none of the script's."""
        self.abandoned = True

    def release(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            held.set()

    async def _unheld(self) -> None:
        while self._held is not None:
            await self._held.wait()

    def check_writable(self) -> None:
        """Raise the error a write would get right now (WAL failure, memory watchdog), if any."""
        self.wal.check_writable()
        if self.write_refusal is not None:
            raise OverloadError(self.write_refusal)
        if self.abandoned:
            raise CommandError("memd is shutting down (SHUTDOWN NOSAVE)")

    async def admit(self) -> None:
        """Backpressure: wait (bounded) while the buffer is over its cap.

        Also the writers' yield point: when a flush is due but its task has not run yet, let it
        start. A writer whose awaits never suspend (everysec acks are written on its own thread)
        would otherwise keep the event loop to itself and the flush would start only when it
        stops: measured 3.3 s of writes then 5.3 s of flush, in series, for 300,000 keys.
        """
        self.check_writable()
        if self._flush_wanted.is_set():
            await anyio.lowlevel.checkpoint()
        if not self.over_capacity():
            return
        self._flush_wanted.set()
        with anyio.move_on_after(self.write_timeout):
            while self.over_capacity():
                await self._flushed.wait()
            return
        raise OverloadError(
            f"write buffer full: {self.buffered_bytes()} bytes buffered, backpressure.buffer_max_bytes = "
            f"{self.buffer_max_bytes}; the flush to SQLite is behind ({self.flush_error or 'still running'}); "
            "retry later, or raise the limit")

    def over_capacity(self) -> bool:
        """True when a write must go through :meth:`admit` (and may wait) first."""
        return self.buffered_bytes() > self.buffer_max_bytes

    def durable_now(self, lsn: int) -> bool:
        """Reach the policy's durability for ``lsn`` without awaiting, if possible.

        ``everysec`` / ``no``: write() what is pending (on this thread) and
        return True. ``always``: True only if an fsync already covered it.
        Raises DurabilityError like :meth:`wait_durable`.
        """
        return self.wal.reached_without_wait(lsn)

    def is_durable(self, lsn: int) -> bool:
        """Whether ``lsn`` already has the durability the fsync policy promises."""
        wal = self.wal
        return (wal.synced_lsn if wal.policy == "always" else wal.written_lsn) >= lsn

    async def wait_durable(self, lsn: int | None = None) -> None:
        """Return when writes up to ``lsn`` (default: all so far) are durable per the fsync policy."""
        await self.wal.wait(self.last_lsn if lsn is None else lsn)

    async def sync(self, lsn: int | None = None) -> None:
        """WAITAOF barrier: writes up to ``lsn`` (default: all so far) are fsynced, whatever the policy."""
        await self.wal.sync(self.last_lsn if lsn is None else lsn)

    @property
    def fsync_policy(self) -> str:
        return self.wal.policy

    @fsync_policy.setter
    def fsync_policy(self, policy: str) -> None:
        self.wal.set_policy(policy)

    # ---- flushing --------------------------------------------------------------

    def buffered_bytes(self) -> int:
        return self.active.bytes + (self.frozen.bytes if self.frozen is not None else 0)

    def layers(self) -> list[Memtable]:
        """Memtables newest first (what reads merge over SQLite)."""
        return [self.active] if self.frozen is None else [self.active, self.frozen]

    def _maybe_flush(self) -> None:
        a = self.active
        if a.writes >= self.flush_max_records or a.bytes >= self.flush_max_bytes \
                or len(a.mem) >= self.flush_max_memories:
            self._flush_wanted.set()

    def _freeze(self, rotate: bool = True) -> Memtable:
        assert self.frozen is None
        table = self.active
        table.frozen = True
        self.frozen = table
        self.active = Memtable(self.dbmap, self.clock)
        self._refresh_layers()
        if rotate:
            self.wal.rotate()
        return table

    async def _flush_frozen(self, table: Memtable) -> None:
        t0 = time.perf_counter()
        if self.flush_started is None:
            self.flush_started = time.monotonic()
        rows = len(table)
        if table.records:
            await self.store.flush(table)
            await run_on_loop(self._carry_access_times(table))
        if self.frozen is table:
            self.frozen = None
            self._refresh_layers()
        self.flush_count += 1
        self.last_flush_seconds = time.perf_counter() - t0
        self.flush_latency.observe(self.last_flush_seconds)
        self.last_flush_rows = rows
        self.flush_error = None
        self.flush_started = None
        flushed, self._flushed = self._flushed, anyio.Event()
        flushed.set()
        for hook in self.after_flush:
            hook()
        if self._tg is not None:
            self._tg.start_soon(self._maintain_keyfilter)  # (returns at once unless the filter has worn)
        log.info("flush_done rows=%d lsn=%d seconds=%.3f", rows, table.max_lsn, self.last_flush_seconds)
        # nothing reads the flushed table any more: free its entries a slice at a time, not in one
        # deallocation when the last reference goes (memd.release)
        await run_on_loop(release_steps([t.entries for t in table.dbs]))

    async def _maintain_keyfilter(self) -> None:
        try:
            await self.store.maintain_keyfilter()
        except Exception as exc:  # noqa: BLE001 - without the filter every read goes to the store: slower, not wrong
            log.warning("key_filter_build_failed error=%r (reads of absent keys go to SQLite meanwhile)", str(exc))

    def _carry_access_times(self, table: Memtable) -> Iterator[None]:
        """OBJECT IDLETIME: a flushed layer's access times go to the keyspaces' maps (in steps)."""
        for db, t in enumerate(table.dbs):
            if t.entries:
                yield from self.keyspaces[db].carry_access_times(t.entries)

    def flush_stalled(self, seconds: float) -> bool:
        """True when flushing has made no progress for ``seconds`` past when it was due (systemd watchdog).

        Stalled means: a flush started (or failed and kept retrying) more than
        ``seconds`` ago and has not succeeded, or the active buffer holds
        writes past ``flush_max_age + seconds`` since it began (the flush loop
        starts a flush by ``flush_max_age``). A restart then replays the WAL.
        """
        now = time.monotonic()
        if self.flush_started is not None and now - self.flush_started > seconds:
            return True
        return self.active.records > 0 and now - self.active.created > self.flush_max_age + seconds

    async def flush(self) -> None:
        """Flush everything buffered so far (MEMD.FLUSH, shutdown)."""
        await self._flush_all()

    @property
    def flush_lock(self) -> anyio.Lock:
        """Held by each flush; maintenance holds it around its own store transactions so that no
        flush interleaves between its look at the buffer and its write (writers never wait on it)."""
        return self._flush_lock

    async def snapshot_to(self, dest: str) -> int:
        """Write a consistent copy of the store to ``dest`` holding every write made before the call.

        Flushes first, then copies on connections of its own (see
        :meth:`Store.copy_to`): writers and readers go on meanwhile. Returns
        the copy's LSN: every write up to it is in the copy.
        """
        await self.flush()
        return await anyio.to_thread.run_sync(self.store.copy_to, dest)

    async def _flush_all(self) -> None:
        async with self._flush_lock:
            if self.frozen is not None:
                await self._flush_frozen(self.frozen)
            if self.active.records and not self.abandoned:
                await self._unheld()  # never freeze the table a script in its thread is writing
                await self._flush_frozen(self._freeze())
            await self.wal.drop_through(self.store.flushed_lsn)

    async def _flush_loop(self) -> None:
        while True:
            age = time.monotonic() - self.active.created
            with anyio.move_on_after(max(0.0, self.flush_max_age - age) if self.active.records else
                                     self.flush_max_age):
                await self._flush_wanted.wait()
            self._flush_wanted = anyio.Event()
            if not self.active.records and self.frozen is None:
                self.active.created = time.monotonic()
                continue
            try:
                await self._flush_all()
            except Exception as exc:  # noqa: BLE001 - a failed flush must not end the loop: retry
                self.flush_error = f"{type(exc).__name__}: {exc}"
                if isinstance(exc, StoreDamagedError):  # retrying will not mend it
                    self.flush_error += (f"; stop memd, run `memd check --data-dir {self.data_dir}` and restore the "
                                         "latest backup (the WAL keeps every write meanwhile)")
                self.flush_failures += 1
                log.error("flush_failed error=%r retry_in=1s (the WAL keeps every write)", self.flush_error)
                await anyio.sleep(1.0)
                self._flush_wanted.set()  # retry now, not at the next write or flush_max_age

    # ---- figures ---------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        frozen = self.frozen
        return {
            "fsync_policy": self.fsync_policy,
            "last_lsn": self.last_lsn,
            "flushed_lsn": self.store.flushed_lsn,
            "synced_lsn": self.wal.synced_lsn,
            "buffer_keys": len(self.active) + (len(frozen) if frozen else 0),
            "buffer_bytes": self.buffered_bytes(),
            "buffer_records": self.active.records + (frozen.records if frozen else 0),
            **self.wal.stats(),
            "last_flush_ms": round(self.last_flush_seconds * 1000, 3),
            "flush_count": self.flush_count,
            "flush_error": self.flush_error or "",
            "flush_failures": self.flush_failures,
            "fsync_count": self.wal.fsync_count,
            "last_fsync_ms": round(self.wal.last_fsync_seconds * 1000, 3),
            "wal_error": self.wal.fatal_error or self.wal.write_error or "",
            "clock_steps_back": self.clock_steps_back,
            "recovered_records": self.recovery_report.records,
            "recovery_seconds": round(self.recovery_report.seconds, 3),
            **self.store.keyfilter_stats(),
            **self.store.readcache.stats(),
        }


__all__ = ["Engine", "DurabilityError", "OverloadError", "WatchMark", "lock_data_dir"]


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector (replay of a large WAL).

    Replay allocates a few objects per record and frees none, so every
    generation-2 pass re-walks the whole growing memtable for nothing: 1M
    records took 4.9 s with the collector on and 2.8 s with it paused. The
    objects replay makes hold no reference cycles; reference counting frees
    them as ever, and the collector resumes afterwards.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
