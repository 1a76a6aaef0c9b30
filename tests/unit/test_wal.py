"""The write-ahead log on real files: durability policies, group commit, rotation, recovery, failures."""

from __future__ import annotations

import contextlib
import errno
import os
import random
import shutil
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import pytest

from memd.engine.fileops import FileOps
from memd.engine.records import (
    OP_DEL,
    OP_SET,
    OP_UPDATE,
    SEGMENT_HEADER_SIZE,
    SEGMENT_MAGIC,
    T_ZSET,
    decode_frame,
    encode_record,
    encode_segment_header,
)
from memd.engine.wal import WAL, RecoveryReport, list_segments, segment_name
from memd.errors import DurabilityError, WALCorruptError

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# ---- helpers -------------------------------------------------------------------------


def ops_for(lsn: int) -> list[tuple]:
    """A deterministic, varied record body for an LSN (sometimes multi-op, sometimes compressible)."""
    if lsn % 5 == 0:
        return [(OP_SET, f"big{lsn}".encode(), b"z" * 3000, None)]
    if lsn % 3 == 0:
        return [(OP_SET, f"a{lsn}".encode(), b"1", None), (OP_DEL, f"b{lsn}".encode()),
                (OP_UPDATE, b"zs", T_ZSET, False, None, 2, 0, 0, ((b"m", lsn + 0.5), (b"n", None)))]
    return [(OP_SET, f"k{lsn}".encode(), f"v{lsn}".encode(), 1_700_000_000_000 + lsn)]


def write_segment(directory: Path, first_lsn: int, lsns: list[int] | range, *,
                  name_lsn: int | None = None) -> tuple[Path, list[int]]:
    """Write a segment file directly; return its path and each record's offset (plus the end)."""
    path = directory / segment_name(first_lsn if name_lsn is None else name_lsn)
    data = bytearray(encode_segment_header(first_lsn))
    offsets = []
    for lsn in lsns:
        offsets.append(len(data))
        data += encode_record(lsn, ops_for(lsn), 1024)
    offsets.append(len(data))
    path.write_bytes(bytes(data))
    return path, offsets


def replay(directory: Path, flushed: int = 0, mode: str = "tolerate-tail",
           fileops: FileOps | None = None) -> tuple[list, RecoveryReport, WAL]:
    wal = WAL(str(directory), fileops=fileops)
    report = RecoveryReport()
    records = list(wal.replay(flushed, mode, report))
    return records, report, wal


def lsns(records: list) -> list[int]:
    return [lsn for lsn, _ops in records]


def check_ops(records: list) -> None:
    for lsn, ops in records:
        assert list(ops) == ops_for(lsn), lsn


def abandon(wal: WAL) -> None:
    """Simulate a SIGKILL of the writer: its open fds just go away, nothing more is written."""
    for seg in wal._segments:
        if seg.fd >= 0 and not seg.closed:
            os.close(seg.fd)
            seg.closed = True


@contextlib.asynccontextmanager
async def running(wal: WAL) -> AsyncIterator[None]:
    async with anyio.create_task_group() as tg:
        await tg.start(wal.run_syncer)
        try:
            yield
        finally:
            tg.cancel_scope.cancel()


class CountingOps(FileOps):
    def __init__(self) -> None:
        self.fsyncs = 0
        self.dir_fsyncs = 0
        self.created: list[str] = []
        self.open_fds: set[int] = set()

    def create(self, path: str) -> int:
        fd = super().create(path)
        self.created.append(path)
        self.open_fds.add(fd)
        return fd

    def close(self, fd: int) -> None:
        self.open_fds.discard(fd)
        super().close(fd)

    def fsync(self, fd: int) -> None:
        self.fsyncs += 1
        super().fsync(fd)

    def fsync_dir(self, path: str) -> None:
        self.dir_fsyncs += 1
        super().fsync_dir(path)


class SlowFsyncOps(CountingOps):
    def fsync(self, fd: int) -> None:
        time.sleep(0.005)  # runs in a worker thread: makes group commit visible
        super().fsync(fd)


class FailingOps(CountingOps):
    """write() fails with ENOSPC after really writing half the bytes, while ``failing`` is true."""

    def __init__(self) -> None:
        super().__init__()
        self.failing: Callable[[int], bool] = lambda fd: False
        self.fail_fsync = False
        self.fail_fsync_dir = False
        self.fail_truncate = False
        self.fail_create = False
        self.write_failures = 0
        self.paths: dict[int, str] = {}

    def create(self, path: str) -> int:
        if self.fail_create:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        fd = super().create(path)
        self.paths[fd] = path
        return fd

    def write(self, fd: int, data: bytes | memoryview) -> int:
        if self.failing(fd):
            self.write_failures += 1
            half = len(data) // 2
            if half:
                os.write(fd, data[:half])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(fd, data)

    def fsync(self, fd: int) -> None:
        if self.fail_fsync:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        super().fsync(fd)

    def fsync_dir(self, path: str) -> None:
        if self.fail_fsync_dir:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        super().fsync_dir(path)

    def truncate(self, fd: int, size: int) -> None:
        if self.fail_truncate:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        super().truncate(fd, size)

    def fail_all(self) -> None:
        self.failing = lambda fd: True

    def heal(self) -> None:
        self.failing = lambda fd: False


