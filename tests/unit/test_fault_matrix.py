"""The fault matrix: each fault, then a restart, then "nothing acknowledged is lost".

Faults are injected at the seams memd already has — the WAL's file-system
calls (:class:`memd.engine.fileops.FileOps`), the engine's clock, the
store's writer connection (a real ``PRAGMA max_page_count`` gives a real
SQLITE_FULL) — or, for errors SQLite cannot be made to raise on demand
(EIO, "disk I/O error"), by a thin wrapper around ``Store.flush`` that
fails before the real flush runs. Nothing patches the engine's internals.

"Restart" means a crash restart: the data directory is copied while the
engine still runs (what ``kill -9`` leaves: the OS has every byte that was
written), and a new engine recovers from the copy, so the WAL replay is what
is checked, not the final flush of a clean shutdown. The daemon-level cases
(corrupt SQLite file, missing WAL segment) are in tests/crash/test_fault_restart.py.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

import memd.commands.server  # noqa: F401  (registers INFO and MEMD.STATS)
from memd.commands import COMMANDS, Context
from memd.engine.engine import Engine
from memd.engine.fileops import FileOps
from memd.engine.memtable import ENTRY_COST, Memtable
from memd.errors import DurabilityError, OverloadError, StoreDamagedError, WALCorruptError
from tests.conftest import FakeClock

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


class FaultyDisk(FileOps):
    """The WAL's file system, failing ``write`` or ``fsync`` with a chosen errno while armed."""

    def __init__(self) -> None:
        self.write_errno: int | None = None
        self.fsync_errno: int | None = None

    def write(self, fd: int, data: bytes | memoryview) -> int:
        if self.write_errno is not None:
            raise OSError(self.write_errno, os.strerror(self.write_errno))
        return super().write(fd, data)

    def fsync(self, fd: int) -> None:
        if self.fsync_errno is not None:
            raise OSError(self.fsync_errno, os.strerror(self.fsync_errno))
        super().fsync(fd)


def crash_copy(engine: Engine, dest: Path) -> str:
    """The data directory as a SIGKILL would leave it now (the lock file is not copied: no one holds it)."""
    shutil.copytree(engine.data_dir, dest, ignore=shutil.ignore_patterns("memd.lock"))
    return str(dest)


async def assert_all_there(data_dir: str, acked: dict[bytes, bytes], clock: Callable[[], float] | None = None
                           ) -> Engine:
    """Open ``data_dir`` (recovery), check every acknowledged write, close; returns the closed engine."""
    async with Engine(data_dir, flush_max_age=3600, **({"clock": clock} if clock else {})) as engine:
        lost = [k for k, v in acked.items() if engine.keyspace.get(k) != v]
        assert not lost, f"{len(lost)} acknowledged writes lost after restart, e.g. {lost[:3]}"
    return engine


def info(engine: Engine, section: str) -> dict[str, str]:
    """INFO ``section`` through the command handler, parsed as a client would."""
    text = COMMANDS[b"info"].handler(Context(engine=engine), [section.encode()]).decode()
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


async def write_acked(engine: Engine, acked: dict[bytes, bytes], n: int = 30) -> None:
    """``n`` SETs, each acknowledged (durable by the engine's policy) before it is counted in ``acked``."""
    for i in range(n):
        engine.keyspace.set(b"a%d" % i, b"v%d" % i)
        await engine.wait_durable()
        acked[b"a%d" % i] = b"v%d" % i


# ---- 1. EIO on a WAL write ------------------------------------------------------------------

@pytest.mark.parametrize("policy", ["always", "everysec"])
async def test_eio_on_wal_write(tmp_path: Path, policy: str) -> None:
    disk = FaultyDisk()
    acked: dict[bytes, bytes] = {}
    with anyio.fail_after(30):
        async with Engine(str(tmp_path / "data"), fsync=policy, fileops=disk, flush_max_age=3600) as engine:
            ks = engine.keyspace
            await write_acked(engine, acked)
            disk.write_errno = errno.EIO
            ks.set(b"unacked", b"x")
            with pytest.raises(DurabilityError, match="Input/output error"):
                await engine.wait_durable()
            with pytest.raises(DurabilityError, match="writes are refused") as refused:
                engine.check_writable()  # new writes get the error instead of a false success
            assert "has room" not in str(refused.value), "an I/O error is not reported as a full disk"
            assert ks.get(b"a7") == b"v7", "reads go on"
            assert "Input/output error" in info(engine, "persistence")["memd_wal_error"]
            disk.write_errno = None
            await engine.wal.sync()  # the syncer's retry (once a second) writes the kept record
            engine.check_writable()
            ks.set(b"after", b"y")
            await engine.wait_durable()
            acked[b"after"] = b"y"
            copy = crash_copy(engine, tmp_path / "crash")
    recovered = await assert_all_there(copy, acked)
    assert recovered.recovery_report.truncated == [], "no partial record was left in the log"
    await assert_all_there(str(tmp_path / "data"), acked)  # and after the clean shutdown


