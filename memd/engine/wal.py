"""The write-ahead log: segments, append, group-commit fsync, recovery.

Appends happen on the event-loop thread into an in-memory chunk (a few
hundred nanoseconds); the durability a caller asked for is then reached by
:meth:`WAL.wait`:

- ``always``: one background *syncer* writes every pending chunk and
  fdatasyncs it in a worker thread. Writers that arrive while an fsync is in
  flight pile up in the next chunk and share the next write+fdatasync: group
  commit, so throughput grows with the number of concurrent writers.
- ``everysec``: ``wait`` writes pending chunks to the OS on the loop thread
  (a killed process loses nothing); the syncer fdatasyncs once a second.
- ``no``: written to the OS like ``everysec``; fsynced only by
  :meth:`WAL.sync` (flush, shutdown, WAITAOF).

Failures never become false successes. A failed ``write()`` (full disk) is
cut back off the segment, the affected writers get an error, the chunk is
kept and retried, and new writes are refused until a retry succeeds. A failed
fsync is fatal for durability (the kernel may already have dropped the dirty
pages, so a retry could "succeed" on lost data): writes stay refused until
restart, reads go on.

Segments are named by their first LSN (``%020d.wal``) and begin with a
versioned header (see :mod:`memd.engine.records`). A new segment is started
at every open, at every memtable freeze (so a flush covers whole segments,
which it may then delete) and when one passes ``segment_bytes``. Its file is
created only when its first chunk is written, after every older chunk: a
newer segment never exists on disk while an older one still misses records
(a crash there would look like a missing segment). The syncer also fsyncs
the older segment before it creates the newer one.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NoReturn

import anyio
import anyio.to_thread

from memd.engine.fileops import FileOps
from memd.engine.records import (
    SEGMENT_HEADER_SIZE,
    FrameError,
    Op,
    decode_frame,
    decode_segment_header,
    encode_record,
    encode_segment_header,
    plausible_frame_at,
    scan_frames,
)
from memd.errors import DurabilityError, WALCorruptError
from memd.histogram import Histogram, latency_buckets

log = logging.getLogger("memd.wal")

FSYNC_POLICIES = ("always", "everysec", "no")
RECOVERY_MODES = ("tolerate-tail", "absolute", "skip-corrupt")
DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
FSYNC_BUCKETS = latency_buckets(0.0001, 10)  # 100 µs (a good SSD) .. 10 s (a stalled disk)
SEGMENT_SUFFIX = ".wal"


def segment_name(first_lsn: int) -> str:
    return f"{first_lsn:020d}{SEGMENT_SUFFIX}"


def list_segments(directory: str) -> list[tuple[int, str]]:
    """(first LSN, path) of every segment file, oldest first."""
    found = []
    for name in os.listdir(directory):
        if name.endswith(SEGMENT_SUFFIX) and name[: -len(SEGMENT_SUFFIX)].isdigit():
            found.append((int(name[: -len(SEGMENT_SUFFIX)]), os.path.join(directory, name)))
    return sorted(found)


@dataclass(eq=False)
class Segment:
    path: str
    first_lsn: int
    fd: int
    size: int  # bytes written to the OS so far
    last_lsn: int = 0  # highest LSN appended (pending or written)
    synced_size: int = 0
    dir_synced: bool = False
    closed: bool = False
    created: bool = True  # False until its first chunk is written (the file does not exist yet)


@dataclass
class RecoveryReport:
    """What recovery found; logged at start and shown by ``memd check``."""

    segments: int = 0
    records: int = 0  # replayed (newer than the flushed LSN)
    skipped_flushed: int = 0
    last_lsn: int = 0
    truncated: list[tuple[str, int, int]] = field(default_factory=list)  # path, offset, bytes dropped
    skipped_corrupt: list[tuple[str, int, int, str]] = field(default_factory=list)  # path, offset, bytes, why
    seconds: float = 0.0


class _Chunk:
    __slots__ = ("segment", "data", "last_lsn")

    def __init__(self, segment: Segment) -> None:
        self.segment = segment
        self.data = bytearray()
        self.last_lsn = 0


class WAL:
    """Segmented, CRC-framed, group-committed write-ahead log."""

    def __init__(self, directory: str, *, fsync: str = "everysec", segment_bytes: int = DEFAULT_SEGMENT_BYTES,
                 compress_min: int = 1024, fileops: FileOps | None = None) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {', '.join(FSYNC_POLICIES)}")
        self.directory = directory
        self.policy = fsync
        self.segment_bytes = segment_bytes
        self.compress_min = compress_min
        self.ops = fileops or FileOps()
        self._segments: list[Segment] = []  # open or not-yet-deleted, oldest first
        self._current: Segment | None = None
        self._pending: list[_Chunk] = []
        self.appended_lsn = 0
        self.written_lsn = 0
        self.synced_lsn = 0
        self.write_error: str | None = None
        self.fatal_error: str | None = None
        self._kick = anyio.Event()
        self._synced = anyio.Event()
        self._sync_wanted = 0  # an LSN some caller wants fsynced regardless of policy
        self._io_lock = anyio.Lock()
        self._handoff = False  # the syncer's thread owns chunks: the loop thread must not write
        self.fsync_count = 0
        self.last_fsync_seconds = 0.0
        self.fsync_latency = Histogram(FSYNC_BUCKETS)  # one observation per fsync_count (metrics)
        self.write_failures = 0  # failed write()s (full disk...), each refused writes until a retry went through
        self.start_lsn = 1  # first LSN this process appends: records appended = appended_lsn - start_lsn + 1

    # ---- recovery ------------------------------------------------------------

    def replay(self, flushed_lsn: int, mode: str, report: RecoveryReport, *, repair: bool = True
               ) -> Iterator[tuple[int, list[Op] | tuple[Op, ...]]]:
        """Yield ``(lsn, ops)`` of every valid record newer than ``flushed_lsn``, oldest first.

        Repairs a torn tail of the last segment (truncates it) unless ``mode``
        is ``absolute``; raises :class:`WALCorruptError` for anything else
        unless ``mode`` is ``skip-corrupt``, which reports and skips. With
        ``repair`` false (``memd check``) nothing is changed on disk: what a
        start would cut off is only reported.
        """
        self._repair = repair
        advice = _advice(self.directory)
        if mode not in RECOVERY_MODES:
            raise ValueError(f"recovery must be one of {', '.join(RECOVERY_MODES)}")
        segments = list_segments(self.directory)
        report.segments = len(segments)
        self._old_segments: list[tuple[int, str]] = []
        if segments and _incomplete_header(*segments[-1]):
            # created but its header never fully reached the disk: nothing was acknowledged in it, and
            # the segment before it is then the real last one (its tail may be torn)
            _name_lsn, path = segments.pop()
            size = _file_size(path)
            if repair:
                self.ops.unlink(path)
            report.truncated.append((path, 0, size))
            log.warning("wal_incomplete_segment_removed path=%s bytes_dropped=%d mode=%s", path, size, mode)
        expected = 0  # next LSN we must see; 0 until the first record
        for index, (name_lsn, path) in enumerate(segments):
            last = index == len(segments) - 1
            with open(path, "rb") as f:
                data = f.read()
            try:
                first_lsn = decode_segment_header(data)
                if first_lsn != name_lsn:
                    raise FrameError(f"header says first LSN {first_lsn}, file name says {name_lsn}")
            except FrameError as exc:
                if mode == "skip-corrupt":
                    report.skipped_corrupt.append((path, 0, len(data), f"bad segment header: {exc}"))
                    continue
                raise WALCorruptError(path, 0, f"bad segment header: {exc}; {advice}") from exc
            if expected and first_lsn > expected:
                gap = (f"LSNs {expected}..{first_lsn - 1} are missing: {os.path.basename(path)} starts at LSN "
                       f"{first_lsn} where {expected} was expected (a segment before it was removed or lost)")
                if mode != "skip-corrupt":
                    raise WALCorruptError(path, 0, f"{gap}; {advice}")
                self._skip_gap(path, gap, report)
                expected = first_lsn
            elif expected and first_lsn != expected and mode != "skip-corrupt":
                raise WALCorruptError(path, 0, f"segment starts at LSN {first_lsn} but LSN {expected} was expected "
                                               f"(segments overlap); {advice}")
            if not expected and first_lsn > flushed_lsn + 1:
                gap = (f"LSNs {flushed_lsn + 1}..{first_lsn - 1} are missing: the first WAL record is LSN "
                       f"{first_lsn} but the store holds only up to LSN {flushed_lsn}")
                if mode != "skip-corrupt":
                    raise WALCorruptError(path, 0, f"{gap}; {advice}")
                self._skip_gap(path, gap, report)
            self._old_segments.append((first_lsn, path))
            if not expected:
                expected = first_lsn  # the first record of a segment carries the LSN in its name
            offset = SEGMENT_HEADER_SIZE
            while offset < len(data):
                for lsn, ops, after in scan_frames(data, offset):  # the fast path: valid frames in order
                    if lsn != expected:
                        break  # (the slow path below says what is wrong)
                    offset = after
                    expected = lsn + 1
                    report.last_lsn = lsn
                    if lsn <= flushed_lsn:
                        report.skipped_flushed += 1
                        continue
                    report.records += 1
                    yield lsn, ops
                if offset >= len(data):
                    break
                # the slow path: one frame that is incomplete, invalid or out of order
                problem = None
                try:
                    rec = decode_frame(data, offset)
                    if rec is None:
                        problem = "record cut short"
                except FrameError as exc:
                    rec, problem = None, str(exc)
                if rec is not None and expected and rec.lsn != expected:
                    problem = f"LSN {rec.lsn} where {expected} was expected"
                    if mode == "skip-corrupt" and rec.lsn > expected:
                        report.skipped_corrupt.append((path, offset, 0, problem))
                    else:
                        rec = None
                if rec is None:
                    assert problem is not None
                    nxt = _next_valid(data, offset + 1)
                    if nxt is None and last:
                        if mode == "absolute":
                            raise WALCorruptError(path, offset, f"{problem} at the tail ({len(data) - offset} bytes); "
                                                                f"recovery = absolute refuses to drop it; {advice}")
                        self._cut(path, offset, len(data) - offset, report, mode, problem)
                        break
                    if mode != "skip-corrupt":
                        raise WALCorruptError(path, offset, f"{problem}, with valid records after it; {advice}")
                    end = len(data) if nxt is None else nxt
                    report.skipped_corrupt.append((path, offset, end - offset, problem))
                    log.error("wal_skip_corrupt path=%s offset=%d bytes=%d reason=%r", path, offset, end - offset,
                              problem)
                    offset = end
                    continue
                offset += rec.size
                expected = rec.lsn + 1
                report.last_lsn = rec.lsn
                if rec.lsn <= flushed_lsn:
                    report.skipped_flushed += 1
                    continue
                report.records += 1
                yield rec.lsn, rec.ops

    @staticmethod
    def _skip_gap(path: str, gap: str, report: RecoveryReport) -> None:
        """skip-corrupt: records that are not there at all; recovery goes on with the next ones."""
        report.skipped_corrupt.append((path, 0, 0, gap))
        log.error("wal_skip_missing path=%s reason=%r (recovery = skip-corrupt: those writes are lost)", path, gap)

    def _cut(self, path: str, offset: int, dropped: int, report: RecoveryReport, mode: str, why: str) -> None:
        if not self._repair:
            report.truncated.append((path, offset, dropped))
            return
        self.ops.truncate_path(path, offset)
        report.truncated.append((path, offset, dropped))
        log.warning("wal_torn_tail_truncated path=%s offset=%d bytes_dropped=%d reason=%r mode=%s",
                    path, offset, dropped, why, mode)

    # ---- appending -------------------------------------------------------------

    def start(self, next_lsn: int) -> None:
        """Begin appending at ``next_lsn`` in a fresh segment (after recovery)."""
        for first_lsn, path in getattr(self, "_old_segments", []):
            size = _file_size(path)
            self._segments.append(Segment(path, first_lsn, -1, size, last_lsn=next_lsn - 1, synced_size=size,
                                          closed=True, dir_synced=True))
        # a segment left by the last run with no record in it has the new segment's name: it is
        # replaced when the new one is created, and must not be deleted later in its stead
        path = os.path.join(self.directory, segment_name(next_lsn))
        self._segments = [s for s in self._segments if s.path != path]
        self.appended_lsn = self.written_lsn = self.synced_lsn = next_lsn - 1
        self.start_lsn = next_lsn
        self._open_segment(next_lsn)

    def _open_segment(self, first_lsn: int) -> None:
        """Make a new current segment; its file is created by its first write (no I/O here)."""
        path = os.path.join(self.directory, segment_name(first_lsn))
        seg = Segment(path, first_lsn, -1, 0, last_lsn=first_lsn - 1, created=False)
        self._segments.append(seg)
        self._current = seg

    def _create_file(self, seg: Segment, sync_older: bool) -> None:
        """Create ``seg``'s file and write its header; every older chunk has been written by now."""
        if sync_older:
            for older in self._segments:
                if older is seg:
                    break
                if older.created and not older.closed and older.size > older.synced_size:
                    size = older.size
                    try:
                        self.ops.fsync(older.fd)
                    except OSError as exc:
                        self._set_fatal(f"fsync of {older.path} failed: {exc.strerror or exc}")
                        raise DurabilityError(self.fatal_error or "") from exc
                    older.synced_size = max(older.synced_size, size)
        header = encode_segment_header(seg.first_lsn)
        fd = -1
        try:
            if os.path.exists(seg.path) and _file_size(seg.path) <= SEGMENT_HEADER_SIZE:
                self.ops.unlink(seg.path)  # empty leftover of the last run, or of a failed attempt
            fd = self.ops.create(seg.path)
            _write_all(self.ops, fd, header)
        except OSError as exc:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    self.ops.close(fd)
                with contextlib.suppress(OSError):
                    self.ops.unlink(seg.path)
            self._write_failed(seg, exc)
        seg.fd, seg.size, seg.created = fd, len(header), True

    def check_writable(self) -> None:
        """Raise the error new writes must get, if any."""
        if self.fatal_error:
            raise DurabilityError(self.fatal_error)
        if self.write_error:
            raise DurabilityError(self.write_error)

    def append(self, lsn: int, ops: list[Op] | tuple[Op, ...]) -> None:
        """Frame one record into the pending chunk (no I/O)."""
        seg = self._current
        assert seg is not None, "WAL.start() first"
        chunk = self._pending[-1] if self._pending and self._pending[-1].segment is seg else None
        if chunk is None:
            chunk = _Chunk(seg)
            self._pending.append(chunk)
        chunk.data += encode_record(lsn, ops, self.compress_min)
        chunk.last_lsn = lsn
        seg.last_lsn = lsn
        self.appended_lsn = lsn
        if max(seg.size, SEGMENT_HEADER_SIZE) + len(chunk.data) >= self.segment_bytes:
            self.rotate()

    def rotate(self) -> None:
        """Start a new segment for the next LSN (freeze, size limit)."""
        seg = self._current
        if seg is not None and seg.last_lsn < seg.first_lsn:
            return  # still empty: nothing to rotate away from
        # pending chunks know their segment: whoever writes them next writes them there
        self._open_segment(self.appended_lsn + 1)

    def _write_pending(self) -> bool:
        """write() pending chunks, oldest first (event-loop thread, everysec / no).

        Stops (False) at a chunk whose segment has no file yet, or while the
        syncer holds chunks: a new segment is created by the syncer only after
        every older one is fsynced, so that a power loss can tear only the
        last segment, never leave a hole before a newer one.
        """
        while self._pending:
            seg = self._pending[0].segment
            if self._handoff or not seg.created and self._older_unsynced(seg):
                return False
            self._write_chunk(self._pending[0])
            del self._pending[0]
        return True

    def _older_unsynced(self, seg: Segment) -> bool:
        """True if a segment older than ``seg`` holds bytes not yet fsynced."""
        for older in self._segments:
            if older is seg:
                return False
            if older.created and not older.closed and older.size > older.synced_size:
                return True
        return False

    def _write_chunk(self, chunk: _Chunk, sync_older: bool = False) -> None:
        """write() one chunk; on failure cut the partial record back off and raise."""
        seg = chunk.segment
        if not seg.created:
            self._create_file(seg, sync_older)
        try:
            _write_all(self.ops, seg.fd, chunk.data)
        except OSError as exc:
            try:
                self.ops.truncate(seg.fd, seg.size)
                # the file position is still past the cut: without this the retry would leave a hole
                os.lseek(seg.fd, seg.size, os.SEEK_SET)
            except OSError as exc2:
                self._set_fatal(f"WAL write failed ({exc}) and the partial record could not be cut back ({exc2})")
                raise DurabilityError(self.fatal_error or "") from exc
            self._write_failed(seg, exc)
        seg.size += len(chunk.data)
        chunk.data = bytearray()
        self.written_lsn = max(self.written_lsn, chunk.last_lsn)

    def _write_failed(self, seg: Segment, exc: OSError) -> NoReturn:
        self.write_failures += 1
        until = ("the disk has room again" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else
                 "a retry succeeds (an I/O error: check the disk, e.g. `dmesg`)")
        self.write_error = (f"WAL write to {seg.path} failed: {exc.strerror or exc}; writes are refused "
                            f"until {until} (retried every second); reads go on")
        log.error("wal_write_failed path=%s error=%r", seg.path, str(exc))
        raise DurabilityError(self.write_error) from exc

    def _set_fatal(self, message: str) -> None:
        self.fatal_error = (f"{message}; memd refuses writes until it is restarted: durability can no longer be "
                            f"promised (everything up to LSN {self.synced_lsn} is safe); reads go on")
        log.critical("wal_fatal error=%r", message)

    def set_policy(self, policy: str) -> None:
        """Switch the fsync policy live (config reload); the syncer picks it up on its next pass."""
        self.policy = policy
        self._kick.set()  # under "no" it may be waiting without a timeout

    # ---- durability ------------------------------------------------------------

    async def wait(self, lsn: int) -> None:
        """Return once record ``lsn`` has the durability the policy promises."""
        while not self.reached_without_wait(lsn):
            if self.policy == "always":
                await self._wait_synced(lsn)
                return
            synced = self._synced  # everysec / no: the syncer is creating a segment; then write again
            self._kick.set()
            await synced.wait()

    def reached_without_wait(self, lsn: int) -> bool:
        """Give record ``lsn`` the policy's durability without awaiting, if that is possible.

        ``everysec`` / ``no``: write() what is pending (on this thread) and return True.
        ``always``: True only if an fsync already covered it. Raises DurabilityError like :meth:`wait`.
        """
        if self.policy == "always":
            if self.synced_lsn >= lsn:
                return True
            if self.fatal_error:
                raise DurabilityError(self.fatal_error)
            if self.write_error and self.written_lsn < lsn:
                raise DurabilityError(self.write_error)
            return False
        if self.written_lsn < lsn:
            if self.fatal_error:
                raise DurabilityError(self.fatal_error)
            if self.write_error:  # only the syncer's retry may write now, to keep records in order
                raise DurabilityError(self.write_error)
            if not self._write_pending():
                self._kick.set()  # a new segment to create: the syncer does it, after fsyncing older ones
                return False
        return True

    async def sync(self, lsn: int | None = None) -> None:
        """Barrier: return once everything up to ``lsn`` (default: all) is fsynced."""
        await self._wait_synced(self.appended_lsn if lsn is None else lsn)

    async def _wait_synced(self, lsn: int) -> None:
        # ask for the fsync explicitly: if the policy is switched away from "always" meanwhile
        # (config reload), the syncer's passes would otherwise only hand off, and this waits forever
        self._sync_wanted = max(self._sync_wanted, lsn)
        retried = False
        while self.synced_lsn < lsn:
            if self.fatal_error:
                raise DurabilityError(self.fatal_error)
            if self.write_error and self.written_lsn < lsn:
                if retried:  # the disk is still full after one more attempt: not acknowledged
                    raise DurabilityError(self.write_error)
                retried = True  # one more pass of the syncer retries the write first
            synced = self._synced
            self._kick.set()
            await synced.wait()

    async def run_syncer(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Background task: group commit (always), once a second (everysec), on request."""
        task_status.started()
        while True:
            timeout = None if self.policy == "no" and not self.write_error else 1.0
            with anyio.move_on_after(timeout):
                await self._kick.wait()
            kicked = self._kick.is_set()
            self._kick = anyio.Event()
            if self.fatal_error:
                self._wake()
                continue
            await self._sync_once(tick=not kicked)

    async def _sync_once(self, tick: bool = True) -> None:
        """One pass: write what is pending, fsync, wake waiters.

        ``tick`` false means a writer only needs a new segment created (see
        :meth:`_write_pending`): under everysec / no, nothing more is fsynced.
        """
        async with self._io_lock:
            if self.fatal_error:  # nothing written or synced now can be trusted: wake the waiters, that is all
                self._wake()
                return
            if self.policy == "always" or self.write_error:  # (a failed write is retried in the thread)
                pending, self._pending = self._pending, []
            else:
                self._write_safely()  # everysec / no: what can be written here reaches the OS first
                pending = []
                if not self.write_error:  # what is left starts at a segment the thread must create
                    pending, self._pending = self._pending, []
            self._handoff = bool(pending)
            # fsync = "no" with nobody asking for a sync: the thread only creates the new segment (after
            # fsyncing the older ones, see _write_pending) and writes; it fsyncs nothing else
            handoff_only = self.policy != "always" and not tick and not self._sync_wanted and not self.write_error
            covered = self.synced_lsn if handoff_only else max([c.last_lsn for c in pending] + [self.written_lsn])
            dirty = [] if handoff_only else [
                s for s in self._segments if s.created and not s.closed and (s.size > s.synced_size or not s.dir_synced)]
            if pending or dirty:
                t0 = time.perf_counter()
                try:
                    await anyio.to_thread.run_sync(self._io_in_thread, pending, dirty, self._current,
                                                   not handoff_only)
                except DurabilityError:
                    # write failed: the unwritten chunks go back in front, in order, for the retry;
                    # what was written before the failure has been fsynced all the same
                    self._pending[:0] = [c for c in pending if c.data]
                    covered = self.written_lsn
                finally:
                    self._handoff = False
                self.fsync_count += 1
                self.last_fsync_seconds = time.perf_counter() - t0
                self.fsync_latency.observe(self.last_fsync_seconds)
            if not self.fatal_error:
                self.synced_lsn = max(self.synced_lsn, covered)
                if self._sync_wanted <= self.synced_lsn:
                    self._sync_wanted = 0
            self._wake()

    def _write_safely(self) -> None:
        try:
            self._write_pending()
        except DurabilityError:
            pass

    def _io_in_thread(self, pending: list[_Chunk], dirty: list[Segment], current: Segment | None,
                      fsync: bool = True) -> None:
        """Write ``pending`` in order, then fsync; a write failure is raised after the fsync of what was
        written, so writers whose records did reach the file are not held back by later ones."""
        error: DurabilityError | None = None
        for chunk in pending:
            try:
                self._write_chunk(chunk, sync_older=True)
            except DurabilityError as exc:
                error = exc
                break
            if fsync and chunk.segment not in dirty:
                dirty.append(chunk.segment)
        if self.fatal_error:
            raise error or DurabilityError(self.fatal_error)
        if pending and error is None and self.write_error:  # a retry of the failed chunks went through
            log.warning("wal_write_recovered written_lsn=%d", self.written_lsn)
            self.write_error = None
        need_dir = False
        for seg in dirty:
            size = seg.size  # every byte counted here was written before the fsync below
            need_dir = need_dir or not seg.dir_synced
            if size <= seg.synced_size:
                continue  # already fsynced (before a newer segment was created)
            try:
                self.ops.fsync(seg.fd)
            except OSError as exc:
                self._set_fatal(f"fsync of {seg.path} failed: {exc.strerror or exc}")
                return
            seg.synced_size = max(seg.synced_size, size)
        if need_dir:
            try:
                self.ops.fsync_dir(self.directory)
            except OSError as exc:
                self._set_fatal(f"fsync of directory {self.directory} failed: {exc.strerror or exc}")
                return
            for seg in dirty:
                seg.dir_synced = True
        if error is not None:
            raise error  # (and close nothing: the failed chunks are retried into their segments)
        for seg in dirty:
            if seg is not current and not seg.closed and not any(c.segment is seg for c in self._pending):
                self.ops.close(seg.fd)
                seg.closed = True

    def _wake(self) -> None:
        synced, self._synced = self._synced, anyio.Event()
        synced.set()

    # ---- cleanup ---------------------------------------------------------------

    async def drop_through(self, lsn: int) -> int:
        """Delete segments whose records are all at or below ``lsn`` (now in SQLite)."""
        async with self._io_lock:
            doomed = [s for s in self._segments if s is not self._current and s.created and s.last_lsn <= lsn
                      and not any(c.segment is s for c in self._pending)]
            if not doomed:
                return 0

            def work() -> None:
                for seg in doomed:
                    if not seg.closed:
                        self.ops.close(seg.fd)
                        seg.closed = True
                    self.ops.unlink(seg.path)
                self.ops.fsync_dir(self.directory)

            await anyio.to_thread.run_sync(work)
            for seg in doomed:
                self._segments.remove(seg)
            return len(doomed)

    async def close(self) -> None:
        """Write and fsync everything, close every segment."""
        if not self.fatal_error:
            try:
                await self.sync()
            except DurabilityError:
                pass
        for seg in self._segments:
            if seg.created and not seg.closed:
                self.ops.close(seg.fd)
                seg.closed = True

    # ---- figures ---------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        written = sum(seg.size for seg in self._segments)
        return {"wal_segments": len(self._segments), "wal_bytes": written + sum(len(c.data) for c in self._pending),
                "wal_records": self.appended_lsn - self.start_lsn + 1, "wal_write_failures": self.write_failures}


def _advice(directory: str) -> str:
    """What the operator can do about a damaged log (``directory``: the WAL's, inside the data directory)."""
    data_dir = os.path.dirname(os.path.abspath(directory))
    return (f"inspect it with `memd check --data-dir {data_dir}`; then either restore the latest backup "
            f"(`memd restore BACKUP --data-dir {data_dir}`), or start once with storage.recovery = \"skip-corrupt\" "
            "to replay every record that is still readable and lose the ones named here")


def _next_valid(data: bytes, start: int) -> int | None:
    """Offset of the next CRC-valid frame at or after ``start``, if any."""
    if data.count(0, start) == len(data) - start:
        return None  # a zero-filled tail (preallocated or never-written blocks)
    for offset in range(start, len(data)):
        if plausible_frame_at(data, offset):
            return offset
    return None


def _incomplete_header(name_lsn: int, path: str) -> bool:
    """True when a segment file holds no more than a partly written header (zeros count as unwritten)."""
    try:
        with open(path, "rb") as f:
            data = f.read(SEGMENT_HEADER_SIZE + 1)
    except OSError:
        return False
    expected = encode_segment_header(name_lsn)
    if len(data) > SEGMENT_HEADER_SIZE or data == expected:
        return False
    return all(b in (0, e) for b, e in zip(data, expected, strict=False))


def _write_all(ops: FileOps, fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        n = ops.write(fd, view)
        view = view[n:]


def _file_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