def new_wal(tmp_path: Path, **kw: object) -> WAL:
    d = tmp_path / "wal"
    d.mkdir(exist_ok=True)
    return WAL(str(d), **kw)  # type: ignore[arg-type]


# ---- append, wait, replay --------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("policy", ["always", "everysec", "no"])
async def test_append_wait_then_replay_sees_everything(tmp_path: Path, policy: str) -> None:
    ops = CountingOps()
    wal = new_wal(tmp_path, fsync=policy, fileops=ops)
    with anyio.fail_after(10):
        async with running(wal):
            wal.start(1)
            for lsn in range(1, 41):
                wal.append(lsn, ops_for(lsn))
                if lsn % 7 == 0:
                    await wal.wait(lsn)
            await wal.wait(40)
            assert wal.written_lsn == 40
            if policy == "always":
                assert wal.synced_lsn == 40 and ops.fsyncs >= 1
            if policy == "no":
                assert ops.fsyncs == 0 and wal.synced_lsn == 0
            # a fresh WAL object sees it all, even before close (the OS has the bytes)
            records, report, _ = replay(tmp_path / "wal")
            assert lsns(records) == list(range(1, 41))
            check_ops(records)
            assert report.truncated == [] and report.skipped_corrupt == []
            await wal.close()
            assert wal.synced_lsn == 40
    assert ops.open_fds == set()
    records, report, _ = replay(tmp_path / "wal")
    assert lsns(records) == list(range(1, 41)) and report.records == 40 and report.last_lsn == 40


@pytest.mark.anyio
async def test_restart_cycles_keep_lsns_continuous(tmp_path: Path) -> None:
    d = tmp_path / "wal"
    next_lsn = 1
    for cycle in range(4):
        records, report, wal = replay(d) if d.exists() else ([], RecoveryReport(), new_wal(tmp_path))
        assert lsns(records) == list(range(1, next_lsn))
        assert report.truncated == []
        with anyio.fail_after(10):
            async with running(wal):
                wal.start(next_lsn)
                for _ in range(5 + cycle):
                    wal.append(next_lsn, ops_for(next_lsn))
                    next_lsn += 1
                await wal.wait(next_lsn - 1)
                await wal.close()
    records, _, _ = replay(d)
    assert lsns(records) == list(range(1, next_lsn))
    check_ops(records)
    assert len(list_segments(str(d))) == 4


@pytest.mark.anyio
async def test_group_commit_shares_fsyncs(tmp_path: Path) -> None:
    ops = SlowFsyncOps()
    wal = new_wal(tmp_path, fsync="always", fileops=ops)
    counter = iter(range(1, 1000))
    done: list[int] = []

    async def writer() -> None:
        lsn = next(counter)
        wal.append(lsn, ops_for(lsn))
        await wal.wait(lsn)
        assert wal.synced_lsn >= lsn
        done.append(lsn)

    with anyio.fail_after(10):
        async with running(wal):
            wal.start(1)
            async with anyio.create_task_group() as tg:
                for _ in range(50):
                    tg.start_soon(writer)
            assert sorted(done) == list(range(1, 51))
            assert wal.synced_lsn == 50
            assert 1 <= wal.fsync_count <= 10, wal.fsync_count
            assert ops.fsyncs <= 12
            await wal.close()
    assert lsns(replay(tmp_path / "wal")[0]) == list(range(1, 51))


@pytest.mark.anyio
async def test_sync_barrier_fsyncs_under_no_policy(tmp_path: Path) -> None:
    ops = CountingOps()
    wal = new_wal(tmp_path, fsync="no", fileops=ops)
    with anyio.fail_after(10):
        async with running(wal):
            wal.start(1)
            for lsn in range(1, 6):
                wal.append(lsn, ops_for(lsn))
            await wal.wait(5)
            assert ops.fsyncs == 0 and wal.synced_lsn == 0 and wal.written_lsn == 5
            await wal.sync()
            assert ops.fsyncs == 1 and wal.synced_lsn == 5
            assert ops.dir_fsyncs == 1  # the new segment's name is made durable too
            wal.append(6, ops_for(6))  # not even written yet: sync writes it first
            await wal.sync(6)
            assert ops.fsyncs == 2 and wal.synced_lsn == 6 and wal.written_lsn == 6
            await wal.sync(6)  # already there: no extra fsync
            assert ops.fsyncs == 2
            await wal.close()
    assert lsns(replay(tmp_path / "wal")[0]) == list(range(1, 7))


@pytest.mark.anyio
async def test_everysec_sync_once_fsyncs_what_was_written(tmp_path: Path) -> None:
    ops = CountingOps()
    wal = new_wal(tmp_path, fsync="everysec", fileops=ops)
    wal.start(1)
    wal.append(1, ops_for(1))
    await wal.wait(1)
    assert ops.fsyncs == 0 and wal.written_lsn == 1
    wal.append(2, ops_for(2))
    await wal._sync_once()  # the once-a-second tick, called directly
    assert ops.fsyncs == 1 and wal.synced_lsn == 2 and wal.written_lsn == 2
    await wal._sync_once()  # nothing new: no fsync
    assert ops.fsyncs == 1
    with anyio.fail_after(10):
        async with running(wal):
            await wal.close()


