"""``memd restore``: put a verified backup in place of a data directory's store, offline.

Nothing is deleted. What the data directory held — the SQLite file and its
``-wal``/``-shm``, the WAL segment directory (whose records would otherwise
replay onto the restored snapshot), anything else — is moved into
``<data_dir>/before-restore-<UTC time>/``. Nothing is moved either until the
backup has been decompressed and fully verified into a temporary file
inside the data directory and given the right owner and mode: a bad backup
or a permission problem leaves the directory as it was.

An encrypted backup is opened with the identities the operator gives
(``--identity FILE`` or systemd's credential): a wrong key or a changed
ciphertext is refused before anything moves, like any other bad backup.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from memd.engine.engine import DB_NAME, LOCK_NAME, lock_data_dir
from memd.maintenance.backup_age import unpack
from memd.store.schema import SCHEMA_VERSION
from memd.maintenance.backup_format import (
    MANIFEST_SUFFIX, TMP_SUFFIX, BackupError, data_path, fsync_dir, remove, require_file, stamp,
)

if TYPE_CHECKING:
    from pyrage import x25519

log = logging.getLogger("memd.backup")

ASIDE_PREFIX = "before-restore-"
DEFAULT_DIR_NAME = "backups"  # backup.dir = "" -> <data_dir>/backups


def restore(backup_path: str, data_dir: str, *, identities: Sequence[x25519.Identity] | None = None,
            now: Callable[[], float] = time.time) -> str:
    """Restore a backup into ``data_dir`` (no daemon may use it); return where the old contents went.

    The data directory's lock is held throughout, so no daemon can start
    meanwhile; it raises :class:`DataDirLockedError` while one runs.
    ``identities`` open an encrypted backup (a plain one needs none).
    """
    backup = data_path(os.path.abspath(backup_path))
    data_dir = os.path.abspath(data_dir)
    require_file(backup)
    lock_fd = lock_data_dir(data_dir)
    try:
        dir_st = os.stat(data_dir)
        _chown_like(os.path.join(data_dir, LOCK_NAME), dir_st)  # we may have just created it, as root
        db = os.path.join(data_dir, DB_NAME)
        tmp = os.path.join(data_dir, f".{DB_NAME}.restore{TMP_SUFFIX}")
        remove(tmp)
        try:
            manifest = unpack(backup, tmp, identities)
            if manifest["schema_version"] > SCHEMA_VERSION:
                raise BackupError(f"{backup} has schema version {manifest['schema_version']} but this memd knows "
                                  f"up to {SCHEMA_VERSION}: restore it with a newer memd")
            _take_owner_and_mode(tmp, db, dir_st)
            aside = _move_aside(data_dir, backup, dir_st, now(), keep={LOCK_NAME, os.path.basename(tmp)})
        except BaseException:
            remove(tmp)
            raise
        try:
            os.rename(tmp, db)
            fsync_dir(data_dir)
        except OSError as exc:
            raise BackupError(f"cannot put the restored file in place as {db}: {exc.strerror or exc}; "
                              f"the previous contents are in {aside}") from exc
    finally:
        os.close(lock_fd)
    log.info("restore_done backup=%s lsn=%d data_dir=%s previous=%s%s", backup, manifest["lsn"], data_dir, aside,
             f" encryption={manifest['encryption']}" if manifest.get("encryption") else "")
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
        uid, gid, mode = dir_st.st_uid, dir_st.st_gid, dir_st.st_mode & 0o666  # rwxr-x--- -> rw-r-----
    st = os.stat(tmp)
    if (st.st_uid, st.st_gid) != (uid, gid):
        try:
            os.chown(tmp, uid, gid)
        except PermissionError:
            raise BackupError(f"cannot give the restored file the owner {uid}:{gid} that {db} or its directory "
                              "has: run memd restore as that user or as root (nothing was changed)") from None
    os.chmod(tmp, mode)
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)  # the owner and mode too must survive a power loss
    finally:
        os.close(fd)


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
    access to its parent (``/var/lib`` is root's; systemd's StateDirectory=
    gives the daemon's user ``/var/lib/memd`` only). The daemon opens only
    its own names there, so it ignores the directory. Left in place: the
    lock file (held), earlier ``before-restore-*`` directories, the default
    ``backups`` directory and whichever entry holds the backup being restored.
    """
    protected = keep | {DEFAULT_DIR_NAME}
    rel = os.path.relpath(backup, data_dir)
    if rel != os.pardir and not rel.startswith(os.pardir + os.sep):
        top = rel.split(os.sep, 1)[0]
        protected |= {top, top + MANIFEST_SUFFIX}
    aside = os.path.join(data_dir, ASIDE_PREFIX + stamp(when))
    n = 0
    while os.path.lexists(aside):
        n += 1
        aside = os.path.join(data_dir, f"{ASIDE_PREFIX}{stamp(when)}-{n}")
    os.mkdir(aside)
    os.chmod(aside, dir_st.st_mode & 0o7777)  # like the data directory (mkdir's mode goes through the umask)
    _chown_like(aside, dir_st)
    for name in sorted(os.listdir(data_dir)):
        if name not in protected and not name.startswith(ASIDE_PREFIX):
            os.rename(os.path.join(data_dir, name), os.path.join(aside, name))
    fsync_dir(aside)
    fsync_dir(data_dir)
    return aside