# ---- 2. EIO and ENOSPC on fsync of the WAL --------------------------------------------------

@pytest.mark.parametrize("policy", ["always", "everysec"])
@pytest.mark.parametrize("code", [errno.EIO, errno.ENOSPC])
async def test_failed_wal_fsync(tmp_path: Path, policy: str, code: int) -> None:
    disk = FaultyDisk()
    acked: dict[bytes, bytes] = {}
    with anyio.fail_after(30):
        async with Engine(str(tmp_path / "data"), fsync=policy, fileops=disk, flush_max_age=3600) as engine:
            ks = engine.keyspace
            await write_acked(engine, acked)
            await engine.sync()
            disk.fsync_errno = code
            ks.set(b"b", b"1")
            if policy == "always":  # the reply waits for the fsync, which failed: not acknowledged
                with pytest.raises(DurabilityError, match="fsync .* failed"):
                    await engine.wait_durable()
            else:  # everysec acknowledges once the OS has the bytes; the background fsync then fails
                await engine.wait_durable()
                acked[b"b"] = b"1"
                with pytest.raises(DurabilityError, match="fsync .* failed"):
                    await engine.sync()
            disk.fsync_errno = None  # the disk "recovers": the kernel may have dropped dirty pages meanwhile
            with pytest.raises(DurabilityError, match="until it is restarted"):
                engine.check_writable()
            assert ks.get(b"a3") == b"v3", "reads go on"
            assert "fsync" in info(engine, "persistence")["memd_wal_error"]
            copy = crash_copy(engine, tmp_path / "crash")
    await assert_all_there(copy, acked)
    async with Engine(str(tmp_path / "data"), fsync=policy, flush_max_age=3600) as engine:
        engine.keyspace.set(b"c", b"2")  # a restart is what makes writes possible again
        await engine.wait_durable()
        acked[b"c"] = b"2"
    await assert_all_there(str(tmp_path / "data"), acked)


# ---- 3. errors during a flush to SQLite -----------------------------------------------------

class FailingFlush:
    """Stands in for ``Store.flush`` on one store: raises ``error`` while armed, else flushes."""

    def __init__(self, real: Callable[[Memtable], Awaitable[None]], error: Exception) -> None:
        self.real, self.error, self.armed, self.failures = real, error, True, 0

    async def __call__(self, table: Memtable) -> None:
        if self.armed:
            self.failures += 1
            raise self.error
        await self.real(table)


async def arm(engine: Engine, kind: str) -> Callable[[], Awaitable[None]]:
    """Make the next flushes fail with ``kind``; return the function that disarms it."""
    store: Any = engine.store
    if kind == "sqlite-full":  # a real SQLITE_FULL: the file may not grow by one page
        pages = (await store.execute("PRAGMA page_count"))[0][0]
        await store.execute(f"PRAGMA max_page_count = {pages}")

        async def disarm_full() -> None:
            await store.execute("PRAGMA max_page_count = 1073741823")
        return disarm_full
    error: Exception = {"eio": OSError(errno.EIO, "Input/output error"),
                        "disk-io-error": sqlite3.OperationalError("disk I/O error"),
                        # what the store raises for sqlite3's DatabaseError (a damaged file)
                        "corrupt": StoreDamagedError("memd.sqlite3: database disk image is malformed")}[kind]
    wrapper = FailingFlush(store.flush, error)
    store.flush = wrapper

    async def disarm() -> None:
        wrapper.armed = False
    return disarm