@pytest.mark.anyio
@pytest.mark.parametrize("policy", ["always", "everysec", "no"])
async def test_reached_without_wait(tmp_path: Path, policy: str) -> None:
    ops = FailingOps()
    wal = new_wal(tmp_path, fsync=policy, fileops=ops)
    with anyio.fail_after(10):
        async with running(wal):
            wal.start(1)
            wal.append(1, ops_for(1))
            if policy == "always":
                assert not wal.reached_without_wait(1)
                assert wal.written_lsn == 0  # never writes on the caller's thread
                await wal.wait(1)
                assert wal.reached_without_wait(1)
            else:
                assert wal.reached_without_wait(1)
                assert wal.written_lsn == 1
            ops.fail_all()
            wal.append(2, ops_for(2))
            if policy != "always":
                with pytest.raises(DurabilityError):
                    wal.reached_without_wait(2)
            else:
                with pytest.raises(DurabilityError):
                    await wal.wait(2)
            with pytest.raises(DurabilityError):
                wal.reached_without_wait(2)
            ops.heal()
            await wal._sync_once()
            assert wal.reached_without_wait(2)
            await wal.close()
    _assert_only_good_records(tmp_path, [1, 2])


def test_bad_policy_and_mode_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fsync"):
        WAL(str(tmp_path), fsync="sometimes")
    with pytest.raises(ValueError, match="recovery"):
        list(WAL(str(tmp_path)).replay(0, "best-effort", RecoveryReport()))


# ---- rotation and cleanup -----------------------------------------------------------------


@pytest.mark.anyio
async def test_rotation_by_segment_bytes(tmp_path: Path) -> None:
    wal = new_wal(tmp_path, fsync="everysec", segment_bytes=2048, compress_min=0)
    max_record = max(len(encode_record(n, ops_for(n))) for n in range(1, 101))
    with anyio.fail_after(10):
        async with running(wal):
            wal.start(1)
            for lsn in range(1, 101):
                wal.append(lsn, ops_for(lsn))
                await wal.wait(lsn)
            await wal.close()
    segs = list_segments(str(tmp_path / "wal"))
    assert len(segs) > 5
    for first, path in segs[:-1]:
        size = os.path.getsize(path)
        assert 2048 <= size < 2048 + max_record
    records, report, _ = replay(tmp_path / "wal")
    assert lsns(records) == list(range(1, 101))
    # every segment is named after its first record
    for first, path in segs:
        with open(path, "rb") as f:
            assert f.read(8) == SEGMENT_MAGIC
    for first, path in segs:
        with open(path, "rb") as f:
            data = f.read()
        if len(data) > SEGMENT_HEADER_SIZE:
            assert decode_frame(data, SEGMENT_HEADER_SIZE).lsn == first  # type: ignore[union-attr]
        else:
            assert first == 101  # the open segment a close leaves behind, still empty


@pytest.mark.anyio
async def test_rotate_of_empty_segment_is_a_no_op(tmp_path: Path) -> None:
    ops = CountingOps()
    wal = new_wal(tmp_path, fileops=ops)
    with anyio.fail_after(10):
        async with running(wal):
            wal.start(1)
            wal.rotate()
            wal.rotate()
            wal.append(1, ops_for(1))
            wal.rotate()
            wal.rotate()
            wal.append(2, ops_for(2))
            await wal.sync()
            await wal.close()
    assert [f for f, _ in list_segments(str(tmp_path / "wal"))] == [1, 2]
    assert ops.open_fds == set()


@pytest.mark.anyio
async def test_drop_through_deletes_only_covered_non_current_segments(tmp_path: Path) -> None:
    ops = CountingOps()
    wal = new_wal(tmp_path, fsync="always", fileops=ops)
    d = str(tmp_path / "wal")
    with anyio.fail_after(10):
        async with running(wal):
            wal.start(1)
            for lsn in range(1, 31):
                wal.append(lsn, ops_for(lsn))
                if lsn % 10 == 0:
                    wal.rotate()
            await wal.wait(30)
            wal.append(31, ops_for(31))  # the current segment 31.. holds 31
            await wal.wait(31)
            assert [f for f, _ in list_segments(d)] == [1, 11, 21, 31]
            assert await wal.drop_through(9) == 0  # 1..10 not wholly covered
            assert await wal.drop_through(10) == 1
            assert [f for f, _ in list_segments(d)] == [11, 21, 31]
            assert await wal.drop_through(10) == 0
            assert await wal.drop_through(25) == 1
            assert [f for f, _ in list_segments(d)] == [21, 31]
            assert await wal.drop_through(1000) == 1  # never the current segment
            assert [f for f, _ in list_segments(d)] == [31]
            assert wal.stats()["wal_segments"] == 1
            await wal.close()
    assert ops.open_fds == set()
    records, _, _ = replay(tmp_path / "wal", flushed=30)
    assert lsns(records) == [31]


@pytest.mark.anyio
async def test_drop_through_keeps_segment_with_unwritten_records(tmp_path: Path) -> None:
    wal = new_wal(tmp_path, fsync="always")
    with anyio.fail_after(10):
        wal.start(1)
        wal.append(1, ops_for(1))
        wal.rotate()
        wal.append(2, ops_for(2))
        assert await wal.drop_through(5) == 0  # segment 1's record was never written: keep it
        async with running(wal):
            await wal.wait(2)
            assert await wal.drop_through(1) == 1
            await wal.close()
    assert lsns(replay(tmp_path / "wal", flushed=1)[0]) == [2]


