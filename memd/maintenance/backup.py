"""Verified, rotated backups of the SQLite store, and the offline restore (issue 5, "Backups").

A backup is only worth something if it restores, so every step is built to
make a bad one impossible to mistake for a good one:

- **Consistent at a known LSN.** :meth:`Engine.snapshot_to` flushes, then
  copies the store in one read transaction on connections of its own: every
  write acknowledged before the call is in the copy, and writers go on.
- **Atomic files.** The lz4 frame (content checksum on) and its JSON manifest
  are each written as ``.tmp``, fsynced, renamed, and the directory fsynced:
  a crash leaves either the old state or a whole file, never half of one.
- **Verified before it counts.** The file is read back (size, sha256, the lz4
  frame's own checksum), decompressed, opened with sqlite3
  (``integrity_check``, schema version, ``flushed_lsn`` == the manifest's LSN)
  and only then marked ``"verified": true``. A backup that fails is moved to
  ``failed/`` and the call raises; listing, rotation and ``last_backup`` see
  verified backups only, and rotation never deletes the newest of them.
- **Restore moves, never deletes.** The old contents of the data directory
  (WAL segments included: they would replay onto the restored snapshot) go
  to ``<data_dir>/before-restore-<time>/``; the restored file is the very file
  verification checked, renamed into place.

Heavy work (compression, hashing, verification, rotation) runs in worker
threads: the daemon's event loop keeps serving while a backup runs.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import pathlib
import shutil
import sqlite3
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import lz4.frame

from memd import __version__
from memd.engine.engine import DB_NAME, LOCK_NAME, lock_data_dir
from memd.engine.store import SCHEMA_VERSION
from memd.errors import MemdError

if TYPE_CHECKING:
    from memd.config import BackupConfig
    from memd.engine.engine import Engine

log = logging.getLogger("memd.backup")

SUFFIX = ".sqlite3.lz4"
MANIFEST_SUFFIX = ".json"
TMP_SUFFIX = ".tmp"
FAILED_DIR = "failed"
DEFAULT_DIR_NAME = "backups"  # config: backup.dir = "" -> <data_dir>/backups
ASIDE_PREFIX = "before-restore-"
MANIFEST_FORMAT = 1
DIR_MODE = 0o750
FILE_MODE = 0o640
CHUNK = 1 << 20
STALE_TMP_SECONDS = 3600.0  # a .tmp this old belongs to a backup that crashed, not one running
_MANIFEST_FIELDS: dict[str, type | tuple[type, ...]] = {
    "file": str, "lsn": int, "created_at": str, "raw_bytes": int, "compressed_bytes": int,
    "sha256": str, "schema_version": int, "memd_version": str, "verified": bool,
}


class BackupError(MemdError):
    """A backup could not be made, verified or restored; the message says what to do."""


@dataclass(frozen=True, slots=True)
class BackupInfo:
    """One verified backup as :func:`list_backups` finds it."""

    path: str
    lsn: int
    created_at: float  # Unix time, UTC
    manifest: dict[str, Any]


# ---- time and names -------------------------------------------------------------------------

def _utc(t: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc)


def _iso(t: float) -> str:
    """ISO-8601 UTC with milliseconds: what the manifest stores (and round-trips exactly)."""
    return _utc(t).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_iso(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _stamp(t: float) -> str:
    """A file-name-safe UTC time that sorts like the time: ``20261125T101500.123Z``."""
    d = _utc(t)
    return f"{d:%Y%m%dT%H%M%S}.{d.microsecond // 1000:03d}Z"


def manifest_path(path: str) -> str:
    return path + MANIFEST_SUFFIX


def _data_path(path: str) -> str:
    """Accept a backup given by its data file or by its manifest."""
    return path[: -len(MANIFEST_SUFFIX)] if path.endswith(SUFFIX + MANIFEST_SUFFIX) else path


def _free_name(directory: str, created: float, lsn: int) -> str:
    """``memd-<time>-lsn<N>.sqlite3.lz4``; a counter only if two backups share time and LSN."""
    base = f"memd-{_stamp(created)}-lsn{lsn}"
    for n in range(1000):
        path = os.path.join(directory, (f"{base}-{n}" if n else base) + SUFFIX)
        if not os.path.lexists(path) and not os.path.lexists(manifest_path(path)):
            return path
    raise BackupError(f"{directory}: cannot find a free name for {base}{SUFFIX}; clean the directory up")


# ---- durable file operations ----------------------------------------------------------------

def _fsync_dir(path: str) -> None:
    """Make a rename or an unlink in ``path`` survive a power loss."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(*paths: str) -> None:
    for p in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(p)


