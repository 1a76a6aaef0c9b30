"""Encrypted backups: the lz4 frame encrypted with age to X25519 public keys, as a stream.

Backups leave the host, so the daemon that makes them must not be able to
read them back: memd's config holds only *recipients* (``age1...`` public
keys, ``backup.age_recipients``); the *identity* (the secret key) stays with
the operator, who uses it offline with ``memd restore --identity`` and
``memd backup --verify --identity``. age (what litestream uses for its
replicas) encrypts in authenticated 64 KiB chunks (ChaCha20-Poly1305 STREAM):
a changed, cut or extended file fails to decrypt, it never decrypts to
other bytes.

The daemon's order of work (:mod:`memd.maintenance.backup`):

1. the snapshot is compressed and verified (sha256, lz4 checksum,
   integrity_check, LSN) in a scratch directory inside the data directory:
   plaintext never reaches ``backup.dir``, which may be a mount that leaves
   the host;
2. the verified frame is encrypted as a stream (:func:`encrypt`): pyrage's
   ``encrypt_io`` reads and writes through 8 KiB buffers and one 64 KiB age
   chunk, calling a writer of ours that hashes what it writes, so memory
   does not grow with the backup;
3. the manifest records the ciphertext's size and sha256, and the file is
   read back against them (:func:`check_ciphertext`). That, the age header's
   shape and the payload length age's chunking implies are what can be
   checked without the key: by the daemon, and by ``memd backup --verify``
   given no identity.

With the identity (:func:`unpack`) the ciphertext is checked, decrypted
into an lz4 frame next to the destination, and that frame goes through
exactly the checks of a plain backup (:func:`backup_format.unpack_checked`),
whose sha256 is the one verified before encryption.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from typing import Any, BinaryIO

import pyrage
from pyrage import x25519

from memd.maintenance.backup_format import (
    ENCRYPTED_SUFFIX, TMP_SUFFIX, BackupError, check_size_and_digest, create_new, data_path, read_manifest, remove,
    unpack_checked, verify_backup,
)

ENCRYPTION = "age"
CREDENTIAL = "memd-backup-identity"  # systemd LoadCredential= name: $CREDENTIALS_DIRECTORY/memd-backup-identity
AGE_VERSION_LINE = b"age-encryption.org/v1\n"
AGE_CHUNK = 64 * 1024  # plaintext bytes per STREAM chunk
AGE_TAG = 16  # Poly1305 tag per chunk
AGE_NONCE = 16  # payload key nonce at the start of the payload
MAX_HEADER = 1 << 20  # an X25519 stanza is ~100 bytes: a header this big is not one memd wrote
_FIELDS: dict[str, type] = {"recipients": list, "ciphertext_bytes": int, "ciphertext_sha256": str}


def is_encrypted(manifest: Mapping[str, Any]) -> bool:
    return manifest.get("encryption") is not None


def payload_bytes(plain_bytes: int) -> int:
    """What age's STREAM makes of ``plain_bytes``: nonce, then each 64 KiB chunk plus its tag.

    The last chunk may be full; only an empty plaintext has an empty chunk.
    """
    chunks = max(1, -(-plain_bytes // AGE_CHUNK))
    return AGE_NONCE + plain_bytes + AGE_TAG * chunks


class _HashingWriter:
    """The file-like object pyrage writes into: counts and hashes the bytes, keeps the first error.

    pyrage writes its last buffered bytes when its buffer is dropped and
    ignores a failure there (a full disk at the very end), so the error is
    kept here and raised once the call returns.
    """

    __slots__ = ("_out", "sha256", "size", "error")

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            self._out.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise
        self.sha256.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        pass  # create_new() flushes and fsyncs the file itself


def recipients_of(keys: Sequence[str]) -> list[x25519.Recipient]:
    """The config's ``age1...`` strings as pyrage recipients (the config has validated them)."""
    try:
        return [x25519.Recipient.from_str(k) for k in keys]
    except pyrage.RecipientError as exc:
        raise BackupError(f"backup.age_recipients holds a key that is not an age public key ({exc}); "
                          "fix the config (memd config check FILE)") from None