@pytest.mark.anyio
async def test_old_segments_dropped_after_restart(tmp_path: Path) -> None:
    d = tmp_path / "wal"
    d.mkdir()
    write_segment(d, 1, range(1, 6))
    write_segment(d, 6, range(6, 9))
    records, _, wal = replay(d)
    assert lsns(records) == list(range(1, 9))
    with anyio.fail_after(10):
        async with running(wal):
            wal.start(9)
            wal.append(9, ops_for(9))
            await wal.wait(9)
            assert await wal.drop_through(7) == 0  # old segments count as ending at 8
            assert await wal.drop_through(8) == 2
            await wal.close()
    assert [f for f, _ in list_segments(str(d))] == [9]


@pytest.mark.anyio
async def test_restart_on_header_only_segment_reuses_its_name(tmp_path: Path) -> None:
    d = tmp_path / "wal"
    d.mkdir()
    write_segment(d, 1, range(1, 4))
    write_segment(d, 4, [])  # opened by the last run, nothing written into it
    records, report, wal = replay(d)
    assert lsns(records) == [1, 2, 3] and report.truncated == []
    with anyio.fail_after(10):
        async with running(wal):
            wal.start(4)
            wal.append(4, ops_for(4))
            await wal.wait(4)
            await wal.close()
    assert lsns(replay(d)[0]) == [1, 2, 3, 4]


# ---- recovery: torn tails ----------------------------------------------------------------


def _torn_dir(tmp_path: Path) -> tuple[Path, Path, list[int]]:
    d = tmp_path / "orig"
    d.mkdir()
    write_segment(d, 1, range(1, 5))
    path, offsets = write_segment(d, 5, range(5, 11))  # last record (10) is compressible
    return d, path, offsets


@pytest.mark.parametrize("mode", ["tolerate-tail", "skip-corrupt"])
def test_torn_tail_at_every_offset_is_truncated(tmp_path: Path, mode: str) -> None:
    d, path, offsets = _torn_dir(tmp_path)
    start, end = offsets[-2], offsets[-1]
    full = path.read_bytes()
    assert end - start > 30
    for cut in range(start + 1, end):
        work = tmp_path / f"w{cut}"
        shutil.copytree(d, work)
        seg = work / path.name
        seg.write_bytes(full[:cut])
        records, report, _ = replay(work, mode=mode)
        assert lsns(records) == list(range(1, 10)), cut
        check_ops(records)
        assert report.truncated == [(str(seg), start, cut - start)], cut
        assert report.skipped_corrupt == []
        assert seg.stat().st_size == start
        shutil.rmtree(work)


def test_torn_tail_in_absolute_mode_is_an_error(tmp_path: Path) -> None:
    d, path, offsets = _torn_dir(tmp_path)
    full = path.read_bytes()
    path.write_bytes(full[: offsets[-1] - 3])
    with pytest.raises(WALCorruptError) as ei:
        replay(d, mode="absolute")
    assert ei.value.path == str(path) and ei.value.offset == offsets[-2]
    assert "absolute" in str(ei.value)
    assert path.stat().st_size == offsets[-1] - 3  # nothing cut


@pytest.mark.parametrize("tail", [b"\0" * 5, b"\0" * 17, b"\0" * 4096])
def test_zero_filled_tail_is_truncated(tmp_path: Path, tail: bytes) -> None:
    d, path, offsets = _torn_dir(tmp_path)
    with open(path, "ab") as f:
        f.write(tail)
    records, report, _ = replay(d)
    assert lsns(records) == list(range(1, 11))
    assert report.truncated == [(str(path), offsets[-1], len(tail))]
    assert path.stat().st_size == offsets[-1]
    with pytest.raises(WALCorruptError):  # but absolute refuses even that
        with open(path, "ab") as f:
            f.write(tail)
        replay(d, mode="absolute")


def test_garbage_tail_is_truncated(tmp_path: Path) -> None:
    d, path, offsets = _torn_dir(tmp_path)
    with open(path, "ab") as f:
        f.write(random.Random(5).randbytes(3000))
    records, report, _ = replay(d)
    assert lsns(records) == list(range(1, 11))
    assert report.truncated == [(str(path), offsets[-1], 3000)]


@pytest.mark.anyio
async def test_writing_resumes_after_a_truncated_tail(tmp_path: Path) -> None:
    d, path, offsets = _torn_dir(tmp_path)
    path.write_bytes(path.read_bytes()[: offsets[-1] - 1])
    records, report, wal = replay(d)
    assert lsns(records) == list(range(1, 10)) and len(report.truncated) == 1
    with anyio.fail_after(10):
        async with running(wal):
            wal.start(10)
            wal.append(10, ops_for(10))
            await wal.wait(10)
            await wal.close()
    records, report, _ = replay(d, mode="absolute")
    assert lsns(records) == list(range(1, 11)) and report.truncated == []