@contextlib.contextmanager
def _create(path: str, mode: int = FILE_MODE) -> Iterator[Any]:
    """A new file (never an existing one), fsynced before it is closed."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "wb") as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


def _write_json_atomic(path: str, data: dict[str, Any]) -> None:
    """tmp + fsync + rename + directory fsync: a reader sees the old manifest or the new one."""
    tmp = path + TMP_SUFFIX
    _remove(tmp)
    try:
        with _create(tmp) as f:
            f.write(json.dumps(data, indent=2, sort_keys=True).encode() + b"\n")
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    _fsync_dir(os.path.dirname(path))


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


# ---- making a backup ------------------------------------------------------------------------

_locks: weakref.WeakKeyDictionary[Any, anyio.Lock] = weakref.WeakKeyDictionary()


async def run_backup(engine: Engine, cfg: BackupConfig, *, now: Callable[[], float] = time.time) -> dict[str, Any]:
    """Snapshot, compress, verify, rotate; return a summary for MEMD.BACKUP, the scheduler and INFO.

    One backup at a time per engine (the scheduler and MEMD.BACKUP may ask
    together): a second caller waits and then makes its own, newer backup.
    """
    directory = cfg.dir or os.path.join(engine.data_dir, DEFAULT_DIR_NAME)
    lock = _locks.setdefault(engine, anyio.Lock())
    async with lock:
        t0 = time.perf_counter()
        await anyio.to_thread.run_sync(_prepare_dir, directory)
        path, manifest = await _snapshot_and_pack(engine, directory, now)
        try:
            await anyio.to_thread.run_sync(_verify_and_mark, path, now())
        except BackupError as exc:
            where = await anyio.to_thread.run_sync(_set_aside, path, str(exc))
            log.error("backup_failed %s error=%r", where, str(exc))
            raise BackupError(f"the new backup failed verification and {where}: {exc}; the earlier backups "
                              "are untouched — check the disk and run the backup again") from exc
        deleted = await anyio.to_thread.run_sync(_rotate_logged, directory, cfg, now())
        seconds = time.perf_counter() - t0
    log.info("backup_done path=%s lsn=%d bytes=%d compressed=%d seconds=%.3f deleted=%d", path, manifest["lsn"],
             manifest["raw_bytes"], manifest["compressed_bytes"], seconds, len(deleted))
    return {"path": path, "lsn": manifest["lsn"], "bytes": manifest["raw_bytes"],
            "compressed_bytes": manifest["compressed_bytes"], "seconds": seconds, "deleted": deleted}


def _prepare_dir(directory: str) -> None:
    """Create the backup directory; drop ``.tmp`` files a crashed backup left (they can be large)."""
    try:
        os.makedirs(directory, mode=DIR_MODE, exist_ok=True)
        for entry in os.scandir(directory):
            if entry.name.endswith(TMP_SUFFIX) and entry.is_file(follow_symlinks=False):
                if time.time() - entry.stat(follow_symlinks=False).st_mtime > STALE_TMP_SECONDS:
                    log.warning("backup_stale_tmp_removed path=%s", entry.path)
                    _remove(entry.path)
    except OSError as exc:
        raise BackupError(f"cannot use the backup directory {directory}: {exc.strerror or exc}; "
                          "fix its permissions or set backup.dir") from exc


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
            await anyio.to_thread.run_sync(_remove, snap, snap + "-journal", snap + "-wal", snap + "-shm")


def _pack(snap: str, directory: str, lsn: int, created: float) -> tuple[str, dict[str, Any]]:
    """Compress ``snap`` to its final name and write its manifest (``verified: false`` until checked)."""
    path = _free_name(directory, created, lsn)
    tmp = path + TMP_SUFFIX
    try:
        schema = _schema_version(snap)
        with _create(tmp) as raw_out, open(snap, "rb") as src:
            with lz4.frame.open(raw_out, "wb", content_checksum=True) as out:
                shutil.copyfileobj(src, out, CHUNK)
        os.replace(tmp, path)
        _fsync_dir(directory)
        manifest = {
            "format": MANIFEST_FORMAT, "file": os.path.basename(path), "lsn": lsn, "created_at": _iso(created),
            "raw_bytes": os.path.getsize(snap), "compressed_bytes": os.path.getsize(path),
            "sha256": _sha256(path), "compression": "lz4-frame", "schema_version": schema,
            "memd_version": __version__, "verified": False, "verified_at": None,
        }
        _write_json_atomic(manifest_path(path), manifest)
        return path, manifest
    except OSError as exc:
        _remove(tmp, path, manifest_path(path))
        raise BackupError(f"cannot write the backup {path}: {exc.strerror or exc}; "
                          "check free space and permissions in the backup directory") from exc


def _schema_version(db_path: str) -> int:
    conn = sqlite3.connect(_ro_uri(db_path), uri=True)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def _verify_and_mark(path: str, when: float) -> None:
    manifest = verify_backup(path)
    manifest.update(verified=True, verified_at=_iso(when))
    _write_json_atomic(manifest_path(path), manifest)


def _set_aside(path: str, error: str) -> str:
    """Move a backup that failed verification into ``failed/`` with the reason in its manifest.

    Returns where it went, for the error message. If even the move fails,
    the file stays where it is, still marked unverified: nothing counts it.
    """
    failed_dir = os.path.join(os.path.dirname(path), FAILED_DIR)
    dest = os.path.join(failed_dir, os.path.basename(path))
    try:
        os.makedirs(failed_dir, mode=DIR_MODE, exist_ok=True)
        os.replace(path, dest)
        with contextlib.suppress(FileNotFoundError):
            os.replace(manifest_path(path), manifest_path(dest))
        _fsync_dir(failed_dir)
        _fsync_dir(os.path.dirname(path))
    except OSError as exc:
        return f"could not be moved aside ({exc.strerror or exc}); it stays, unverified, at {path}"
    with contextlib.suppress(OSError, ValueError, UnicodeDecodeError):
        manifest = _load_json(manifest_path(dest))
        manifest.update(verified=False, error=error)
        _write_json_atomic(manifest_path(dest), manifest)
    return f"was moved to {dest}"


def _rotate_logged(directory: str, cfg: BackupConfig, now: float) -> list[str]:
    """Rotation after a good backup: a failure to delete old ones is logged, not the backup's failure."""
    try:
        return rotate(directory, cfg.keep_last, cfg.keep_daily, cfg.keep_weekly, now)
    except OSError as exc:
        log.error("backup_rotate_failed dir=%s error=%r (old backups pile up until this is fixed)", directory,
                  str(exc))
        return []