def encrypt(src: str, dest: str, keys: Sequence[str]) -> tuple[int, str]:
    """Encrypt the file ``src`` into the new file ``dest`` (fsynced); return its size and sha256."""
    recipients = recipients_of(keys)
    with open(src, "rb") as fin, create_new(dest) as out:
        writer = _HashingWriter(out)
        try:
            pyrage.encrypt_io(fin, writer, recipients)
        except pyrage.EncryptError as exc:
            if writer.error is not None:
                raise writer.error from None  # the disk's own error (ENOSPC, EIO), with its errno
            raise BackupError(f"cannot encrypt {src} into {dest}: {exc}") from None
        if writer.error is not None:
            raise writer.error
    return writer.size, writer.sha256.hexdigest()


def _header(path: str) -> tuple[int, int]:
    """Length of the age header and its number of X25519 stanzas; BackupError if it is not one."""
    with open(path, "rb") as f:
        head = f.read(MAX_HEADER)
    if not head.startswith(AGE_VERSION_LINE):
        raise BackupError(f"{path} is not an age file (it does not start with {AGE_VERSION_LINE!r})")
    x25519_stanzas, pos = 0, len(AGE_VERSION_LINE)
    while True:
        end = head.find(b"\n", pos)
        if end < 0:
            raise BackupError(f"{path}: its age header is cut short or longer than {MAX_HEADER} bytes")
        line = head[pos:end]
        if line.startswith(b"--- "):
            return end + 1, x25519_stanzas
        if line.startswith(b"-> X25519 "):
            x25519_stanzas += 1
        pos = end + 1


def check_ciphertext(path: str, manifest: Mapping[str, Any]) -> None:
    """What can be checked without the key: size, sha256, header, payload length; BackupError if wrong."""
    check_size_and_digest(path, manifest, "ciphertext_bytes", "ciphertext_sha256")
    header, stanzas = _header(path)
    if stanzas != len(manifest["recipients"]):
        raise BackupError(f"{path}: its age header has {stanzas} X25519 recipient(s) but the manifest lists "
                          f"{len(manifest['recipients'])}")
    expected = header + payload_bytes(manifest["compressed_bytes"])
    if manifest["ciphertext_bytes"] != expected:  # (the file's size, checked above)
        raise BackupError(f"{path} is {manifest['ciphertext_bytes']} bytes but an age file of a {manifest['compressed_bytes']}-byte frame "
                          f"with this header is {expected}: the manifest does not describe this ciphertext")


def read_any_manifest(path: str) -> dict[str, Any]:
    """The manifest of a plain or an encrypted backup, with the fields its kind needs checked."""
    try:
        manifest = read_manifest(path)
    except OSError as exc:
        raise BackupError(f"cannot verify {path}: {exc.strerror or exc}: {exc.filename or ''}") from exc
    encrypted = path.endswith(ENCRYPTED_SUFFIX)
    if is_encrypted(manifest) != encrypted:
        says = f"encryption {manifest['encryption']!r}" if is_encrypted(manifest) else "no encryption"
        raise BackupError(f"{path}: its name says {'an encrypted' if encrypted else 'a plain'} backup but its "
                          f"manifest says {says}")
    if not encrypted:
        return manifest
    if manifest["encryption"] != ENCRYPTION:
        raise BackupError(f"{path}: encryption {manifest['encryption']!r} is not one this memd knows ({ENCRYPTION})")
    for key, kind in _FIELDS.items():
        value = manifest.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise BackupError(f"{path}.json: field {key!r} is missing or not a {kind.__name__}")
    return manifest


def verify_without_key(path: str) -> dict[str, Any]:
    """The daemon's check of the backup it wrote: a plain one end to end, an encrypted one's ciphertext."""
    path = data_path(path)
    manifest = read_any_manifest(path)
    if not is_encrypted(manifest):
        return verify_backup(path)
    try:
        check_ciphertext(path, manifest)
    except OSError as exc:
        raise BackupError(f"cannot verify {path}: {exc.strerror or exc}") from exc
    return manifest