@pytest.mark.parametrize("kind", ["eio", "disk-io-error", "sqlite-full", "corrupt"])
async def test_flush_errors_buffer_up_to_the_bound_then_retry(tmp_path: Path, kind: str) -> None:
    value = b"x" * 500
    acked: dict[bytes, bytes] = {}
    expected_error = {"eio": "Input/output error", "disk-io-error": "disk I/O error",
                      "sqlite-full": "database or disk is full", "corrupt": "database disk image is malformed"}[kind]
    with anyio.fail_after(45):
        async with Engine(str(tmp_path / "data"), flush_max_records=20, flush_max_age=3600,
                          buffer_max_bytes=40_000, write_timeout=0.5) as engine:
            ks = engine.keyspace
            ks.set(b"first", b"1")
            await engine.flush()  # the store has its tables and a first flush behind it
            acked[b"first"] = b"1"
            disarm = await arm(engine, kind)
            overloaded = None
            for i in range(2000):  # writes go on into the buffer while every flush fails...
                try:
                    await engine.admit()
                except OverloadError as exc:
                    overloaded = str(exc)
                    break
                ks.set(b"k%04d" % i, value)
                await engine.wait_durable()
                acked[b"k%04d" % i] = value
            # ...up to the backpressure bound, then writers get a clear error naming the cause
            assert overloaded is not None and "write buffer full" in overloaded
            assert expected_error in overloaded
            assert 40 <= len(acked) < 2000
            # (over by one write at most: its entry, key and value as the buffer counts them)
            assert engine.buffered_bytes() <= engine.buffer_max_bytes + ENTRY_COST + 64 + len(value)
            persistence = info(engine, "persistence")
            assert expected_error in persistence["memd_flush_error"]
            assert int(persistence["memd_flush_failures"]) >= 1
            if kind == "corrupt":  # no retry mends a damaged file: INFO says what will
                assert f"memd check --data-dir {engine.data_dir}" in persistence["memd_flush_error"]
                assert "restore the latest backup" in persistence["memd_flush_error"]
            assert all(ks.get(k) == v for k, v in acked.items()), "reads see every buffered write"
            copy = crash_copy(engine, tmp_path / "crash")  # a crash while the flush is failing
            await disarm()
            # no writer knocks any more: the flush loop's own retry (once a second) must drain the buffer
            with anyio.fail_after(15):
                while engine.store.flushed_lsn < engine.last_lsn:
                    await anyio.sleep(0.05)
            assert info(engine, "persistence")["memd_flush_error"] == ""
            await engine.admit()  # writers are admitted again at once
            ks.set(b"later", b"2")
            await engine.wait_durable()
            acked[b"later"] = b"2"
    await assert_all_there(copy, {k: v for k, v in acked.items() if k != b"later"})
    await assert_all_there(str(tmp_path / "data"), acked)


async def test_failed_flush_is_retried_when_no_write_follows(tmp_path: Path) -> None:
    """The retry must not wait for the next write or for flush_max_age (an hour here): the buffer
    of an idle daemon would otherwise stay unflushed, and its WAL undeleted, long after the disk healed."""
    async with Engine(str(tmp_path / "data"), flush_max_records=5, flush_max_age=3600) as engine:
        await engine.flush()
        disarm = await arm(engine, "disk-io-error")
        for i in range(5):  # the fifth write asks for a flush, which fails; then nobody writes
            engine.keyspace.set(b"k%d" % i, b"v")
        await engine.wait_durable()
        with anyio.fail_after(15):
            while engine.flush_failures < 1:
                await anyio.sleep(0.05)
            await disarm()
            # the engine clears flush_error just after the store's LSN moves (one worker-thread call later)
            while engine.store.flushed_lsn < engine.last_lsn or engine.flush_error is not None:
                await anyio.sleep(0.05)
        assert engine.flush_error is None and engine.store.flushed_lsn == engine.last_lsn


# ---- 5. (engine level) the oldest WAL segment missing ---------------------------------------

async def test_missing_oldest_segment_names_the_range_after_the_flushed_lsn(tmp_path: Path) -> None:
    """The middle-of-the-log case runs against a real daemon (tests/crash/test_fault_restart.py);
    here the segment right after what SQLite holds is gone, so only the store's LSN bounds the gap."""
    async with Engine(str(tmp_path / "data"), fsync="always", wal_segment_bytes=4096, flush_max_age=3600) as engine:
        for i in range(20):
            engine.keyspace.set(b"f%d" % i, b"v")
        await engine.wait_durable()
        await engine.flush()  # SQLite holds LSNs 1..20 and their segment is deleted
        flushed = engine.store.flushed_lsn
        for i in range(200):
            engine.keyspace.set(b"k%d" % i, b"x" * 100)
        await engine.wait_durable()
        copy = Path(crash_copy(engine, tmp_path / "crash"))
    segments = sorted((copy / "wal").iterdir())
    assert len(segments) >= 3 and int(segments[0].name.split(".")[0]) == flushed + 1
    segments[0].unlink()
    nxt = int(segments[1].name.split(".")[0])
    with pytest.raises(WALCorruptError, match=rf"LSNs {flushed + 1}\.\.{nxt - 1} are missing"):
        async with Engine(str(copy)):
            pass