# ---- recovery: corruption -------------------------------------------------------------------


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("mode", ["tolerate-tail", "absolute"])
@pytest.mark.parametrize("where", ["header", "payload"])
def test_corrupt_record_mid_segment_stops_recovery(tmp_path: Path, mode: str, where: str) -> None:
    d, path, offsets = _torn_dir(tmp_path)
    bad = offsets[2]  # record 7, valid records 8..10 after it
    _flip(path, bad + (6 if where == "header" else 20))
    with pytest.raises(WALCorruptError) as ei:
        replay(d, mode=mode)
    assert ei.value.path == str(path) and ei.value.offset == bad
    assert "valid records after it" in str(ei.value) and "skip-corrupt" in str(ei.value)


def test_corrupt_record_mid_segment_skipped_in_skip_corrupt(tmp_path: Path) -> None:
    d, path, offsets = _torn_dir(tmp_path)
    bad = offsets[2]
    _flip(path, bad + 20)
    records, report, _ = replay(d, mode="skip-corrupt")
    assert lsns(records) == [1, 2, 3, 4, 5, 6, 8, 9, 10]
    check_ops(records)
    assert report.skipped_corrupt[0][:3] == (str(path), bad, offsets[3] - bad)
    assert "checksum" in report.skipped_corrupt[0][3]
    assert report.truncated == []
    assert path.stat().st_size == offsets[-1]  # skip-corrupt leaves the file as it is


@pytest.mark.parametrize("mode", ["tolerate-tail", "absolute"])
def test_bad_record_at_end_of_non_last_segment_is_an_error(tmp_path: Path, mode: str) -> None:
    d, _, _ = _torn_dir(tmp_path)
    first = d / segment_name(1)
    first.write_bytes(first.read_bytes()[:-2])  # torn, but a newer segment exists
    with pytest.raises(WALCorruptError) as ei:
        replay(d, mode=mode)
    assert ei.value.path == str(first)


def test_bad_record_at_end_of_non_last_segment_skipped(tmp_path: Path) -> None:
    d, _, _ = _torn_dir(tmp_path)
    first = d / segment_name(1)
    first.write_bytes(first.read_bytes()[:-2])
    records, report, _ = replay(d, mode="skip-corrupt")
    assert lsns(records) == [1, 2, 3] + list(range(5, 11))
    assert report.skipped_corrupt and report.skipped_corrupt[0][0] == str(first)


@pytest.mark.parametrize("mode", ["tolerate-tail", "absolute"])
def test_wrong_lsn_with_valid_crc_is_an_error(tmp_path: Path, mode: str) -> None:
    d = tmp_path / "w"
    d.mkdir()
    path = d / segment_name(1)
    data = encode_segment_header(1) + b"".join(encode_record(n, ops_for(n)) for n in (1, 2, 2, 3))
    path.write_bytes(data)
    with pytest.raises(WALCorruptError, match="LSN 2 where 3 was expected"):
        replay(d, mode=mode)


@pytest.mark.parametrize("mode", ["tolerate-tail", "absolute"])
def test_first_record_must_match_segment_header(tmp_path: Path, mode: str) -> None:
    d = tmp_path / "w"
    d.mkdir()
    path = d / segment_name(1)
    path.write_bytes(encode_segment_header(1) + b"".join(encode_record(n, ops_for(n)) for n in (3, 4, 5)))
    with pytest.raises(WALCorruptError, match="LSN 3 where 1 was expected"):
        replay(d, mode=mode)


@pytest.mark.parametrize("mode", ["tolerate-tail", "absolute"])
def test_missing_middle_segment_is_an_error(tmp_path: Path, mode: str) -> None:
    d = tmp_path / "w"
    d.mkdir()
    write_segment(d, 1, range(1, 5))
    write_segment(d, 5, range(5, 9))
    last, _ = write_segment(d, 9, range(9, 12))
    os.unlink(d / segment_name(5))
    with pytest.raises(WALCorruptError) as ei:
        replay(d, mode=mode)
    assert ei.value.path == str(last) and ei.value.offset == 0
    assert "LSNs 5..8 are missing" in str(ei.value)  # the operator learns exactly which writes are gone


def test_missing_middle_segment_reported_in_skip_corrupt(tmp_path: Path) -> None:
    d = tmp_path / "w"
    d.mkdir()
    write_segment(d, 1, range(1, 5))
    write_segment(d, 5, range(5, 9))
    write_segment(d, 9, range(9, 12))
    os.unlink(d / segment_name(5))
    records, report, _ = replay(d, mode="skip-corrupt")
    assert lsns(records) == [1, 2, 3, 4, 9, 10, 11]
    assert [why for *_, why in report.skipped_corrupt if "LSNs 5..8 are missing" in why]