def decrypt(path: str, dest: str, identities: Sequence[x25519.Identity], manifest: Mapping[str, Any]) -> None:
    """Decrypt ``path`` into the new file ``dest`` as a stream; BackupError on a wrong key or a changed file."""
    with open(path, "rb") as src, create_new(dest) as out:
        writer = _HashingWriter(out)
        try:
            pyrage.decrypt_io(src, writer, list(identities))
        except pyrage.DecryptError as exc:  # raised on the header: no identity opens it
            raise BackupError(f"{path} cannot be opened with the identities given ({exc}): the wrong identity, or "
                              f"a damaged header; it was encrypted for {', '.join(manifest['recipients'])}") from None
        except OSError as exc:
            if writer.error is not None:
                raise writer.error from None
            raise BackupError(f"{path}: decryption failed ({exc}): the ciphertext was damaged or tampered with after "
                              "it was written") from None
        if writer.error is not None:
            raise writer.error


def unpack(path: str, dest: str, identities: Sequence[x25519.Identity] | None) -> dict[str, Any]:
    """Any backup into the new file ``dest``, checked end to end; ``dest`` survives only if sound.

    An encrypted one is decrypted into ``dest + ".lz4.tmp"`` first (beside
    ``dest``: for a restore that is inside the data directory, never next
    to the backup), removed afterwards.
    """
    path = data_path(path)
    manifest = read_any_manifest(path)
    if not is_encrypted(manifest):
        return unpack_checked(path, dest, manifest)
    if not identities:
        raise BackupError(f"{path} is encrypted for {', '.join(manifest['recipients'])}: give its identity with "
                          f"--identity FILE (or as the systemd credential {CREDENTIAL})")
    frame = dest + ".lz4" + TMP_SUFFIX
    remove(frame)
    try:
        try:
            check_ciphertext(path, manifest)
            decrypt(path, frame, identities, manifest)
        except OSError as exc:
            raise BackupError(f"cannot decrypt {path}: {exc.strerror or exc}: {exc.filename or ''}") from exc
        try:
            return unpack_checked(frame, dest, manifest)
        except BackupError as exc:  # its messages name the scratch frame: name the backup instead
            raise BackupError(str(exc).replace(frame, f"{path} (decrypted)")) from None
    finally:
        remove(frame)


# ---- identities (the operator's side only: the daemon never reads one) -----------------------

def identity_file(given: str | None, env: Mapping[str, str] = os.environ) -> str | None:
    """``--identity FILE``, else systemd's ``$CREDENTIALS_DIRECTORY/memd-backup-identity`` if present."""
    if given:
        return given
    creds = env.get("CREDENTIALS_DIRECTORY", "")
    path = os.path.join(creds, CREDENTIAL) if creds else ""
    return path if path and os.path.isfile(path) else None


def load_identities(path: str) -> list[x25519.Identity]:
    """The X25519 identities in an age identity file (age-keygen's format: ``#`` comments, one key a line).

    Errors never echo a line: it may be a secret key.
    """
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise BackupError(f"cannot read the identity file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise BackupError(f"{path} is not an age identity file (not UTF-8 text)") from None
    identities = []
    for n, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.lower().startswith("age1"):
            raise BackupError(f"{path}: line {n} is a public key (a recipient); the identity is the "
                              "AGE-SECRET-KEY-1... line age-keygen wrote")
        try:
            identities.append(x25519.Identity.from_str(line))
        except pyrage.IdentityError as exc:
            raise BackupError(f"{path}: line {n} is not an age X25519 identity (AGE-SECRET-KEY-1...): {exc}") from None
    if not identities:
        raise BackupError(f"{path} holds no age identity (an AGE-SECRET-KEY-1... line, as age-keygen writes)")
    return identities


def identities_for(given: str | None, env: Mapping[str, str] = os.environ) -> list[x25519.Identity] | None:
    """What ``memd restore`` and ``memd backup --verify`` decrypt with; None when no identity was given."""
    path = identity_file(given, env)
    return load_identities(path) if path is not None else None