# ---- verification ---------------------------------------------------------------------------

def verify_backup(path: str) -> dict[str, Any]:
    """Check a backup end to end and return its manifest; raise :class:`BackupError` on any problem.

    Decompresses into a scratch file beside the backup, removed afterwards.
    """
    path = _data_path(path)
    scratch = os.path.join(os.path.dirname(path), f".verify-{uuid.uuid4().hex}.sqlite3{TMP_SUFFIX}")
    try:
        return _unpack_verified(path, scratch)
    finally:
        _remove(scratch)


def _unpack_verified(path: str, dest: str) -> dict[str, Any]:
    """Decompress ``path`` to ``dest`` (a new file) checking everything on the way; keep ``dest`` only if sound."""
    try:
        manifest = _read_manifest(path)
        _check_compressed(path, manifest)
        _decompress(path, dest, manifest)
        _check_sqlite(path, dest, manifest)
        return manifest
    except OSError as exc:
        _remove(dest)
        raise BackupError(f"cannot verify {exc.filename or path}: {exc.strerror or exc}") from exc
    except BaseException:
        _remove(dest)
        raise


def _load_json(path: str) -> dict[str, Any]:
    with open(path, "rb") as f:
        data = json.loads(f.read())
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data


def _read_manifest(path: str) -> dict[str, Any]:
    mpath = manifest_path(path)
    if not os.path.isfile(path):
        raise BackupError(f"{path}: no such backup file")
    try:
        manifest = _load_json(mpath)
    except FileNotFoundError:
        raise BackupError(f"{path}: its manifest {mpath} is missing; without it the backup cannot be "
                          "verified") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BackupError(f"{mpath}: not a valid manifest ({exc})") from None
    for key, kind in _MANIFEST_FIELDS.items():
        value = manifest.get(key)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise BackupError(f"{mpath}: field {key!r} is missing or not a {getattr(kind, '__name__', kind)}")
    if manifest["file"] != os.path.basename(path):
        raise BackupError(f"{mpath} describes {manifest['file']}, not {os.path.basename(path)}")
    return manifest


