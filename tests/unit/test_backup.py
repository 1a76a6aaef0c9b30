"""Backups in-process with a real Engine: manifest, verification, failures kept aside, rotation, restore.

(The drill against a real daemon process: tests/integration/test_backup_restore.py.)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import lz4.frame
import pytest

from memd import __version__
from memd.cli import main
from memd.config import BackupConfig
from memd.engine.engine import DB_NAME, LOCK_NAME, WAL_DIR, Engine, lock_data_dir
from memd.store.schema import SCHEMA_VERSION
from memd.errors import DataDirLockedError
from memd.maintenance import backup as backup_mod
from memd.maintenance.backup import (
    BackupError, last_backup, list_backups, restore, rotate, run_backup, verify_backup,
)
from memd.maintenance.backup_format import compress, iso, manifest_path, sha256_file, stamp

if TYPE_CHECKING:
    from tests.conftest import FakeClock

pytestmark = pytest.mark.anyio

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.timezone.utc).timestamp()  # a Wednesday, ISO week 48


def at(text: str) -> float:
    """``"2026-11-24 22:00"`` (UTC) as Unix time."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc).timestamp()


def at_of(path: str) -> float:
    """A backup's creation time, from its manifest."""
    with open(manifest_path(path)) as f:
        return dt.datetime.fromisoformat(json.load(f)["created_at"].replace("Z", "+00:00")).timestamp()


@pytest.fixture
async def engine(tmp_path: Path, fake_clock: FakeClock) -> AsyncIterator[Engine]:
    async with Engine(str(tmp_path / "data"), clock=fake_clock, flush_max_age=3600) as e:
        yield e


@pytest.fixture
def cfg(tmp_path: Path) -> BackupConfig:
    return BackupConfig(dir=str(tmp_path / "backups"), keep_last=4, keep_daily=7, keep_weekly=4)


def write_some(engine: Engine, n: int = 200, tag: bytes = b"") -> None:
    ks = engine.keyspace
    for i in range(n):
        ks.set(b"s%d%s" % (i, tag), b"v%d" % i)
    ks.push(b"list" + tag, [b"a", b"b", b"c"], left=False)
    ks.hset(b"hash" + tag, [(b"f", b"1"), (b"g", b"2")])
    engine.memories.put("user-1.prefs", "food" + tag.decode(), '{"likes": "ramen"}')


async def backup_now(engine: Engine, cfg: BackupConfig, clock: FakeClock) -> dict[str, object]:
    clock.advance(60)
    return await run_backup(engine, cfg, now=clock)


# ---- making a backup ------------------------------------------------------------------------

async def test_backup_has_every_acknowledged_write_and_a_complete_manifest(
        engine: Engine, cfg: BackupConfig, fake_clock: FakeClock) -> None:
    write_some(engine)
    await engine.wait_durable()
    summary = await run_backup(engine, cfg, now=fake_clock)
    path = str(summary["path"])
    assert os.path.dirname(path) == cfg.dir
    assert re.fullmatch(r"memd-\d{8}T\d{6}\.\d{3}Z-lsn\d+\.sqlite3\.lz4", os.path.basename(path))
    with open(manifest_path(path)) as f:
        manifest = json.load(f)
    assert manifest["lsn"] == engine.last_lsn == summary["lsn"]
    assert f"-lsn{engine.last_lsn}." in path
    assert manifest["created_at"] == iso(fake_clock()) and manifest["created_at"].endswith("Z")
    assert stamp(fake_clock()) in path
    assert manifest["compressed_bytes"] == os.path.getsize(path) == summary["compressed_bytes"]
    assert manifest["raw_bytes"] == summary["bytes"] > manifest["compressed_bytes"]
    assert manifest["sha256"] == hashlib.sha256(Path(path).read_bytes()).hexdigest()
    assert manifest["schema_version"] == SCHEMA_VERSION and manifest["memd_version"] == __version__
    assert manifest["verified"] is True and manifest["verified_at"]
    assert summary["deleted"] == [] and isinstance(summary["seconds"], float)
    assert os.stat(cfg.dir).st_mode & 0o777 == 0o750
    assert os.stat(path).st_mode & 0o777 == 0o640
    assert sorted(os.listdir(cfg.dir)) == sorted([os.path.basename(path), os.path.basename(manifest_path(path))])
    assert last_backup(cfg.dir) == (path, fake_clock())
    # and the content: every key, collection and memory, at the manifest's LSN
    scratch = os.path.join(str(Path(cfg.dir).parent), "check.sqlite3")
    with lz4.frame.open(path, "rb") as src, open(scratch, "wb") as out:
        out.write(src.read())
    conn = sqlite3.connect(scratch)
    try:
        assert conn.execute("SELECT count(*) FROM keys").fetchone()[0] == 202
        assert conn.execute("SELECT count(*) FROM mem_items").fetchone()[0] == 1
    finally:
        conn.close()


