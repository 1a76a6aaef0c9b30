"""Verified, rotated backups of the SQLite store (issue 5, "Backups").

A backup is only worth something if it restores, so every step is built to
make a bad one impossible to mistake for a good one:

- **Consistent at a known LSN.** :meth:`Engine.snapshot_to` flushes, then
  copies the store in one read transaction on connections of its own: every
  write acknowledged before the call is in the copy, and writers go on.
- **Atomic files.** The lz4 frame (content checksum on) and its JSON manifest
  are each written as ``.tmp``, fsynced, renamed, and the directory fsynced:
  a crash leaves the old state or a whole file, never half of one.
- **Verified before it counts.** The file is read back and checked end to
  end (:func:`verify_backup`), and only then marked ``"verified": true``. A
  backup that fails is moved to ``failed/`` and the call raises; listing,
  rotation and :func:`last_backup` see verified backups only, and rotation
  never deletes the newest of them.

- **Encrypted when configured.** With ``backup.age_recipients`` set, the
  verified lz4 frame is encrypted with age to those public keys before it
  reaches the backup directory (:mod:`memd.maintenance.backup_age`); the
  plaintext is made and checked in a scratch directory inside the data
  directory, and what the daemon re-checks afterwards is the ciphertext
  against its manifest. The daemon never has the key to read it back.

Heavy work (compression, encryption, hashing, verification, rotation) runs
in worker threads: the daemon's event loop keeps serving while a backup
runs. The on-disk format and the checks live in
:mod:`memd.maintenance.backup_format`, the offline restore in
:mod:`memd.maintenance.restore`; both are re-exported here
(``verify_backup``, ``restore``, ``BackupError``).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import sqlite3
import time
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from memd import __version__
from memd.maintenance import backup_age
from memd.maintenance.backup_format import (
    DIR_MODE, ENCRYPTED_SUFFIX, MANIFEST_FORMAT, MANIFEST_SUFFIX, TMP_SUFFIX, BackupError, compress, free_name,
    fsync_dir, is_manifest_name, iso, load_json, manifest_path, parse_iso, remove, sha256_file,
    unpack_checked, utc, verify_backup, write_json_atomic,
)
from memd.maintenance.restore import DEFAULT_DIR_NAME, restore
from memd.store.sqlitefile import schema_version

if TYPE_CHECKING:
    from memd.config import BackupConfig
    from memd.engine.engine import Engine

__all__ = ["BackupError", "BackupInfo", "last_backup", "list_backups", "restore", "rotate", "run_backup",
           "verify_backup"]

log = logging.getLogger("memd.backup")

FAILED_DIR = "failed"
SCRATCH_DIR = ".backup-scratch"  # in the data directory: an encrypted backup's plaintext never leaves it
STALE_TMP_SECONDS = 3600.0  # a .tmp this old belongs to a backup that crashed, not to one running


@dataclass(frozen=True, slots=True)
class BackupInfo:
    """One verified backup as :func:`list_backups` finds it."""

    path: str
    lsn: int
    created_at: float  # Unix time
    manifest: dict[str, Any]


# ---- making a backup ------------------------------------------------------------------------

_locks: weakref.WeakKeyDictionary[Any, anyio.Lock] = weakref.WeakKeyDictionary()


async def run_backup(engine: Engine, cfg: BackupConfig, *, now: Callable[[], float] = time.time) -> dict[str, Any]:
    """Snapshot, compress, verify, rotate; return a summary for MEMD.BACKUP, the scheduler and the log.

    One backup at a time per engine (the scheduler and MEMD.BACKUP may ask
    together): a second caller waits, then makes its own, newer backup.
    Raises :class:`BackupError` (with what to do) when no verified backup
    came out of it.
    """
    directory = cfg.dir or os.path.join(engine.data_dir, DEFAULT_DIR_NAME)
    recipients = cfg.age_recipients  # read per backup: a reloaded config applies to the next one
    async with _locks.setdefault(engine, anyio.Lock()):
        t0 = time.perf_counter()
        await anyio.to_thread.run_sync(_prepare_dir, directory)
        if recipients:
            path, manifest = await _snapshot_and_encrypt(engine, directory, recipients, now)
        else:
            path, manifest = await _snapshot_and_pack(engine, directory, now)
        try:
            await anyio.to_thread.run_sync(_verify_and_mark, path, now())
        except BackupError as exc:
            where = await anyio.to_thread.run_sync(_set_aside, path, str(exc))
            log.error("backup_failed %s error=%r", where, str(exc))
            raise BackupError(f"the new backup failed verification and {where}: {exc}; the earlier backups "
                              "are untouched: check the disk, then run the backup again") from exc
        deleted = await anyio.to_thread.run_sync(_rotate_logged, directory, cfg, now())
        seconds = time.perf_counter() - t0
    encrypted = f" encrypted={backup_age.ENCRYPTION} recipients={len(recipients)}" if recipients else ""
    log.info("backup_done path=%s lsn=%d bytes=%d compressed=%d seconds=%.3f deleted=%d%s", path, manifest["lsn"],
             manifest["raw_bytes"], manifest["compressed_bytes"], seconds, len(deleted), encrypted)
    summary = {"path": path, "lsn": manifest["lsn"], "bytes": manifest["raw_bytes"],
               "compressed_bytes": manifest["compressed_bytes"], "seconds": round(seconds, 3), "deleted": deleted}
    if recipients:
        summary.update(encryption=backup_age.ENCRYPTION, ciphertext_bytes=manifest["ciphertext_bytes"])
    return summary


def _prepare_dir(directory: str) -> None:
    """Create the backup directory; drop ``.tmp`` files a crashed backup left (they can be large)."""
    try:
        os.makedirs(directory, mode=DIR_MODE, exist_ok=True)
        for entry in os.scandir(directory):
            if entry.name.endswith(TMP_SUFFIX) and entry.is_file(follow_symlinks=False):
                if time.time() - entry.stat(follow_symlinks=False).st_mtime > STALE_TMP_SECONDS:
                    log.warning("backup_stale_tmp_removed path=%s", entry.path)
                    remove(entry.path)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if os.path.lexists(directory) and not os.path.isdir(directory):
            reason = "it exists and is not a directory"
        raise BackupError(f"cannot use the backup directory {directory}: {reason}; fix it or set backup.dir") from exc


async def _snapshot_and_pack(engine: Engine, directory: str, now: Callable[[], float]) -> tuple[str, dict[str, Any]]:
    """The engine's snapshot into a temporary file, then the lz4 frame and its (unverified) manifest."""
    snap = os.path.join(directory, f".snapshot-{uuid.uuid4().hex}.sqlite3{TMP_SUFFIX}")
    try:
        try:
            lsn = await engine.snapshot_to(snap)
        except (OSError, sqlite3.Error) as exc:
            raise BackupError(f"cannot snapshot the store into {directory}: {exc}; "
                              "check free space and permissions there") from exc
        return await anyio.to_thread.run_sync(_pack, snap, directory, lsn, now())
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(remove, snap, snap + "-journal", snap + "-wal", snap + "-shm")