# ---- 6. the wall clock jumps ----------------------------------------------------------------

async def test_clock_jumps_forward_expire_at_most_the_jump_early(tmp_path: Path, fake_clock: FakeClock) -> None:
    async with Engine(str(tmp_path / "data"), clock=fake_clock, flush_max_age=3600) as engine:
        ks = engine.keyspace
        now = ks.now_ms()
        for s in (10, 60, 600):
            ks.set(b"t%d" % s, b"v", expires_at=now + s * 1000)
        ks.set(b"forever", b"v")
        await engine.flush()
        ks.set(b"buffered", b"v", expires_at=now + 600_000)
        fake_clock.advance(30)  # a jump forward of 30 s: what has less than 30 s left expires, nothing else
        assert ks.get(b"t10") is None
        assert ks.get(b"t60") == b"v" and ks.pttl(b"t60") == 30_000
        assert ks.pttl(b"t600") == 570_000 and ks.pttl(b"buffered") == 570_000
        assert ks.get(b"forever") == b"v" and ks.pttl(b"forever") == -1


async def test_clock_jumping_back_neither_revives_nor_stretches(tmp_path: Path, fake_clock: FakeClock) -> None:
    """A key seen expired stays expired, and no TTL ever grows, when the wall clock steps back.

    memd's clock never runs backwards: after a step back it holds until the
    wall clock catches up. Keys then expire late by at most the step, never early.
    """
    async with Engine(str(tmp_path / "data"), clock=fake_clock, flush_max_age=3600) as engine:
        ks, mem = engine.keyspace, engine.memories
        now = ks.now_ms()
        ks.set(b"short", b"v", expires_at=now + 5_000)
        ks.set(b"long", b"v", expires_at=now + 60_000)
        mem.put("ns", "m", '{"a": 1}', ttl_ms=5_000)
        await engine.flush()
        ks.set(b"short-buffered", b"v", expires_at=now + 5_000)
        fake_clock.advance(10)
        assert ks.get(b"short") is None and ks.get(b"short-buffered") is None and mem.get("ns", "m") is None
        assert ks.pttl(b"long") == 50_000
        fake_clock.advance(-3600)  # an NTP step, a VM restored from a snapshot: an hour back
        assert ks.get(b"short") is None, "an expired key came back when the clock stepped back"
        assert ks.get(b"short-buffered") is None, "an expired buffered key came back"
        assert mem.get("ns", "m") is None, "an expired memory came back"
        assert ks.pttl(b"long") == 50_000, "a TTL grew when the clock stepped back"
        ks.set(b"new", b"v", expires_at=ks.now_ms() + 1_000)
        fake_clock.advance(3600 + 1)  # the wall clock has caught up and moved on by 1 s
        assert ks.get(b"new") is None and ks.pttl(b"long") == 49_000
        assert engine.stats()["clock_steps_back"] == 1
    # after a restart: every absolute expiry is what it was
    fake_clock.advance(10)
    async with Engine(str(tmp_path / "data"), clock=fake_clock, flush_max_age=3600) as engine:
        assert engine.keyspace.pttl(b"long") == 39_000
        assert engine.keyspace.get(b"short") is None


async def test_clock_jumps_lose_no_acknowledged_write(tmp_path: Path, fake_clock: FakeClock) -> None:
    """Back and forth across flushes and a crash restart: keys without expiry, and keys whose expiry
    lies beyond every time the clock showed, are all there."""
    acked: dict[bytes, bytes] = {}
    async with Engine(str(tmp_path / "data"), clock=fake_clock, flush_max_records=10, flush_max_age=3600) as engine:
        ks = engine.keyspace
        far = ks.now_ms() + 10 * 86_400_000
        for step, jump in enumerate([0, -86_400, 7_200, -60, 86_400, -7_200]):
            fake_clock.advance(jump)
            for i in range(15):
                key = b"s%d-%d" % (step, i)
                ks.set(key, b"v", expires_at=far if i % 2 else None)
                acked[key] = b"v"
            await engine.wait_durable()
        copy = crash_copy(engine, tmp_path / "crash")
    await assert_all_there(copy, acked, clock=fake_clock)
    await assert_all_there(str(tmp_path / "data"), acked, clock=fake_clock)
