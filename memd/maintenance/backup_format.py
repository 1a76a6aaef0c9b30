"""A backup on disk: its names, its manifest, atomic writes, and the checks that make it trustworthy.

Shared by :mod:`memd.maintenance.backup` (which makes, lists and rotates
backups) and :mod:`memd.maintenance.restore`. A backup is two files:

- ``memd-<UTC time>-lsn<N>.sqlite3.lz4``: the SQLite snapshot as one lz4
  frame with its content checksum on;
- ``<that name>.json``: the manifest — LSN, creation time, sizes, sha256 of
  the compressed file, schema and memd versions, and ``verified``.

An encrypted backup (``backup.age_recipients``) is that lz4 frame encrypted
with age, ``...sqlite3.lz4.age``; its manifest says the same about the frame
inside plus ``encryption`` and the ciphertext's size and sha256
(:mod:`memd.maintenance.backup_age`).

Verification (:func:`unpack_verified`) checks everything that can be
checked: manifest fields, size, sha256, that the frame carries a content
checksum, the frame itself (lz4 checks that checksum as it decompresses:
without it a damaged block can decompress silently to wrong bytes), the
decompressed size, SQLite's ``integrity_check``, the schema version and that
the store's ``flushed_lsn`` is the manifest's LSN.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
import sqlite3
import stat
import uuid
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO

import lz4.frame

from memd.errors import MemdError
from memd.store.sqlitefile import check_file

SUFFIX = ".sqlite3.lz4"
ENCRYPTED_SUFFIX = SUFFIX + ".age"
BACKUP_SUFFIXES = (SUFFIX, ENCRYPTED_SUFFIX)
MANIFEST_SUFFIX = ".json"
TMP_SUFFIX = ".tmp"
MANIFEST_FORMAT = 1
DIR_MODE = 0o750
FILE_MODE = 0o640
CHUNK = 1 << 20
_MANIFEST_FIELDS: dict[str, type] = {
    "file": str, "lsn": int, "created_at": str, "raw_bytes": int, "compressed_bytes": int,
    "sha256": str, "schema_version": int, "memd_version": str, "verified": bool,
}


class BackupError(MemdError):
    """A backup could not be made, verified or restored; the message says what to do."""


# ---- time and names -------------------------------------------------------------------------

def utc(t: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc)


def iso(t: float) -> str:
    """ISO-8601 UTC with milliseconds: what the manifest stores (and parses back exactly)."""
    return utc(t).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def stamp(t: float) -> str:
    """A file-name-safe UTC time that sorts like the time: ``20261125T101500.123Z``."""
    d = utc(t)
    return f"{d:%Y%m%dT%H%M%S}.{d.microsecond // 1000:03d}Z"


def manifest_path(path: str) -> str:
    return path + MANIFEST_SUFFIX


def is_manifest_name(name: str) -> bool:
    return name.endswith(tuple(s + MANIFEST_SUFFIX for s in BACKUP_SUFFIXES))


def data_path(path: str) -> str:
    """Accept a backup given by its data file or by its manifest."""
    return path[: -len(MANIFEST_SUFFIX)] if is_manifest_name(path) else path


def free_name(directory: str, created: float, lsn: int, suffix: str = SUFFIX) -> str:
    """``memd-<time>-lsn<N>.sqlite3.lz4[.age]``; a counter only if two backups share time and LSN."""
    base = f"memd-{stamp(created)}-lsn{lsn}"
    for n in range(1000):
        path = os.path.join(directory, (f"{base}-{n}" if n else base) + suffix)
        if not os.path.lexists(path) and not os.path.lexists(manifest_path(path)):
            return path
    raise BackupError(f"{directory}: no free name for {base}{suffix}; remove old backups there")


# ---- durable file operations ----------------------------------------------------------------

def fsync_dir(path: str) -> None:
    """Make a rename or an unlink in ``path`` survive a power loss."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove(*paths: str) -> None:
    for p in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(p)


