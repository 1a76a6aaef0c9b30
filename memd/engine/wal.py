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
which it may then delete) and when one passes ``segment_bytes``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import anyio
import anyio.to_thread

from memd.engine.fileops import FileOps
from memd.engine.records import (
    SEGMENT_HEADER_SIZE,
    FrameError,
    Op,
    Record,
    decode_frame,
    decode_segment_header,
    encode_record,
    encode_segment_header,
    plausible_frame_at,
)
from memd.errors import DurabilityError, WALCorruptError

log = logging.getLogger("memd.wal")

FSYNC_POLICIES = ("always", "everysec", "no")
RECOVERY_MODES = ("tolerate-tail", "absolute", "skip-corrupt")
DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
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
        self.fsync_count = 0
        self.last_fsync_seconds = 0.0

    # ---- recovery ------------------------------------------------------------

    def replay(self, flushed_lsn: int, mode: str, report: RecoveryReport) -> Iterator[Record]:
        """Yield every valid record newer than ``flushed_lsn``, oldest first.

        Repairs a torn tail of the last segment (truncates it) unless ``mode``
        is ``absolute``; raises :class:`WALCorruptError` for anything else
        unless ``mode`` is ``skip-corrupt``, which reports and skips.
        """
        if mode not in RECOVERY_MODES:
            raise ValueError(f"recovery must be one of {', '.join(RECOVERY_MODES)}")
        segments = list_segments(self.directory)
        report.segments = len(segments)
        self._old_segments: list[tuple[int, str]] = []
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
                if last and len(data) < SEGMENT_HEADER_SIZE and not data.strip(b"\0"):
                    # created but its header never reached the disk: nothing was acknowledged in it
                    self._cut(path, 0, len(data), report, mode, f"incomplete segment header: {exc}")
                    self.ops.unlink(path)
                    continue
                if mode == "skip-corrupt":
                    report.skipped_corrupt.append((path, 0, len(data), f"bad segment header: {exc}"))
                    continue
                raise WALCorruptError(path, 0, f"bad segment header: {exc}; {_ADVICE}") from exc
            if expected and first_lsn != expected and mode != "skip-corrupt":
                raise WALCorruptError(path, 0, f"segment starts at LSN {first_lsn} but LSN {expected} was expected "
                                               f"(a segment is missing); {_ADVICE}")
            if not expected and first_lsn > flushed_lsn + 1 and mode != "skip-corrupt":
                raise WALCorruptError(path, 0, f"first WAL record is LSN {first_lsn} but the store holds only up to "
                                               f"LSN {flushed_lsn}: records in between are missing; {_ADVICE}")
            self._old_segments.append((first_lsn, path))
            offset = SEGMENT_HEADER_SIZE
            while offset < len(data):
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
                                                                f"recovery = absolute refuses to drop it; {_ADVICE}")
                        self._cut(path, offset, len(data) - offset, report, mode, problem)
                        break
                    if mode != "skip-corrupt":
                        raise WALCorruptError(path, offset, f"{problem}, with valid records after it; {_ADVICE}")
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
                yield rec
            if not expected:
                expected = first_lsn

    def _cut(self, path: str, offset: int, dropped: int, report: RecoveryReport, mode: str, why: str) -> None:
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
        self.appended_lsn = self.written_lsn = self.synced_lsn = next_lsn - 1
        self._open_segment(next_lsn)

    def _open_segment(self, first_lsn: int) -> None:
        path = os.path.join(self.directory, segment_name(first_lsn))
        if os.path.exists(path) and _file_size(path) <= SEGMENT_HEADER_SIZE:
            # a segment left by the last shutdown with no record in it: same name, nothing to keep
            self.ops.unlink(path)
            self._segments = [s for s in self._segments if s.path != path]
        fd = self.ops.create(path)
        header = encode_segment_header(first_lsn)
        try:
            _write_all(self.ops, fd, header)
        except OSError:
            self.ops.close(fd)
            os.unlink(path)
            raise
        seg = Segment(path, first_lsn, fd, len(header), last_lsn=first_lsn - 1)
        self._segments.append(seg)
        self._current = seg

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
        if seg.size + len(chunk.data) >= self.segment_bytes:
            self.rotate()

    def rotate(self) -> None:
        """Start a new segment for the next LSN (freeze, size limit)."""
        seg = self._current
        if seg is not None and seg.last_lsn < seg.first_lsn:
            return  # still empty: nothing to rotate away from
        # pending chunks know their segment: whoever writes them next writes them there
        self._open_segment(self.appended_lsn + 1)

    def _write_pending(self) -> None:
        """write() every pending chunk, oldest first (event-loop thread)."""
        while self._pending:
            self._write_chunk(self._pending[0])
            del self._pending[0]

    def _write_chunk(self, chunk: _Chunk) -> None:
        """write() one chunk; on failure cut the partial record back off and raise."""
        seg = chunk.segment
        try:
            _write_all(self.ops, seg.fd, chunk.data)
        except OSError as exc:
            try:
                self.ops.truncate(seg.fd, seg.size)
            except OSError as exc2:
                self._set_fatal(f"WAL write failed ({exc}) and the partial record could not be cut back ({exc2})")
                raise DurabilityError(self.fatal_error or "") from exc
            self.write_error = (f"WAL write to {seg.path} failed: {exc.strerror or exc}; writes are refused "
                                "until the disk has room again (retried every second); reads go on")
            log.error("wal_write_failed path=%s error=%r", seg.path, str(exc))
            raise DurabilityError(self.write_error) from exc
        seg.size += len(chunk.data)
        chunk.data = bytearray()
        self.written_lsn = max(self.written_lsn, chunk.last_lsn)

    def _set_fatal(self, message: str) -> None:
        self.fatal_error = (f"{message}; memd refuses writes until it is restarted: durability can no longer be "
                            f"promised (everything up to LSN {self.synced_lsn} is safe); reads go on")
        log.critical("wal_fatal error=%r", message)

    # ---- durability ------------------------------------------------------------

    async def wait(self, lsn: int) -> None:
        """Return once record ``lsn`` has the durability the policy promises."""
        if self.policy == "always":
            await self._wait_synced(lsn)
            return
        if self.written_lsn < lsn:
            if self.fatal_error:
                raise DurabilityError(self.fatal_error)
            if self.write_error:  # only the syncer's retry may write now, to keep records in order
                raise DurabilityError(self.write_error)
            self._write_pending()

    async def sync(self, lsn: int | None = None) -> None:
        """Barrier: return once everything up to ``lsn`` (default: all) is fsynced."""
        target = self.appended_lsn if lsn is None else lsn
        self._sync_wanted = max(self._sync_wanted, target)
        await self._wait_synced(target)

    async def _wait_synced(self, lsn: int) -> None:
        while self.synced_lsn < lsn:
            if self.fatal_error:
                raise DurabilityError(self.fatal_error)
            if self.write_error and self.written_lsn < lsn:
                raise DurabilityError(self.write_error)
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
            self._kick = anyio.Event()
            if self.fatal_error:
                self._wake()
                continue
            await self._sync_once()

    async def _sync_once(self) -> None:
        async with self._io_lock:
            if self.policy == "always" or self.write_error:
                pending, self._pending = self._pending, []
            else:
                pending = []
                self._write_safely()  # everysec / no: anything left pending reaches the OS first
            covered = max([c.last_lsn for c in pending] + [self.written_lsn])
            dirty = [s for s in self._segments if not s.closed and (s.size > s.synced_size or not s.dir_synced)]
            if pending or dirty:
                t0 = time.perf_counter()
                try:
                    await anyio.to_thread.run_sync(self._io_in_thread, pending, dirty, self._current)
                except DurabilityError:
                    # write failed: the unwritten chunks go back in front, in order, for the retry
                    self._pending[:0] = [c for c in pending if c.data]
                    self._wake()
                    return
                self.fsync_count += 1
                self.last_fsync_seconds = time.perf_counter() - t0
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

    def _io_in_thread(self, pending: list[_Chunk], dirty: list[Segment], current: Segment | None) -> None:
        for chunk in pending:
            self._write_chunk(chunk)
            if chunk.segment not in dirty:
                dirty.append(chunk.segment)
        if self.write_error:
            log.warning("wal_write_recovered written_lsn=%d", self.written_lsn)
            self.write_error = None
        need_dir = False
        for seg in dirty:
            size = seg.size  # every byte counted here was written before the fsync below
            try:
                self.ops.fsync(seg.fd)
            except OSError as exc:
                self._set_fatal(f"fsync of {seg.path} failed: {exc.strerror or exc}")
                return
            seg.synced_size = max(seg.synced_size, size)
            need_dir = need_dir or not seg.dir_synced
        if need_dir:
            try:
                self.ops.fsync_dir(self.directory)
            except OSError as exc:
                self._set_fatal(f"fsync of directory {self.directory} failed: {exc.strerror or exc}")
                return
            for seg in dirty:
                seg.dir_synced = True
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
            doomed = [s for s in self._segments if s is not self._current and s.last_lsn <= lsn
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
            if not seg.closed:
                self.ops.close(seg.fd)
                seg.closed = True

    # ---- figures ---------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        written = sum(seg.size for seg in self._segments)
        return {"wal_segments": len(self._segments), "wal_bytes": written + sum(len(c.data) for c in self._pending)}


_ADVICE = ("inspect it with `memd check --data-dir DIR`; restart with storage.recovery = \"skip-corrupt\" to start "
           "anyway without the bad records, or restore the latest backup")


def _next_valid(data: bytes, start: int) -> int | None:
    """Offset of the next CRC-valid frame at or after ``start``, if any."""
    if data.count(0, start) == len(data) - start:
        return None  # a zero-filled tail (preallocated or never-written blocks)
    for offset in range(start, len(data)):
        if plausible_frame_at(data, offset):
            return offset
    return None


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