def _check_compressed(path: str, manifest: dict[str, Any]) -> None:
    size = os.path.getsize(path)
    if size != manifest["compressed_bytes"]:
        raise BackupError(f"{path} is {size} bytes but its manifest says {manifest['compressed_bytes']}: "
                          "truncated or overwritten")
    digest = _sha256(path)
    if digest != manifest["sha256"]:
        raise BackupError(f"{path}: sha256 {digest} does not match the manifest's {manifest['sha256']}: "
                          "the file is damaged")
    with open(path, "rb") as f:
        head = f.read(32)
    try:
        info = lz4.frame.get_frame_info(head)
    except RuntimeError as exc:
        raise BackupError(f"{path} is not an lz4 frame ({exc})") from None
    if not info.get("content_checksum"):
        raise BackupError(f"{path}: its lz4 frame carries no content checksum, so its content cannot be checked")


def _decompress(path: str, dest: str, manifest: dict[str, Any]) -> None:
    """lz4 checks its content checksum at the end of the frame; a damaged frame raises here."""
    try:
        with lz4.frame.open(path, "rb") as src, _create(dest) as out:
            shutil.copyfileobj(src, out, CHUNK)
            size = out.tell()
    except (EOFError, RuntimeError) as exc:
        raise BackupError(f"{path}: the lz4 frame is damaged ({exc})") from None
    if size != manifest["raw_bytes"]:
        raise BackupError(f"{path} decompresses to {size} bytes but its manifest says {manifest['raw_bytes']}")


def _ro_uri(path: str) -> str:
    return pathlib.Path(os.path.abspath(path)).as_uri() + "?mode=ro"


def _check_sqlite(path: str, db_path: str, manifest: dict[str, Any]) -> None:
    try:
        conn = sqlite3.connect(_ro_uri(db_path), uri=True)
        try:
            problems = [r[0] for r in conn.execute("PRAGMA integrity_check")]
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            row = conn.execute("SELECT value FROM meta WHERE name = 'flushed_lsn'").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise BackupError(f"{path}: the database inside cannot be read ({exc})") from None
    if problems != ["ok"]:
        raise BackupError(f"{path}: integrity_check failed: {'; '.join(map(str, problems[:5]))}")
    if version != manifest["schema_version"]:
        raise BackupError(f"{path}: schema version {version}, the manifest says {manifest['schema_version']}")
    lsn = int(row[0]) if row else None
    if lsn != manifest["lsn"]:
        raise BackupError(f"{path}: the database is at LSN {lsn}, the manifest says {manifest['lsn']}")