async def test_backup_dir_defaults_to_data_dir_backups(engine: Engine, fake_clock: FakeClock) -> None:
    write_some(engine, 5)
    summary = await run_backup(engine, BackupConfig(dir=""), now=fake_clock)
    assert os.path.dirname(str(summary["path"])) == os.path.join(engine.data_dir, "backups")


async def test_backups_run_one_at_a_time_and_never_share_a_name(
        engine: Engine, cfg: BackupConfig, fake_clock: FakeClock) -> None:
    write_some(engine, 5)
    results: list[dict[str, object]] = []

    async def one() -> None:
        results.append(await run_backup(engine, cfg, now=fake_clock))  # same clock reading: same time and LSN

    async with anyio.create_task_group() as tg:
        tg.start_soon(one)
        tg.start_soon(one)
    paths = {str(r["path"]) for r in results}
    assert len(paths) == 2 and len(list_backups(cfg.dir)) == 2


async def test_heavy_work_runs_off_the_event_loop(engine: Engine, cfg: BackupConfig, fake_clock: FakeClock,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    write_some(engine, 5)

    def slow_compress(src: str, dest: str) -> None:
        time.sleep(0.3)  # blocks whichever thread runs it
        compress(src, dest)

    monkeypatch.setattr(backup_mod, "compress", slow_compress)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await anyio.sleep(0.01)
            ticks += 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(tick)
        await run_backup(engine, cfg, now=fake_clock)
        tg.cancel_scope.cancel()
    assert ticks >= 10, "the event loop was blocked while the backup compressed"

# ---- verification ---------------------------------------------------------------------------

def _flip(path: str, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x40]))


def _edit_manifest(path: str, **changes: object) -> None:
    with open(manifest_path(path)) as f:
        manifest = json.load(f)
    manifest.update(changes)
    with open(manifest_path(path), "w") as f:
        json.dump(manifest, f)


def _resign(path: str) -> None:
    """Make the manifest agree with the (damaged) file: only the deeper checks can catch it now."""
    _edit_manifest(path, sha256=sha256_file(path), compressed_bytes=os.path.getsize(path))