def _bad_header(path: Path, kind: str) -> None:
    data = bytearray(path.read_bytes())
    if kind == "magic":
        data[0:8] = b"SQLite f"
    elif kind == "version":
        import struct
        import zlib
        head = struct.pack("<8sHHQ", SEGMENT_MAGIC, 9, 0, struct.unpack_from("<Q", data, 12)[0])
        data[0:24] = head + struct.pack("<I", zlib.crc32(head))
    elif kind == "crc":
        data[20] ^= 1
    elif kind == "name":
        import struct
        import zlib
        head = struct.pack("<8sHHQ", SEGMENT_MAGIC, 1, 0, 999)
        data[0:24] = head + struct.pack("<I", zlib.crc32(head))
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("mode", ["tolerate-tail", "absolute"])
@pytest.mark.parametrize("kind", ["magic", "version", "crc", "name"])
@pytest.mark.parametrize("which", [1, 5])
def test_bad_segment_header_is_an_error(tmp_path: Path, mode: str, kind: str, which: int) -> None:
    d, _, _ = _torn_dir(tmp_path)
    path = d / segment_name(which)
    _bad_header(path, kind)
    with pytest.raises(WALCorruptError) as ei:
        replay(d, mode=mode)
    assert ei.value.path == str(path) and ei.value.offset == 0
    assert "bad segment header" in str(ei.value)
    if kind == "version":
        assert "version 9" in str(ei.value)


def test_bad_segment_header_skipped_in_skip_corrupt(tmp_path: Path) -> None:
    d, _, _ = _torn_dir(tmp_path)
    path = d / segment_name(1)
    _bad_header(path, "magic")
    records, report, _ = replay(d, mode="skip-corrupt")
    assert lsns(records) == list(range(5, 11))
    assert report.skipped_corrupt[0][:2] == (str(path), 0)


def test_first_segment_after_flushed_lsn_is_an_error(tmp_path: Path) -> None:
    d = tmp_path / "w"
    d.mkdir()
    write_segment(d, 11, range(11, 15))
    with pytest.raises(WALCorruptError, match="store holds only up to LSN 9"):
        replay(d, flushed=9)
    records, report, _ = replay(d, flushed=10)
    assert lsns(records) == [11, 12, 13, 14]


def test_records_at_or_below_flushed_lsn_are_skipped(tmp_path: Path) -> None:
    d, _, _ = _torn_dir(tmp_path)
    records, report, _ = replay(d, flushed=6)
    assert lsns(records) == [7, 8, 9, 10]
    assert report.skipped_flushed == 6 and report.records == 4 and report.last_lsn == 10
    assert report.segments == 2
    records, report, _ = replay(d, flushed=10)
    assert records == [] and report.skipped_flushed == 10 and report.last_lsn == 10


def test_empty_directory_replays_nothing(tmp_path: Path) -> None:
    records, report, _ = replay(tmp_path, flushed=5)
    assert records == [] and report.segments == 0 and report.last_lsn == 0


@pytest.mark.parametrize("content", ["empty", "zeros", "prefix", "prefix+zeros"])
def test_incomplete_last_segment_header_is_removed(tmp_path: Path, content: str) -> None:
    d, path, _ = _torn_dir(tmp_path)
    hdr = encode_segment_header(11)
    data = {"empty": b"", "zeros": b"\0" * 10, "prefix": hdr[:13], "prefix+zeros": hdr[:13] + b"\0" * 11}[content]
    extra = d / segment_name(11)
    extra.write_bytes(data)
    records, report, _ = replay(d)
    assert lsns(records) == list(range(1, 11))
    assert not extra.exists()
    assert report.truncated == [(str(extra), 0, len(data))]


def test_incomplete_last_header_makes_previous_segment_the_last(tmp_path: Path) -> None:
    """Crash while a new segment was being created: the segment before it may have a torn tail."""
    d, path, offsets = _torn_dir(tmp_path)
    path.write_bytes(path.read_bytes()[: offsets[-1] - 4])
    extra = d / segment_name(11)
    extra.write_bytes(b"")
    records, report, _ = replay(d)
    assert lsns(records) == list(range(1, 10))
    assert not extra.exists()
    assert (str(path), offsets[-2], offsets[-1] - 4 - offsets[-2]) in report.truncated


def test_garbage_short_last_segment_is_not_silently_removed(tmp_path: Path) -> None:
    d, _, _ = _torn_dir(tmp_path)
    extra = d / segment_name(11)
    extra.write_bytes(b"not a wal segment")
    with pytest.raises(WALCorruptError):
        replay(d)
    assert extra.exists()


# ---- crash between rotation and write -------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("policy", ["always", "everysec"])
async def test_kill_after_rotate_before_write_recovers(tmp_path: Path, policy: str) -> None:
    """A SIGKILL after a rotation whose older records were not yet written must not block the start."""
    wal = new_wal(tmp_path, fsync=policy)
    with anyio.fail_after(10):
        async with running(wal):
            wal.start(1)
            for lsn in range(1, 6):
                wal.append(lsn, ops_for(lsn))
            await wal.wait(5)
            wal.append(6, ops_for(6))  # appended, not yet written (its writer has not waited)
            wal.rotate()  # memtable freeze
            wal.append(7, ops_for(7))
            abandon(wal)  # SIGKILL
    records, report, wal2 = replay(tmp_path / "wal")
    assert lsns(records) == [1, 2, 3, 4, 5]
    with anyio.fail_after(10):
        async with running(wal2):
            wal2.start(6)
            wal2.append(6, ops_for(6))
            await wal2.wait(6)
            await wal2.close()
    assert lsns(replay(tmp_path / "wal", mode="absolute")[0]) == list(range(1, 7))


class EventOps(FileOps):
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.paths: dict[int, str] = {}

    def create(self, path: str) -> int:
        fd = super().create(path)
        self.paths[fd] = os.path.basename(path)
        self.events.append(("create", self.paths[fd]))
        return fd

    def fsync(self, fd: int) -> None:
        super().fsync(fd)
        self.events.append(("fsync", self.paths[fd]))