# ---- listing and rotation -------------------------------------------------------------------

def list_backups(directory: str) -> list[BackupInfo]:
    """Verified backups in ``directory``, newest first (unverified and failed ones are left out)."""
    found: list[BackupInfo] = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    for name in names:
        if not name.endswith(SUFFIX + MANIFEST_SUFFIX):
            continue
        path = os.path.join(directory, name[: -len(MANIFEST_SUFFIX)])
        try:
            manifest = _load_json(manifest_path(path))
            if manifest.get("verified") is not True or not os.path.isfile(path):
                continue
            found.append(BackupInfo(path, int(manifest["lsn"]), _parse_iso(manifest["created_at"]), manifest))
        except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            log.warning("backup_manifest_unreadable path=%s error=%r", manifest_path(path), str(exc))
    found.sort(key=lambda b: (b.created_at, b.lsn, b.path), reverse=True)
    return found


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
    keep = _kept(backups, keep_last, keep_daily, keep_weekly, now)
    deleted = []
    for b in backups:
        if b.path in keep:
            continue
        _remove(b.path)  # data first: a crash in between leaves a small orphan manifest, not a big orphan file
        _remove(manifest_path(b.path))
        deleted.append(b.path)
    if deleted:
        _fsync_dir(directory)
        log.info("backup_rotated deleted=%d kept=%d", len(deleted), len(backups) - len(deleted))
    return deleted


def _kept(backups: list[BackupInfo], keep_last: int, keep_daily: int, keep_weekly: int, now: float) -> set[str]:
    """The paths the rules keep; ``backups`` is newest first, so the first one met in a bucket is its newest."""
    keep = {b.path for b in backups[: max(1, keep_last)]}  # max(1, ...): never the last verified one
    today = _utc(now).date()
    days = {today - dt.timedelta(days=i) for i in range(keep_daily)}
    weeks = {_iso_week(today - dt.timedelta(weeks=i)) for i in range(keep_weekly)}
    for b in backups:
        day = _utc(b.created_at).date()
        if day in days:
            days.discard(day)
            keep.add(b.path)
        if _iso_week(day) in weeks:
            weeks.discard(_iso_week(day))
            keep.add(b.path)
    return keep


def _iso_week(day: dt.date) -> tuple[int, int]:
    iso = day.isocalendar()
    return iso.year, iso.week


# ---- restore ------------------------------------------------------------------------------

def restore(backup_path: str, data_dir: str, *, now: Callable[[], float] = time.time) -> str:
    """Restore a backup into ``data_dir`` (no daemon may use it); return where the old contents went.

    The data directory's lock is held throughout, so no daemon can start
    meanwhile. The backup is decompressed and fully verified into a
    temporary file inside ``data_dir`` first, given the owner and mode of the
    file it replaces, and only then is anything moved: a bad backup or a
    permission problem leaves the directory as it was.
    """
    backup = _data_path(os.path.abspath(backup_path))
    data_dir = os.path.abspath(data_dir)
    if not os.path.isfile(backup):
        raise BackupError(f"{backup}: no such backup file")
    lock_fd = lock_data_dir(data_dir)  # raises DataDirLockedError while a daemon or `memd check` uses it
    try:
        dir_st = os.stat(data_dir)
        _chown_like(os.path.join(data_dir, LOCK_NAME), dir_st)  # we may have just created it (as root)
        db = os.path.join(data_dir, DB_NAME)
        tmp = os.path.join(data_dir, f".{DB_NAME}.restore{TMP_SUFFIX}")
        _remove(tmp)
        try:
            manifest = _unpack_verified(backup, tmp)
            if manifest["schema_version"] > SCHEMA_VERSION:
                raise BackupError(f"{backup} has schema version {manifest['schema_version']}, this memd knows up "
                                  f"to {SCHEMA_VERSION}: restore it with a newer memd")
            _take_owner_and_mode(tmp, db, dir_st)
            aside = _move_aside(data_dir, backup, dir_st, now(), keep={LOCK_NAME, os.path.basename(tmp)})
        except BaseException:
            _remove(tmp)
            raise
        try:
            os.rename(tmp, db)
            _fsync_dir(data_dir)
        except OSError as exc:
            raise BackupError(f"cannot put the restored file in place as {db}: {exc.strerror or exc}; "
                              f"the previous contents are in {aside}") from exc
    finally:
        os.close(lock_fd)
    log.info("restore_done backup=%s lsn=%d data_dir=%s previous=%s", backup, manifest["lsn"], data_dir, aside)
    return aside


