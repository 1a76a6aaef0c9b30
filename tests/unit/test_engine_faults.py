"""Engine-level faults: full disk, failed fsync, a flush that cannot keep up.

Faults are injected at the file-system seam (:class:`memd.engine.fileops.FileOps`)
or by a real second SQLite connection holding the database lock — never by
patching the engine's internals.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

import anyio
import pytest

from memd.engine.engine import DB_NAME, WAL_DIR, Engine
from memd.engine.fileops import FileOps
from memd.engine.wal import WAL, RecoveryReport
from memd.errors import DurabilityError, OverloadError


class FlakyDisk(FileOps):
    """Writes succeed until ``full`` is set; then each write stores half its bytes and fails with ENOSPC."""

    def __init__(self) -> None:
        self.full = False
        self.fsync_fails = False

    def write(self, fd: int, data: bytes | memoryview) -> int:
        if self.full:
            half = bytes(data)[: max(1, len(data) // 2)]
            os.write(fd, half)
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(fd, data)

    def fsync(self, fd: int) -> None:
        if self.fsync_fails:
            raise OSError(errno.EIO, "Input/output error")
        super().fsync(fd)


def replay_all(data_dir: Path) -> RecoveryReport:
    report = RecoveryReport()
    for _ in WAL(str(data_dir / WAL_DIR)).replay(0, "absolute", report, repair=False):
        pass
    return report


@pytest.mark.anyio
@pytest.mark.parametrize("policy", ["always", "everysec"])
async def test_full_disk_refuses_writes_keeps_reads_and_recovers(tmp_path: Path, policy: str) -> None:
    disk = FlakyDisk()
    acked: list[bytes] = []
    with anyio.fail_after(20):
        async with Engine(str(tmp_path), fsync=policy, fileops=disk, flush_max_age=3600) as engine:
            ks = engine.keyspace
            for i in range(20):
                ks.set(b"k%d" % i, b"v%d" % i)
                await engine.wait_durable()
                acked.append(b"k%d" % i)
            disk.full = True
            ks.set(b"lost", b"x")
            with pytest.raises(DurabilityError, match="No space left on device"):
                await engine.wait_durable()
            with pytest.raises(DurabilityError, match="writes are refused"):
                engine.check_writable()
            assert ks.get(b"k3") == b"v3", "reads go on while writes are refused"
            # nothing half-written is left in the log: every frame on disk is whole and valid
            report = replay_all(tmp_path)
            assert report.truncated == [] and report.skipped_corrupt == []
            disk.full = False
            await engine.wal.sync()  # the retry (normally once a second) writes the kept record
            engine.check_writable()
            ks.set(b"after", b"y")
            await engine.wait_durable()
            acked.append(b"after")
    async with Engine(str(tmp_path)) as engine:
        for key in acked:
            assert engine.keyspace.get(key) is not None, key
        assert engine.recovery_report.truncated == []


@pytest.mark.anyio
async def test_failed_fsync_is_fatal_for_writes_not_reads(tmp_path: Path) -> None:
    disk = FlakyDisk()
    with anyio.fail_after(20):
        async with Engine(str(tmp_path), fsync="always", fileops=disk) as engine:
            ks = engine.keyspace
            ks.set(b"safe", b"1")
            await engine.wait_durable()
            disk.fsync_fails = True
            ks.set(b"doomed", b"2")
            with pytest.raises(DurabilityError, match="fsync .* failed"):
                await engine.wait_durable()
            disk.fsync_fails = False  # even when the disk "recovers", no write is accepted again
            with pytest.raises(DurabilityError, match="until it is restarted"):
                engine.check_writable()
            with pytest.raises(DurabilityError):
                ks.set(b"more", b"3")
            assert ks.get(b"safe") == b"1"
            assert engine.stats()["wal_error"]
    async with Engine(str(tmp_path)) as engine:
        assert engine.keyspace.get(b"safe") == b"1"


@pytest.mark.anyio
async def test_backpressure_waits_then_overloads_and_loses_nothing(tmp_path: Path) -> None:
    value = b"x" * 1000
    async with Engine(str(tmp_path), flush_max_records=1 << 30, flush_max_bytes=1 << 30, flush_max_age=3600,
                      buffer_max_bytes=50_000, write_timeout=0.3) as engine:
        ks = engine.keyspace
        # a second process holds SQLite's write lock: the flush cannot make progress
        blocker = sqlite3.connect(str(tmp_path / DB_NAME), isolation_level=None)
        blocker.execute("PRAGMA busy_timeout = 0")
        blocker.execute("BEGIN EXCLUSIVE")
        acked = []
        with pytest.raises(OverloadError, match="write buffer full"):
            for i in range(1000):
                await engine.admit()
                ks.set(b"k%04d" % i, value)
                await engine.wait_durable()
                acked.append(b"k%04d" % i)
        assert 40 <= len(acked) < 1000
        assert all(ks.get(k) == value for k in acked), "nothing acknowledged is dropped to save memory"
        blocker.execute("ROLLBACK")
        blocker.close()
        with anyio.fail_after(15):
            await engine.admit()  # the flush catches up: writes are admitted again
        ks.set(b"later", value)
        await engine.wait_durable()
    async with Engine(str(tmp_path)) as engine:
        assert all(engine.keyspace.get(k) == value for k in [*acked, b"later"])


@pytest.mark.anyio
async def test_switching_fsync_away_from_always_acks_a_waiting_writer(tmp_path: Path) -> None:
    """A config reload may change the policy while a writer waits for its fsync under "always"."""
    for policy in ("everysec", "no"):
        async with Engine(str(tmp_path / policy), fsync="always", flush_max_age=3600) as e:
            e.keyspace.set(b"k", b"v")
            lsn = e.last_lsn
            acked = anyio.Event()

            async def waiter() -> None:
                await e.wait_durable(lsn)
                acked.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(waiter)
                await anyio.sleep(0)  # the waiter is now waiting for the group fsync
                e.fsync_policy = policy
                with anyio.fail_after(5):
                    await acked.wait()
            assert e.wal.synced_lsn >= lsn