def _pack(snap: str, directory: str, lsn: int, created: float) -> tuple[str, dict[str, Any]]:
    """Compress ``snap`` under its final name and write its manifest (``verified: false`` until checked)."""
    path = free_name(directory, created, lsn)
    tmp = path + TMP_SUFFIX
    try:
        schema = schema_version(snap)
        compress(snap, tmp)
        os.replace(tmp, path)
        fsync_dir(directory)
        manifest = {
            "format": MANIFEST_FORMAT, "file": os.path.basename(path), "lsn": lsn, "created_at": iso(created),
            "raw_bytes": os.path.getsize(snap), "compressed_bytes": os.path.getsize(path),
            "sha256": sha256_file(path), "compression": "lz4-frame", "schema_version": schema,
            "memd_version": __version__, "verified": False, "verified_at": None,
        }
        write_json_atomic(manifest_path(path), manifest)
        return path, manifest
    except (OSError, sqlite3.Error) as exc:
        remove(tmp, path, manifest_path(path))
        raise BackupError(f"cannot write the backup {path}: {getattr(exc, 'strerror', None) or exc}; "
                          "check free space and permissions in the backup directory") from exc


async def _snapshot_and_encrypt(engine: Engine, directory: str, recipients: tuple[str, ...],
                                now: Callable[[], float]) -> tuple[str, dict[str, Any]]:
    """The snapshot, compressed and verified in the data directory's scratch, then encrypted into ``directory``."""
    scratch = os.path.join(engine.data_dir, SCRATCH_DIR)
    await anyio.to_thread.run_sync(_fresh_scratch, scratch)
    try:
        snap = os.path.join(scratch, "snapshot.sqlite3")
        try:
            lsn = await engine.snapshot_to(snap)
        except (OSError, sqlite3.Error) as exc:
            raise BackupError(f"cannot snapshot the store into {scratch}: {exc}; "
                              "check free space and permissions in the data directory") from exc
        return await anyio.to_thread.run_sync(_pack_encrypted, snap, directory, lsn, now(), recipients)
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(_drop_scratch, scratch)