def _take_owner_and_mode(tmp: str, db: str, dir_st: os.stat_result) -> None:
    """Give the restored file the owner and mode of the file it replaces, else ones derived from the directory.

    A restore run as root for a daemon running as ``memd`` must not leave a
    root-owned file the daemon cannot open: fail now, before anything moved.
    """
    try:
        old = os.stat(db)
        uid, gid, mode = old.st_uid, old.st_gid, old.st_mode & 0o7777
    except FileNotFoundError:
        uid, gid, mode = dir_st.st_uid, dir_st.st_gid, dir_st.st_mode & 0o666
    st = os.stat(tmp)
    if (st.st_uid, st.st_gid) != (uid, gid):
        try:
            os.chown(tmp, uid, gid)
        except PermissionError:
            raise BackupError(f"cannot give the restored file the owner {uid}:{gid} of {db}: run memd restore as "
                              "that user or as root (nothing was changed)") from None
    os.chmod(tmp, mode)
    _fsync_file(tmp)


def _chown_like(path: str, like: os.stat_result) -> None:
    """Best effort: only root can give a file away, and then it should (the daemon's user must own it)."""
    with contextlib.suppress(OSError):
        st = os.stat(path)
        if (st.st_uid, st.st_gid) != (like.st_uid, like.st_gid):
            os.chown(path, like.st_uid, like.st_gid)


def _move_aside(data_dir: str, backup: str, dir_st: os.stat_result, when: float, keep: set[str]) -> str:
    """Move the data directory's contents into ``before-restore-<time>/`` inside it; return that path.

    Inside, not beside, the data directory: a rename there never crosses a
    file system (the data directory may be a mount point) and needs no write
    access to its parent (``/var/lib`` is root's; systemd's StateDirectory
    gives the daemon's user only ``/var/lib/memd``). Left in place: the lock
    file (we hold it), earlier ``before-restore-*`` directories, the default
    ``backups`` directory and whichever entry holds the backup being restored.
    """
    protected = set(keep) | {DEFAULT_DIR_NAME}
    rel = os.path.relpath(backup, data_dir)
    if not rel.startswith(os.pardir + os.sep) and rel != os.pardir:
        top = rel.split(os.sep, 1)[0]
        protected |= {top, top + MANIFEST_SUFFIX}
    aside = os.path.join(data_dir, ASIDE_PREFIX + _stamp(when))
    n = 0
    while os.path.lexists(aside):
        n += 1
        aside = os.path.join(data_dir, f"{ASIDE_PREFIX}{_stamp(when)}-{n}")
    os.mkdir(aside, dir_st.st_mode & 0o7777)
    os.chmod(aside, dir_st.st_mode & 0o7777)  # mkdir's mode passes through the umask
    _chown_like(aside, dir_st)
    for name in sorted(os.listdir(data_dir)):
        if name in protected or name.startswith(ASIDE_PREFIX):
            continue
        os.rename(os.path.join(data_dir, name), os.path.join(aside, name))
    _fsync_dir(aside)
    _fsync_dir(data_dir)
    return aside