def corrupt_byte(p: str) -> None:
    _flip(p, os.path.getsize(p) // 2)


def truncate(p: str) -> None:
    os.truncate(p, os.path.getsize(p) - 100)


def wrong_sha(p: str) -> None:
    _edit_manifest(p, sha256="0" * 64)


def corrupt_byte_resigned(p: str) -> None:
    _flip(p, os.path.getsize(p) // 2)
    _resign(p)


def checksum_corrupt_resigned(p: str) -> None:
    _flip(p, os.path.getsize(p) - 2)  # inside the frame's content checksum
    _resign(p)


def truncated_resigned(p: str) -> None:
    os.truncate(p, os.path.getsize(p) - 100)
    _resign(p)


def wrong_lsn(p: str) -> None:
    _edit_manifest(p, lsn=123456789)


def missing_manifest(p: str) -> None:
    os.unlink(manifest_path(p))


@pytest.mark.parametrize(("damage", "message"), [
    (corrupt_byte, "sha256"),
    (truncate, "truncated"),
    (wrong_sha, "sha256"),
    (corrupt_byte_resigned, "lz4 frame is damaged"),
    (checksum_corrupt_resigned, "contentChecksum"),
    (truncated_resigned, "lz4 frame is damaged"),
    (wrong_lsn, "manifest says 123456789"),
    (missing_manifest, "manifest"),
])
async def test_verification_catches(engine: Engine, cfg: BackupConfig, fake_clock: FakeClock,
                                    damage: Callable[[str], None], message: str) -> None:
    write_some(engine)
    path = str((await run_backup(engine, cfg, now=fake_clock))["path"])
    assert verify_backup(path)["verified"] is True
    damage(path)
    with pytest.raises(BackupError, match=message):
        verify_backup(path)
    assert not [n for n in os.listdir(cfg.dir) if n.endswith(".tmp")], "no scratch file may be left"


async def test_verification_catches_a_damaged_database_inside_a_sound_frame(tmp_path: Path) -> None:
    db = tmp_path / "bad.sqlite3"
    conn = sqlite3.connect(db)
    conn.executescript("PRAGMA user_version = 2; CREATE TABLE meta (name TEXT PRIMARY KEY, value);"
                       "INSERT INTO meta VALUES ('flushed_lsn', 7); CREATE TABLE t (x);"
                       "CREATE INDEX tx ON t (x);")
    conn.executemany("INSERT INTO t VALUES (?)", [(b"%050d" % i,) for i in range(2000)])
    conn.commit()
    conn.close()
    _flip(str(db), 4096 * 3)  # page 4's b-tree page type: no longer a valid page
    path = str(tmp_path / "memd-x.sqlite3.lz4")
    compress(str(db), path)
    with open(manifest_path(path), "w") as f:
        json.dump({"file": os.path.basename(path), "lsn": 7, "created_at": iso(NOW), "schema_version": 2,
                   "raw_bytes": os.path.getsize(db), "compressed_bytes": os.path.getsize(path),
                   "sha256": sha256_file(path), "memd_version": __version__, "verified": True}, f)
    with pytest.raises(BackupError, match="integrity_check failed|cannot be read"):
        verify_backup(path)


async def test_a_backup_failing_verification_is_kept_aside_and_never_counted(
        engine: Engine, cfg: BackupConfig, fake_clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    write_some(engine)
    good = str((await backup_now(engine, cfg, fake_clock))["path"])

    def flaky_compress(src: str, dest: str) -> None:  # a bit flips on its way to the disk
        compress(src, dest)
        _flip(dest, os.path.getsize(dest) // 2)

    monkeypatch.setattr(backup_mod, "compress", flaky_compress)
    write_some(engine, tag=b"x")
    with pytest.raises(BackupError, match=r"failed verification and was moved to .*/failed/.*lz4 frame"):
        await backup_now(engine, cfg, fake_clock)
    failed = os.path.join(cfg.dir, "failed")
    names = sorted(os.listdir(failed))
    assert len(names) == 2 and names[1] == names[0] + ".json"
    with open(os.path.join(failed, names[1])) as f:
        manifest = json.load(f)
    assert manifest["verified"] is False and "lz4 frame" in manifest["error"]
    assert [b.path for b in list_backups(cfg.dir)] == [good]
    assert last_backup(cfg.dir) == (good, at_of(good))
    # rotation afterwards leaves both the good one and the failed one alone
    monkeypatch.undo()
    fake_clock.advance(3600)
    assert rotate(cfg.dir, 1, 0, 0, fake_clock()) == []
    assert sorted(os.listdir(failed)) == names


async def test_run_backup_rotates(engine: Engine, tmp_path: Path, fake_clock: FakeClock) -> None:
    cfg = BackupConfig(dir=str(tmp_path / "b"), keep_last=2, keep_daily=0, keep_weekly=0)
    paths = []
    for i in range(4):
        write_some(engine, 3, tag=b"%d" % i)
        summary = await backup_now(engine, cfg, fake_clock)
        paths.append(str(summary["path"]))
        assert summary["deleted"] == ([paths[i - 2]] if i >= 2 else [])
    assert [b.path for b in list_backups(cfg.dir)] == paths[:1:-1]
    assert len(os.listdir(cfg.dir)) == 4


# ---- rotation -------------------------------------------------------------------------------

def fake_backup(directory: str, t: float, *, lsn: int = 1, verified: bool = True) -> str:
    """A backup as rotation sees it (a file and its manifest): rotation reads manifests only."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"memd-{stamp(t)}-lsn{lsn}.sqlite3.lz4")
    Path(path).write_bytes(b"x")
    with open(manifest_path(path), "w") as f:
        json.dump({"file": os.path.basename(path), "lsn": lsn, "created_at": iso(t), "verified": verified}, f)
    return path


def test_rotation_keeps_last_daily_and_weekly(tmp_path: Path) -> None:
    d = str(tmp_path)
    b = {name: fake_backup(d, at(t)) for name, t in {
        "A": "2026-11-25 10:00", "B": "2026-11-25 04:00",  # newest two: keep_last
        "C": "2026-11-24 22:00", "D": "2026-11-24 10:00",  # C: newest of Nov 24
        "E": "2026-11-23 01:00",                           # newest of Nov 23 (3rd day)
        "F": "2026-11-22 23:00", "G": "2026-11-20 12:00", "H": "2026-11-16 08:00",  # week 47: F newest
        "I": "2026-11-15 23:59", "J": "2026-11-09 00:00",  # week 46: I
        "K": "2026-11-08 12:00", "L": "2025-12-31 12:00",  # week 45 and older: outside every rule
    }.items()}
    deleted = rotate(d, keep_last=2, keep_daily=3, keep_weekly=3, now=NOW)
    assert sorted(deleted) == sorted(b[n] for n in "DGHJKL")
    assert sorted(x.path for x in list_backups(d)) == sorted(b[n] for n in "ABCEFI")
    for n in "DGHJKL":
        assert not os.path.exists(b[n]) and not os.path.exists(manifest_path(b[n]))
    assert rotate(d, keep_last=2, keep_daily=3, keep_weekly=3, now=NOW) == [], "rotation is idempotent"


def test_rotation_uses_iso_weeks_across_the_new_year(tmp_path: Path) -> None:
    d = str(tmp_path)
    b = {name: fake_backup(d, at(t)) for name, t in {
        "A": "2026-01-01 10:00",  # Thursday, 2026-W01
        "B": "2025-12-29 10:00",  # Monday, also 2026-W01
        "C": "2025-12-28 10:00",  # Sunday, 2025-W52
        "D": "2025-12-22 10:00",  # 2025-W52 too
        "E": "2025-12-21 10:00",  # 2025-W51
    }.items()}
    deleted = rotate(d, keep_last=1, keep_daily=0, keep_weekly=2, now=at("2026-01-02 12:00"))
    assert sorted(deleted) == sorted(b[n] for n in "BDE")


def test_rotation_over_many_backups(tmp_path: Path) -> None:
    d = str(tmp_path)
    times = [NOW - 6 * 3600 * i - 1800 for i in range(4 * 60)]  # every 6 h for 60 days
    for t in times:
        fake_backup(d, t)
    rotate(d, keep_last=4, keep_daily=7, keep_weekly=4, now=NOW)
    kept = [b.created_at for b in list_backups(d)]
    assert kept[:4] == times[:4]
    days = {dt.datetime.fromtimestamp(t, dt.timezone.utc).date() for t in kept}
    today = dt.datetime.fromtimestamp(NOW, dt.timezone.utc).date()
    assert {today - dt.timedelta(days=i) for i in range(7)} <= days
    newest_per_day: dict[dt.date, float] = {}
    for t in times:  # newest first
        newest_per_day.setdefault(dt.datetime.fromtimestamp(t, dt.timezone.utc).date(), t)
    for i in range(7):
        assert newest_per_day[today - dt.timedelta(days=i)] in kept
    assert min(kept) > NOW - 28 * 86400 - 86400 * 7, "nothing older than the weekly window"
    assert len(kept) <= 4 + 7 + 4
    assert rotate(d, keep_last=4, keep_daily=7, keep_weekly=4, now=NOW) == []


def test_rotation_never_deletes_the_newest_verified_backup(tmp_path: Path) -> None:
    d = str(tmp_path)
    old = [fake_backup(d, at("2025-01-0%d 12:00" % i)) for i in range(1, 4)]  # far outside every window
    unverified = fake_backup(d, at("2026-11-25 11:00"), verified=False)  # newer, but never verified
    failed = fake_backup(os.path.join(d, "failed"), at("2026-11-25 11:30"), verified=False)
    deleted = rotate(d, keep_last=0, keep_daily=0, keep_weekly=0, now=NOW)
    assert sorted(deleted) == sorted(old[:2])
    assert [b.path for b in list_backups(d)] == [old[2]]
    assert os.path.exists(unverified) and os.path.exists(manifest_path(unverified))
    assert os.path.exists(failed) and os.path.exists(manifest_path(failed))
    assert rotate(d, keep_last=0, keep_daily=0, keep_weekly=0, now=NOW + 10 * 365 * 86400) == []


def test_listing_an_absent_directory_is_empty(tmp_path: Path) -> None:
    assert list_backups(str(tmp_path / "none")) == [] and last_backup(str(tmp_path / "none")) is None


# ---- restore --------------------------------------------------------------------------------

async def _leave_unflushed() -> None:
    return None


async def test_restore_refuses_a_locked_data_dir(engine: Engine, cfg: BackupConfig, fake_clock: FakeClock,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    write_some(engine)
    path = str((await run_backup(engine, cfg, now=fake_clock))["path"])
    before = sorted(os.listdir(engine.data_dir))
    with pytest.raises(DataDirLockedError, match="in use by another memd process"):
        restore(path, engine.data_dir)  # the engine holds the lock, as a running daemon does
    assert main(["restore", path, "--data-dir", engine.data_dir]) == 2
    err = capsys.readouterr().err
    assert "in use by another memd process" in err and "Traceback" not in err and err.count("\n") == 1
    assert sorted(os.listdir(engine.data_dir)) == before


async def test_restore_moves_wal_segments_and_everything_else_aside(tmp_path: Path, fake_clock: FakeClock) -> None:
    data, cfg = str(tmp_path / "data"), BackupConfig(dir=str(tmp_path / "data" / "backups"))
    async with Engine(data, clock=fake_clock, flush_max_age=3600) as engine:
        write_some(engine)
        path = str((await run_backup(engine, cfg, now=fake_clock))["path"])
        engine.keyspace.set(b"after-backup", b"only in the WAL")
        await engine.wait_durable()
        engine._flush_all = _leave_unflushed  # type: ignore[method-assign]  # like a kill: the WAL holds it
    segments = sorted(os.listdir(os.path.join(data, WAL_DIR)))
    assert segments, "the write after the backup must be in a WAL segment"
    Path(data, DB_NAME + "-wal").write_bytes(b"stale sqlite wal")  # as a killed daemon may leave them
    Path(data, DB_NAME + "-shm").write_bytes(b"stale shm")
    Path(data, "notes.txt").write_text("operator's file")
    old_db = Path(data, DB_NAME).read_bytes()

    fake_clock.advance(60)
    aside = restore(path, data, now=fake_clock)
    assert aside == os.path.join(data, "before-restore-" + stamp(fake_clock()))
    assert sorted(os.listdir(os.path.join(aside, WAL_DIR))) == segments
    assert sorted(os.listdir(aside)) == sorted([DB_NAME, DB_NAME + "-wal", DB_NAME + "-shm", WAL_DIR, "notes.txt"])
    assert Path(aside, DB_NAME).read_bytes() == old_db
    assert sorted(os.listdir(data)) == sorted([DB_NAME, LOCK_NAME, "backups", os.path.basename(aside)])
    assert list_backups(cfg.dir)[0].path == path, "the backups directory inside the data dir stays"
    async with Engine(data, clock=fake_clock, flush_max_age=3600) as engine:
        assert engine.keyspace.get(b"after-backup") is None, "the old WAL must not replay onto the snapshot"
        assert engine.keyspace.get(b"s7") == b"v7"
        assert engine.keyspace.lrange(b"list", 0, -1) == [b"a", b"b", b"c"]
        assert engine.memories.get("user-1.prefs", "food") is not None
        engine.keyspace.set(b"new", b"1")  # and it takes writes again
    # a second restore keeps the first one's aside directory where it is
    fake_clock.advance(60)
    aside2 = restore(manifest_path(path), data, now=fake_clock)  # the manifest's path works too
    assert os.path.isdir(aside) and aside2 != aside and os.path.isdir(os.path.join(aside2, WAL_DIR))


async def test_restore_into_a_destroyed_data_dir(engine: Engine, tmp_path: Path, cfg: BackupConfig,
                                                 fake_clock: FakeClock) -> None:
    write_some(engine)
    path = str((await run_backup(engine, cfg, now=fake_clock))["path"])
    target = str(tmp_path / "fresh" / "data")
    restore(path, target)
    db = os.path.join(target, DB_NAME)
    assert os.stat(db).st_mode & 0o777 == 0o640, "no old file: the mode follows the directory (0750 -> 0640)"
    async with Engine(target, clock=fake_clock) as e2:
        assert e2.keyspace.get(b"s1") == b"v1"
        assert e2.last_lsn >= engine.last_lsn


async def test_restore_keeps_ownership_and_modes(engine: Engine, tmp_path: Path, cfg: BackupConfig,
                                                 fake_clock: FakeClock) -> None:
    write_some(engine)
    path = str((await run_backup(engine, cfg, now=fake_clock))["path"])
    target = tmp_path / "target"
    target.mkdir()
    os.chmod(target, 0o700)
    Path(target, DB_NAME).write_bytes(b"old")
    os.chmod(target / DB_NAME, 0o600)
    owner = (os.getuid(), os.getgid())
    if os.geteuid() == 0:  # root can give files away: check that restore gives them back
        owner = (4242, 4343)
        os.chown(target, *owner)
        os.chown(target / DB_NAME, *owner)
    aside = restore(path, str(target))
    st = os.stat(target / DB_NAME)
    assert (st.st_uid, st.st_gid) == owner and st.st_mode & 0o7777 == 0o600
    dst = os.stat(target)
    assert (dst.st_uid, dst.st_gid) == owner and dst.st_mode & 0o7777 == 0o700, "the directory is untouched"
    ast = os.stat(aside)
    assert (ast.st_uid, ast.st_gid) == owner and ast.st_mode & 0o7777 == 0o700
    lst = os.stat(target / LOCK_NAME)
    assert (lst.st_uid, lst.st_gid) == owner, "the daemon's user must be able to open the lock file"


async def test_restore_of_a_bad_backup_changes_nothing(engine: Engine, tmp_path: Path, cfg: BackupConfig,
                                                      fake_clock: FakeClock,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    write_some(engine)
    path = str((await run_backup(engine, cfg, now=fake_clock))["path"])
    corrupt_byte(path)
    target = tmp_path / "target"
    target.mkdir()
    Path(target, DB_NAME).write_bytes(b"old")
    os.mkdir(target / WAL_DIR)
    with pytest.raises(BackupError, match="sha256"):
        restore(path, str(target))
    assert sorted(os.listdir(target)) == sorted([DB_NAME, WAL_DIR, LOCK_NAME])
    assert Path(target, DB_NAME).read_bytes() == b"old"
    assert main(["restore", path, "--data-dir", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("memd restore: ") and "sha256" in err and err.count("\n") == 1
    assert main(["restore", str(tmp_path / "nope.lz4"), "--data-dir", str(target)]) == 2
    assert "no such backup file" in capsys.readouterr().err


def test_cli_backup_without_a_daemon_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sock = str(tmp_path / "none.sock")
    assert main(["backup", "--socket", sock]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"memd backup: no daemon answers on {sock}") and err.count("\n") == 1


def test_restore_refuses_while_the_lock_is_held_by_another_holder(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    fd = lock_data_dir(data)  # e.g. `memd check` running
    try:
        fake = fake_backup(str(tmp_path / "b"), NOW)
        with pytest.raises(DataDirLockedError):
            restore(fake, data)
    finally:
        os.close(fd)