@pytest.mark.anyio
async def test_always_fsyncs_older_segment_before_creating_newer(tmp_path: Path) -> None:
    """So that after a power loss a newer segment never exists next to an incomplete older one."""
    ops = EventOps()
    wal = new_wal(tmp_path, fsync="always", fileops=ops)
    with anyio.fail_after(10):
        async with running(wal):
            wal.start(1)
            wal.append(1, ops_for(1))
            await wal.wait(1)
            wal.append(2, ops_for(2))
            wal.rotate()
            wal.append(3, ops_for(3))
            await wal.wait(3)
            await wal.close()
    one, three = segment_name(1), segment_name(3)
    i = ops.events.index(("create", three))
    assert ("fsync", one) in ops.events[ops.events.index(("fsync", one)) + 1 : i]  # a 2nd fsync, after record 2
    assert lsns(replay(tmp_path / "wal")[0]) == [1, 2, 3]


# ---- write failure (full disk) --------------------------------------------------------------


def _assert_only_good_records(tmp_path: Path, expected: list[int]) -> None:
    records, report, _ = replay(tmp_path / "wal", mode="absolute")
    assert lsns(records) == expected
    check_ops(records)
    assert report.truncated == [] and report.skipped_corrupt == []


@pytest.mark.anyio
@pytest.mark.parametrize("policy", ["always", "everysec"])
async def test_write_failure_is_cut_back_refused_then_retried(tmp_path: Path, policy: str) -> None:
    ops = FailingOps()
    wal = new_wal(tmp_path, fsync=policy, fileops=ops)
    with anyio.fail_after(10):
        async with running(wal):
            wal.start(1)
            for lsn in range(1, 4):
                wal.append(lsn, ops_for(lsn))
            await wal.wait(3)
            seg_path = Path(wal._current.path)  # type: ignore[union-attr]
            good_size = seg_path.stat().st_size
            wal.check_writable()

            ops.fail_all()
            wal.append(4, ops_for(4))
            wal.append(5, ops_for(5))
            with pytest.raises(DurabilityError, match="No space left"):
                await wal.wait(5)
            assert ops.write_failures >= 1
            assert seg_path.stat().st_size == good_size  # the half-written record was cut back
            with pytest.raises(DurabilityError, match="refused"):
                wal.check_writable()
            _assert_only_good_records(tmp_path, [1, 2, 3])

            await wal._sync_once()  # a retry while the disk is still full
            with pytest.raises(DurabilityError):
                wal.check_writable()
            with pytest.raises(DurabilityError):
                await wal.wait(5)
            assert seg_path.stat().st_size == good_size
            _assert_only_good_records(tmp_path, [1, 2, 3])

            ops.heal()
            await wal._sync_once()  # the retry succeeds: the kept records are written, in order
            wal.check_writable()
            assert wal.written_lsn == 5
            await wal.wait(5)
            wal.append(6, ops_for(6))
            await wal.wait(6)
            await wal.sync()
            _assert_only_good_records(tmp_path, [1, 2, 3, 4, 5, 6])
            await wal.close()
    _assert_only_good_records(tmp_path, [1, 2, 3, 4, 5, 6])


@pytest.mark.anyio
async def test_everysec_failure_in_background_write_keeps_refusing(tmp_path: Path) -> None:
    ops = FailingOps()
    wal = new_wal(tmp_path, fsync="everysec", fileops=ops)
    wal.start(1)
    wal.append(1, ops_for(1))
    await wal.wait(1)
    ops.fail_all()
    wal.append(2, ops_for(2))  # its writer has not called wait() yet
    await wal._sync_once()  # the background tick tries to write it and fails
    assert ops.write_failures == 1
    with pytest.raises(DurabilityError):
        wal.check_writable()
    with pytest.raises(DurabilityError):
        await wal.wait(2)
    await wal._sync_once()  # still failing: still refused
    with pytest.raises(DurabilityError):
        wal.check_writable()
    _assert_only_good_records(tmp_path, [1])
    ops.heal()
    await wal._sync_once()
    wal.check_writable()
    await wal.wait(2)
    _assert_only_good_records(tmp_path, [1, 2])
    with anyio.fail_after(10):
        async with running(wal):
            await wal.close()


@pytest.mark.anyio
async def test_always_failure_in_new_segment_does_not_hold_back_older_waiters(tmp_path: Path) -> None:
    ops = FailingOps()
    wal = new_wal(tmp_path, fsync="always", fileops=ops)
    results: dict[int, str] = {}

    async def waiter(lsn: int) -> None:
        try:
            await wal.wait(lsn)
            results[lsn] = "ok"
        except DurabilityError:
            results[lsn] = "error"

    with anyio.fail_after(10):
        async with running(wal):
            wal.start(1)
            wal.append(1, ops_for(1))
            await wal.wait(1)
            first = wal._current
            wal.append(2, ops_for(2))
            wal.rotate()
            wal.append(3, ops_for(3))
            ops.failing = lambda fd: fd != first.fd  # type: ignore[union-attr]
            async with anyio.create_task_group() as tg:
                tg.start_soon(waiter, 2)
                tg.start_soon(waiter, 3)
            assert results == {2: "ok", 3: "error"}
            assert wal.synced_lsn == 2
            _assert_only_good_records(tmp_path, [1, 2])
            ops.heal()
            await wal._sync_once()
            await wal.wait(3)
            await wal.close()
    _assert_only_good_records(tmp_path, [1, 2, 3])