@contextlib.contextmanager
def create_new(path: str, mode: int = FILE_MODE) -> Iterator[BinaryIO]:
    """A new file (never an existing one, never through a symlink), fsynced before it is closed."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "wb") as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


def write_json_atomic(path: str, data: dict[str, Any]) -> None:
    """tmp + fsync + rename + directory fsync: a reader sees the old manifest or the new one."""
    tmp = path + TMP_SUFFIX
    remove(tmp)
    try:
        with create_new(tmp) as f:
            f.write(json.dumps(data, indent=2, sort_keys=True).encode() + b"\n")
        os.replace(tmp, path)
    except BaseException:
        remove(tmp)
        raise
    fsync_dir(os.path.dirname(path))


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def compress(src: str, dest: str) -> None:
    """``src`` as one lz4 frame with its content checksum, into the new file ``dest`` (fsynced)."""
    with create_new(dest) as raw_out, open(src, "rb") as fin:
        with lz4.frame.open(raw_out, "wb", content_checksum=True) as out:
            shutil.copyfileobj(fin, out, CHUNK)


def load_json(path: str) -> dict[str, Any]:
    with open(path, "rb") as f:
        data = json.loads(f.read())
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data


# ---- verification ---------------------------------------------------------------------------

def verify_backup(path: str) -> dict[str, Any]:
    """Check a backup end to end and return its manifest; raise :class:`BackupError` on any problem.

    It decompresses into a scratch file beside the backup, removed afterwards.
    Whether the manifest already says ``verified`` does not matter: this is
    the check that decides it.
    """
    path = data_path(path)
    scratch = os.path.join(os.path.dirname(path), f".verify-{uuid.uuid4().hex}.sqlite3{TMP_SUFFIX}")
    try:
        return unpack_verified(path, scratch)
    finally:
        remove(scratch)


def unpack_verified(path: str, dest: str) -> dict[str, Any]:
    """Decompress ``path`` into the new file ``dest``, checking everything; ``dest`` survives only if sound.

    Restore uses this directly, so the file it puts in place is the very
    file that was checked, decompressed once. An encrypted backup needs its
    identity: :func:`memd.maintenance.backup_age.unpack` takes it.
    """
    try:
        manifest = read_manifest(path)
    except OSError as exc:
        raise BackupError(f"cannot verify {path}: {exc.strerror or exc}: {exc.filename or ''}") from exc
    if manifest.get("encryption") is not None:
        raise BackupError(f"{path} is encrypted ({manifest['encryption']}): only its identity can open it; give "
                          "the identity file with --identity FILE")
    return unpack_checked(path, dest, manifest)


def unpack_checked(path: str, dest: str, manifest: dict[str, Any]) -> dict[str, Any]:
    """:func:`unpack_verified` against a manifest in hand (an encrypted backup's frame is checked before
    it is encrypted, when its manifest is not written yet)."""
    try:
        _check_compressed(path, manifest)
        _decompress(path, dest, manifest)
        _check_sqlite(path, dest, manifest)
        return manifest
    except OSError as exc:
        remove(dest)
        raise BackupError(f"cannot verify {path}: {exc.strerror or exc}: {exc.filename or ''}") from exc
    except BaseException:
        remove(dest)
        raise


def require_file(path: str) -> None:
    """A clear error for a missing or odd backup path; a permission error stays an OSError (it says so)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise BackupError(f"{path}: no such backup file") from None
    if not stat.S_ISREG(st.st_mode):
        raise BackupError(f"{path} is not a regular file: give the path of a memd-...{SUFFIX} "
                          f"(or ...{ENCRYPTED_SUFFIX}) backup")


def read_manifest(path: str) -> dict[str, Any]:
    mpath = manifest_path(path)
    require_file(path)
    try:
        manifest = load_json(mpath)
    except FileNotFoundError:
        raise BackupError(f"{path}: its manifest {mpath} is missing, so the backup cannot be verified") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BackupError(f"{mpath}: not a valid manifest ({exc})") from None
    for key, kind in _MANIFEST_FIELDS.items():
        value = manifest.get(key)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise BackupError(f"{mpath}: field {key!r} is missing or not a {kind.__name__}")
    if manifest["file"] != os.path.basename(path):
        raise BackupError(f"{mpath} describes {manifest['file']}, not {os.path.basename(path)}")
    return manifest


def check_size_and_digest(path: str, manifest: Mapping[str, Any], size_field: str, digest_field: str) -> None:
    """The file's size and sha256 are the manifest's (a truncated, overwritten or damaged file: BackupError)."""
    size = os.path.getsize(path)
    if size != manifest[size_field]:
        raise BackupError(f"{path} is {size} bytes but its manifest says {manifest[size_field]}: "
                          "truncated or overwritten")
    digest = sha256_file(path)
    if digest != manifest[digest_field]:
        raise BackupError(f"{path}: its sha256 {digest} is not the manifest's {digest_field} "
                          f"{manifest[digest_field]}: the file is damaged")


def _check_compressed(path: str, manifest: dict[str, Any]) -> None:
    check_size_and_digest(path, manifest, "compressed_bytes", "sha256")
    with open(path, "rb") as f:
        head = f.read(32)
    try:
        info = lz4.frame.get_frame_info(head)
    except RuntimeError as exc:
        raise BackupError(f"{path} is not an lz4 frame ({exc})") from None
    if not info.get("content_checksum"):
        raise BackupError(f"{path}: its lz4 frame has no content checksum, so its content cannot be checked")


def _decompress(path: str, dest: str, manifest: dict[str, Any]) -> None:
    """lz4 checks the content checksum at the end of the frame: a damaged frame raises here."""
    try:
        with lz4.frame.open(path, "rb") as src, create_new(dest) as out:
            shutil.copyfileobj(src, out, CHUNK)
            size = out.tell()
    except (EOFError, RuntimeError) as exc:
        raise BackupError(f"{path}: the lz4 frame is damaged ({exc})") from None
    if size != manifest["raw_bytes"]:
        raise BackupError(f"{path} decompresses to {size} bytes but its manifest says {manifest['raw_bytes']}")


def _check_sqlite(path: str, db_path: str, manifest: dict[str, Any]) -> None:
    try:
        problems, version, lsn, _ = check_file(db_path)
    except sqlite3.Error as exc:
        raise BackupError(f"{path}: the database inside cannot be read ({exc})") from None
    if problems != ["ok"]:
        raise BackupError(f"{path}: integrity_check failed: {'; '.join(map(str, problems[:5]))}")
    if version != manifest["schema_version"]:
        raise BackupError(f"{path}: schema version {version}, but the manifest says {manifest['schema_version']}")
    if lsn != manifest["lsn"]:
        raise BackupError(f"{path}: the database is at LSN {lsn}, but the manifest says {manifest['lsn']}")