def _fresh_scratch(scratch: str) -> None:
    """An empty scratch directory, mode 0700: what a crashed backup left there is plaintext, and ours."""
    _drop_scratch(scratch)
    try:
        os.mkdir(scratch, 0o700)
    except OSError as exc:
        raise BackupError(f"cannot create the backup scratch directory {scratch}: {exc.strerror or exc}; "
                          "an encrypted backup is prepared there: check the data directory's permissions") from exc


def _drop_scratch(scratch: str) -> None:
    if os.path.lexists(scratch):
        shutil.rmtree(scratch, ignore_errors=True)


def _pack_encrypted(snap: str, directory: str, lsn: int, created: float,
                    recipients: tuple[str, ...]) -> tuple[str, dict[str, Any]]:
    """Compress and verify ``snap`` beside it, then encrypt the frame into ``directory`` with its manifest.

    The frame is verified (sha256, lz4 checksum, integrity_check, LSN)
    before a byte of ciphertext exists: afterwards only the key could tell.
    A frame that fails is not encrypted at all; nothing reaches ``directory``.
    """
    scratch = os.path.dirname(snap)
    frame = os.path.join(scratch, "snapshot.sqlite3.lz4")
    path = free_name(directory, created, lsn, ENCRYPTED_SUFFIX)
    manifest = {
        "format": MANIFEST_FORMAT, "file": os.path.basename(path), "lsn": lsn, "created_at": iso(created),
        "raw_bytes": os.path.getsize(snap), "compression": "lz4-frame", "memd_version": __version__,
    }
    try:
        manifest["schema_version"] = schema_version(snap)
        compress(snap, frame)
        remove(snap)  # the scratch holds one plaintext copy at a time
        manifest.update(compressed_bytes=os.path.getsize(frame), sha256=sha256_file(frame))
    except (OSError, sqlite3.Error) as exc:
        raise BackupError(f"cannot prepare the backup in {scratch}: {getattr(exc, 'strerror', None) or exc}; "
                          "check free space in the data directory") from exc
    check = os.path.join(scratch, "verify.sqlite3")
    try:
        unpack_checked(frame, check, manifest)
    except BackupError as exc:
        raise BackupError(f"the snapshot failed verification before encryption, so nothing was written to "
                          f"{directory}: {exc}; check the data directory's disk, then run the backup again") from exc
    finally:
        remove(check)
    tmp = path + TMP_SUFFIX
    try:
        size, digest = backup_age.encrypt(frame, tmp, recipients)
        os.replace(tmp, path)
        fsync_dir(directory)
        manifest.update(encryption=backup_age.ENCRYPTION, recipients=list(recipients), ciphertext_bytes=size,
                        ciphertext_sha256=digest, verified=False, verified_at=None)
        write_json_atomic(manifest_path(path), manifest)
        return path, manifest
    except OSError as exc:
        remove(tmp, path, manifest_path(path))
        raise BackupError(f"cannot write the backup {path}: {exc.strerror or exc}; "
                          "check free space and permissions in the backup directory") from exc
    except BaseException:
        remove(tmp, path, manifest_path(path))
        raise


def _verify_and_mark(path: str, when: float) -> None:
    manifest = backup_age.verify_without_key(path)
    manifest.update(verified=True, verified_at=iso(when))
    try:
        write_json_atomic(manifest_path(path), manifest)
    except OSError as exc:  # not marked = not counted: treat it like a failed verification
        raise BackupError(f"cannot mark {path} verified: {exc.strerror or exc}") from exc


def _set_aside(path: str, error: str) -> str:
    """Move a backup that failed verification into ``failed/``, the reason in its manifest.

    Returns where it went, for the error message. If even the move fails,
    the file stays where it is, still marked unverified: nothing counts it.
    """
    failed_dir = os.path.join(os.path.dirname(path), FAILED_DIR)
    dest = os.path.join(failed_dir, os.path.basename(path))
    try:
        os.makedirs(failed_dir, mode=DIR_MODE, exist_ok=True)
        os.replace(path, dest)
        if os.path.exists(manifest_path(path)):
            os.replace(manifest_path(path), manifest_path(dest))
        fsync_dir(failed_dir)
        fsync_dir(os.path.dirname(path))
    except OSError as exc:
        return f"could not be moved aside ({exc.strerror or exc}); it stays, unverified, at {path}"
    try:
        manifest = load_json(manifest_path(dest))
        manifest.update(verified=False, error=error)
        write_json_atomic(manifest_path(dest), manifest)
    except (OSError, ValueError, UnicodeDecodeError):
        pass  # the manifest may be what is broken; the error is in the log and the reply
    return f"was moved to {dest}"