@pytest.mark.anyio
async def test_segment_create_failure_is_a_write_error_not_an_exception_from_append(tmp_path: Path) -> None:
    ops = FailingOps()
    wal = new_wal(tmp_path, fsync="always", segment_bytes=600, compress_min=0, fileops=ops)
    with anyio.fail_after(10):
        async with running(wal):
            wal.start(1)
            wal.append(1, ops_for(1))
            await wal.wait(1)
            ops.fail_create = True
            lsn = 1
            while len(list_segments(str(tmp_path / "wal"))) == 1 and wal._current.first_lsn == 1:  # type: ignore[union-attr]
                lsn += 1
                wal.append(lsn, ops_for(lsn))  # rotation while create() fails: append itself never raises
            wal.append(lsn + 1, ops_for(lsn + 1))
            with pytest.raises(DurabilityError, match="No space left"):
                await wal.wait(lsn + 1)
            with pytest.raises(DurabilityError):
                wal.check_writable()
            ops.fail_create = False
            await wal._sync_once()
            wal.check_writable()
            await wal.wait(lsn + 1)
            await wal.close()
    _assert_only_good_records(tmp_path, list(range(1, lsn + 2)))


@pytest.mark.anyio
@pytest.mark.parametrize("policy", ["always", "everysec"])
async def test_half_written_segment_header_is_removed_and_retried(tmp_path: Path, policy: str) -> None:
    ops = FailingOps()
    wal = new_wal(tmp_path, fsync=policy, fileops=ops)
    d = str(tmp_path / "wal")
    with anyio.fail_after(10):
        async with running(wal):
            wal.start(1)
            wal.append(1, ops_for(1))
            ops.fail_all()  # the very first write is the new segment's header
            with pytest.raises(DurabilityError, match="No space left"):
                await wal.wait(1)
            assert list_segments(d) == []  # the half-written file was removed again
            with pytest.raises(DurabilityError):
                wal.check_writable()
            ops.heal()
            await wal._sync_once()
            wal.check_writable()
            await wal.wait(1)
            await wal.close()
    _assert_only_good_records(tmp_path, [1])
    assert ops.open_fds == set()


@pytest.mark.anyio
async def test_truncate_failure_after_write_failure_is_fatal(tmp_path: Path) -> None:
    ops = FailingOps()
    wal = new_wal(tmp_path, fsync="everysec", fileops=ops)
    wal.start(1)
    wal.append(1, ops_for(1))
    await wal.wait(1)
    ops.fail_all()
    ops.fail_truncate = True
    wal.append(2, ops_for(2))
    with pytest.raises(DurabilityError, match="restart"):
        await wal.wait(2)
    assert wal.fatal_error
    ops.heal()
    ops.fail_truncate = False
    await wal._sync_once()
    with pytest.raises(DurabilityError, match="restarted"):
        wal.check_writable()
    await wal.close()


# ---- fsync failure ---------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("which", ["fsync", "fsync_dir"])
async def test_fsync_failure_is_fatal_until_restart(tmp_path: Path, which: str) -> None:
    ops = FailingOps()
    wal = new_wal(tmp_path, fsync="always", fileops=ops)
    results: list[str] = []

    async def waiter(lsn: int) -> None:
        try:
            await wal.wait(lsn)
            results.append("ok")
        except DurabilityError as exc:
            results.append(str(exc))

    with anyio.fail_after(10):
        async with running(wal):
            wal.start(1)
            setattr(ops, f"fail_{which}", True)
            async with anyio.create_task_group() as tg:
                for lsn in range(1, 6):
                    wal.append(lsn, ops_for(lsn))
                    tg.start_soon(waiter, lsn)
            assert len(results) == 5 and all("restart" in r and "Input/output error" in r for r in results)
            assert wal.synced_lsn == 0
            setattr(ops, f"fail_{which}", False)  # the disk "recovers": memd must still refuse
            await wal._sync_once()
            for _ in range(3):
                with pytest.raises(DurabilityError, match="restarted"):
                    wal.check_writable()
            with pytest.raises(DurabilityError):
                await wal.sync()
            with pytest.raises(DurabilityError):
                await wal.wait(5)
            assert wal.synced_lsn == 0
            await wal.close()  # does not raise
    assert ops.open_fds == set()


@pytest.mark.anyio
async def test_everysec_fsync_failure_fails_the_barrier(tmp_path: Path) -> None:
    ops = FailingOps()
    wal = new_wal(tmp_path, fsync="everysec", fileops=ops)
    with anyio.fail_after(10):
        async with running(wal):
            wal.start(1)
            wal.append(1, ops_for(1))
            await wal.wait(1)  # written to the OS: that is all everysec promised
            ops.fail_fsync = True
            with pytest.raises(DurabilityError, match="fsync of .* failed.*restart"):
                await wal.sync()
            with pytest.raises(DurabilityError, match="restart"):
                wal.check_writable()
            await wal.close()