def _rotate_logged(directory: str, cfg: BackupConfig, now: float) -> list[str]:
    """Rotation after a good backup: failing to delete old ones is logged, not the new backup's failure."""
    try:
        return rotate(directory, cfg.keep_last, cfg.keep_daily, cfg.keep_weekly, now)
    except OSError as exc:
        log.error("backup_rotate_failed dir=%s error=%r (old backups pile up until this is fixed)",
                  directory, str(exc))
        return []


# ---- listing and rotation -------------------------------------------------------------------

def list_backups(directory: str) -> list[BackupInfo]:
    """Verified backups in ``directory``, newest first; unverified and failed ones are left out,
    and so are encrypted ones whose size is not the one their manifest records."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    found: list[BackupInfo] = []
    for name in names:
        if not is_manifest_name(name):
            continue
        path = os.path.join(directory, name[: -len(MANIFEST_SUFFIX)])
        try:
            manifest = load_json(manifest_path(path))
            if manifest.get("verified") is not True or not os.path.isfile(path):
                continue
            if not _ciphertext_size_ok(path, manifest):
                continue
            found.append(BackupInfo(path, int(manifest["lsn"]), parse_iso(manifest["created_at"]), manifest))
        except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            log.warning("backup_manifest_unreadable path=%s error=%r", manifest_path(path), str(exc))
    found.sort(key=lambda b: (b.created_at, b.lsn, b.path), reverse=True)
    return found


def _ciphertext_size_ok(path: str, manifest: dict[str, Any]) -> bool:
    """An encrypted backup whose size is not its manifest's is left out (so never rotated away).

    A stat per listing is what can be afforded here (INFO lists backups);
    ``memd backup --verify BACKUP`` checks the ciphertext's sha256 without the key.
    """
    if manifest.get("encryption") is None:
        return True
    size = os.path.getsize(path)
    if size == manifest.get("ciphertext_bytes"):
        return True
    log.warning("backup_size_mismatch path=%s bytes=%d manifest_bytes=%r (left out of listing and rotation: "
                "check it with memd backup --verify)", path, size, manifest.get("ciphertext_bytes"))
    return False


def last_backup(directory: str) -> tuple[str, float] | None:
    """The newest verified backup and its creation time (INFO and metrics show its age)."""
    backups = list_backups(directory)
    return (backups[0].path, backups[0].created_at) if backups else None


def rotate(directory: str, keep_last: int, keep_daily: int, keep_weekly: int, now: float) -> list[str]:
    """Delete the verified backups no rule keeps; return their paths.

    Kept: the newest ``keep_last``; the newest backup of each of the last
    ``keep_daily`` UTC days (today included) and of each of the last
    ``keep_weekly`` ISO weeks (this one included), counted back from ``now``;
    always the newest verified backup. Unverified and failed backups are
    never touched: they are the operator's evidence.
    """
    backups = list_backups(directory)
    keep = kept(backups, keep_last, keep_daily, keep_weekly, now)
    deleted = []
    for b in backups:
        if b.path not in keep:
            remove(b.path)  # data first: a crash in between leaves a small orphan manifest, not a big orphan file
            remove(manifest_path(b.path))
            deleted.append(b.path)
    if deleted:
        fsync_dir(directory)
        log.info("backup_rotated deleted=%d kept=%d", len(deleted), len(backups) - len(deleted))
    return deleted


def kept(backups: list[BackupInfo], keep_last: int, keep_daily: int, keep_weekly: int, now: float) -> set[str]:
    """The paths the rules keep; ``backups`` is newest first, so the first met in a day or week is its newest."""
    keep = {b.path for b in backups[: max(1, keep_last)]}  # max(1, ...): never the newest verified one
    today = utc(now).date()
    days = {today - dt.timedelta(days=i) for i in range(keep_daily)}
    weeks = {_iso_week(today - dt.timedelta(weeks=i)) for i in range(keep_weekly)}
    for b in backups:
        day = utc(b.created_at).date()
        if day in days:
            days.discard(day)
            keep.add(b.path)
        if _iso_week(day) in weeks:
            weeks.discard(_iso_week(day))
            keep.add(b.path)
    return keep


def _iso_week(day: dt.date) -> tuple[int, int]:
    week = day.isocalendar()
    return week.year, week.week
