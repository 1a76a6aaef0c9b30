"""Encrypted backups (backup.age_recipients) in-process with a real Engine: config, the order of work
(verify, then encrypt; plaintext never in the backup directory), bounded memory, checks with and
without the key, restore with the identity, and the identity file.

(The drill against a real daemon process: tests/integration/test_backup_encrypted.py.)
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import subprocess
import sys
import textwrap
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lz4.frame
import pyrage
import pytest
from pyrage import x25519

from memd import config as config_mod
from memd.cli import main
from memd.config import BackupConfig
from memd.engine.engine import DB_NAME, LOCK_NAME, WAL_DIR, Engine
from memd.errors import ConfigError
from memd.maintenance import backup as backup_mod
from memd.maintenance import backup_age
from memd.maintenance.backup import BackupError, last_backup, list_backups, restore, rotate, run_backup
from memd.maintenance.backup_format import compress, manifest_path, sha256_file, verify_backup

if TYPE_CHECKING:
    from tests.conftest import FakeClock

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
IDENTITY = x25519.Identity.generate()
RECIPIENT = str(IDENTITY.to_public())
OTHER = x25519.Identity.generate()


def identity_file(directory: Path, identity: x25519.Identity = IDENTITY, name: str = "key.txt") -> str:
    """An identity file as age-keygen writes it: comments, then the secret key."""
    path = directory / name
    path.write_text(f"# created: 2026-12-07T00:00:00Z\n# public key: {identity.to_public()}\n{identity}\n")
    os.chmod(path, 0o600)
    return str(path)


@pytest.fixture
async def engine(tmp_path: Path, fake_clock: FakeClock) -> AsyncIterator[Engine]:
    async with Engine(str(tmp_path / "data"), clock=fake_clock, flush_max_age=3600) as e:
        yield e


@pytest.fixture
def cfg(tmp_path: Path) -> BackupConfig:
    return BackupConfig(dir=str(tmp_path / "backups"), keep_last=4, keep_daily=0, keep_weekly=0,
                        age_recipients=(RECIPIENT,))


def write_some(engine: Engine, n: int = 300, tag: bytes = b"") -> None:
    for i in range(n):
        engine.keyspace.set(b"s%d%s" % (i, tag), b"v%d" % i * 10)
    engine.keyspace.hset(b"hash" + tag, [(b"f", b"1")])
    engine.memories.put("user-1.prefs", "food" + tag.decode(), '{"likes": "ramen"}')


async def encrypted_backup(engine: Engine, cfg: BackupConfig, clock: FakeClock) -> str:
    write_some(engine)
    clock.advance(60)
    return str((await run_backup(engine, cfg, now=clock))["path"])


def load(path: str) -> dict[str, Any]:
    with open(manifest_path(path)) as f:
        return json.load(f)  # type: ignore[no-any-return]


def edit_manifest(path: str, **changes: object) -> None:
    manifest = load(path)
    manifest.update(changes)
    with open(manifest_path(path), "w") as f:
        json.dump(manifest, f)


def flip(path: str, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))


def resign(path: str) -> None:
    """The manifest made to agree with the changed ciphertext: only decryption can tell now."""
    edit_manifest(path, ciphertext_sha256=sha256_file(path), ciphertext_bytes=os.path.getsize(path))


# ---- config -------------------------------------------------------------------------------------

def test_config_takes_public_keys_and_a_change_is_live(tmp_path: Path) -> None:
    conf = tmp_path / "memd.toml"
    conf.write_text(f'[backup]\nage_recipients = ["{RECIPIENT.upper()}", " {OTHER.to_public()} "]\n')
    c = config_mod.load(conf)
    assert c.backup.age_recipients == (RECIPIENT, str(OTHER.to_public())), "normalized as age-keygen prints them"
    assert config_mod.load(None).backup.age_recipients == ()
    assert config_mod.to_dict(c)["backup.age_recipients"] == f"{RECIPIENT} {OTHER.to_public()}"
    shown = tmp_path / "shown.toml"
    shown.write_text(config_mod.to_toml(c))
    assert config_mod.load(shown).backup == c.backup, "config show reads back"
    live, restart = config_mod.changes(config_mod.load(None), c)
    assert "backup.age_recipients" in live and not restart


@pytest.mark.parametrize(("value", "key", "says"), [
    (f'["{RECIPIENT}", "age1notakey"]', "backup.age_recipients[1]", 'must be an age X25519 public key'),
    ('["ssh-ed25519 AAAAC3Nza"]', "backup.age_recipients[0]", "must be an age X25519 public key"),
    (f'"{RECIPIENT}"', "backup.age_recipients", "must be a list of age public keys"),
    ("[1]", "backup.age_recipients", "must be a list of age public keys"),
])
def test_config_names_the_bad_key(tmp_path: Path, value: str, key: str, says: str) -> None:
    conf = tmp_path / "memd.toml"
    conf.write_text(f"[backup]\nage_recipients = {value}\n")
    with pytest.raises(ConfigError) as info:
        config_mod.load(conf)
    assert info.value.key == key and says in info.value.message and info.value.path == str(conf)


@pytest.mark.parametrize("value", [f'["{IDENTITY}"]', f'"{IDENTITY}"', f'[1, "{IDENTITY}"]'])
def test_config_refuses_a_secret_key_without_echoing_it(tmp_path: Path, value: str) -> None:
    conf = tmp_path / "memd.toml"
    conf.write_text(f"[backup]\nage_recipients = {value}\n")
    with pytest.raises(ConfigError) as info:
        config_mod.load(conf)
    assert str(IDENTITY) not in str(info.value) and str(IDENTITY).lower() not in str(info.value).lower()
    assert info.value.key.startswith("backup.age_recipients")


# ---- making an encrypted backup -----------------------------------------------------------------

async def test_encrypted_backup_manifest_and_content(engine: Engine, cfg: BackupConfig, fake_clock: FakeClock,
                                                     tmp_path: Path) -> None:
    path = await encrypted_backup(engine, cfg, fake_clock)
    assert path.endswith(".sqlite3.lz4.age") and f"-lsn{engine.last_lsn}." in path
    m = load(path)
    assert m["encryption"] == "age" and m["recipients"] == [RECIPIENT] and m["verified"] is True
    assert m["ciphertext_bytes"] == os.path.getsize(path)
    assert m["ciphertext_sha256"] == hashlib.sha256(Path(path).read_bytes()).hexdigest()
    assert Path(path).read_bytes().startswith(b"age-encryption.org/v1\n")
    assert sorted(os.listdir(cfg.dir)) == sorted([os.path.basename(path), os.path.basename(manifest_path(path))])
    assert os.stat(path).st_mode & 0o777 == 0o640
    assert not os.path.exists(os.path.join(engine.data_dir, backup_mod.SCRATCH_DIR)), "the scratch is removed"
    # inside: the very lz4 frame whose sha256 the manifest holds, and the store at the manifest's LSN
    frame = pyrage.decrypt(Path(path).read_bytes(), [IDENTITY])
    assert hashlib.sha256(frame).hexdigest() == m["sha256"] and len(frame) == m["compressed_bytes"]
    db = tmp_path / "inside.sqlite3"
    db.write_bytes(lz4.frame.decompress(frame))
    assert len(db.read_bytes()) == m["raw_bytes"]
    import sqlite3
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT value FROM meta WHERE name = 'flushed_lsn'").fetchone()[0] == m["lsn"]
        assert conn.execute("SELECT count(*) FROM keys").fetchone()[0] == 301
    finally:
        conn.close()
    assert [b.path for b in list_backups(cfg.dir)] == [path] and last_backup(cfg.dir) is not None


async def test_plaintext_never_reaches_the_backup_directory(engine: Engine, cfg: BackupConfig,
                                                            fake_clock: FakeClock,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, list[str]] = {}
    real = backup_age.encrypt

    def watching(src: str, dest: str, keys: Any) -> tuple[int, str]:
        seen["backup dir"] = sorted(os.listdir(cfg.dir))
        seen["scratch"] = sorted(os.listdir(os.path.dirname(src)))
        assert os.path.dirname(src) == os.path.join(engine.data_dir, backup_mod.SCRATCH_DIR)
        assert os.stat(os.path.dirname(src)).st_mode & 0o777 == 0o700
        return real(src, dest, keys)

    monkeypatch.setattr(backup_age, "encrypt", watching)
    await encrypted_backup(engine, cfg, fake_clock)
    assert seen["backup dir"] == [], "nothing in the backup directory before encryption"
    assert seen["scratch"] == ["snapshot.sqlite3.lz4"], "one plaintext copy, the verified frame"


async def test_the_frame_is_verified_before_it_is_encrypted(engine: Engine, cfg: BackupConfig,
                                                            fake_clock: FakeClock,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    def flaky_compress(src: str, dest: str) -> None:  # a bit flips on its way to the disk
        compress(src, dest)
        flip(dest, os.path.getsize(dest) // 2)

    encrypted: list[str] = []
    monkeypatch.setattr(backup_mod, "compress", flaky_compress)
    monkeypatch.setattr(backup_age, "encrypt", lambda src, *a: encrypted.append(src))
    with pytest.raises(BackupError, match="failed verification before encryption, so nothing was written"):
        await encrypted_backup(engine, cfg, fake_clock)
    assert encrypted == [] and os.listdir(cfg.dir) == []
    assert not os.path.exists(os.path.join(engine.data_dir, backup_mod.SCRATCH_DIR))


async def test_a_stale_scratch_is_wiped(engine: Engine, cfg: BackupConfig, fake_clock: FakeClock) -> None:
    scratch = Path(engine.data_dir, backup_mod.SCRATCH_DIR)
    scratch.mkdir()
    (scratch / "snapshot.sqlite3").write_bytes(b"left by a crash")
    await encrypted_backup(engine, cfg, fake_clock)
    assert not scratch.exists()


async def test_recipients_apply_from_the_next_backup_and_rotation_handles_both(
        engine: Engine, tmp_path: Path, fake_clock: FakeClock) -> None:
    plain = BackupConfig(dir=str(tmp_path / "b"), keep_last=2, keep_daily=0, keep_weekly=0)
    enc = BackupConfig(dir=plain.dir, keep_last=2, keep_daily=0, keep_weekly=0, age_recipients=(RECIPIENT,))
    paths = []
    for i, c in enumerate([plain, enc, plain, enc]):
        write_some(engine, 3, tag=b"%d" % i)
        fake_clock.advance(60)
        paths.append(str((await run_backup(engine, c, now=fake_clock))["path"]))
    assert [p.endswith(".age") for p in paths] == [False, True, False, True]
    assert [b.path for b in list_backups(plain.dir)] == paths[:1:-1]
    assert sorted(os.listdir(plain.dir)) == sorted(os.path.basename(p) + s for p in paths[2:] for s in ("", ".json"))
    assert "encryption" not in load(paths[2]), "a plain backup's manifest is as before"
    assert rotate(plain.dir, 1, 0, 0, fake_clock()) == [paths[2]]


async def test_listing_leaves_out_an_encrypted_backup_of_the_wrong_size(
        engine: Engine, cfg: BackupConfig, fake_clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    """A truncated copy (say, an interrupted sync) is neither counted as the newest nor rotated away."""
    first = await encrypted_backup(engine, cfg, fake_clock)
    second = await encrypted_backup(engine, cfg, fake_clock)
    assert [b.path for b in list_backups(cfg.dir)] == [second, first]
    os.truncate(second, os.path.getsize(second) - 1)
    assert [b.path for b in list_backups(cfg.dir)] == [first]
    assert "backup_size_mismatch" in caplog.text
    assert rotate(cfg.dir, 1, 0, 0, fake_clock()) == [] and os.path.exists(second)


# ---- streaming: memory does not grow with the backup -------------------------------------------

def big_file(path: Path, mib: int) -> None:
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))


def test_encrypt_and_decrypt_stream_in_bounded_python_memory(tmp_path: Path) -> None:
    src, ct, out = tmp_path / "plain", tmp_path / "plain.age", tmp_path / "back"
    big_file(src, 24)
    tracemalloc.start()
    try:
        size, digest = backup_age.encrypt(str(src), str(ct), [RECIPIENT])
        _, enc_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        backup_age.decrypt(str(ct), str(out), [IDENTITY], {"recipients": [RECIPIENT]})
        _, dec_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert enc_peak < 1 << 20 and dec_peak < 1 << 20, (enc_peak, dec_peak)  # 24 MiB went through
    assert (size, digest) == (os.path.getsize(ct), sha256_file(str(ct)))
    assert sha256_file(str(out)) == sha256_file(str(src))


RSS_PROBE = textwrap.dedent("""
    import resource, sys
    from pyrage import x25519
    from memd.maintenance import backup_age
    src, ct, out, small = sys.argv[1:5]
    ident = x25519.Identity.generate()
    keys = [str(ident.to_public())]
    backup_age.encrypt(small, small + ".age", keys)  # everything loaded and warmed up first
    backup_age.decrypt(small + ".age", small + ".out", [ident], {"recipients": keys})
    peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    before = peak()
    backup_age.encrypt(src, ct, keys)
    after_encrypt = peak()
    backup_age.decrypt(ct, out, [ident], {"recipients": keys})
    print(after_encrypt - before, peak() - after_encrypt)
""")


@pytest.mark.timeout(120)
def test_encrypt_and_decrypt_do_not_grow_the_process_with_the_backup(tmp_path: Path) -> None:
    """Peak RSS of a fresh process (pyrage's own buffers included) while 64 MiB go through each way."""
    src, small = tmp_path / "plain", tmp_path / "small"
    big_file(src, 64)
    big_file(small, 1)
    out = subprocess.run([sys.executable, "-c", RSS_PROBE, str(src), str(tmp_path / "ct"), str(tmp_path / "out"),
                          str(small)], cwd=ROOT, capture_output=True, text=True, timeout=100,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    grew_encrypting, grew_decrypting = map(int, out.stdout.split())
    assert grew_encrypting < 8 << 20 and grew_decrypting < 8 << 20, out.stdout  # vs 64 MiB of backup
    assert sha256_file(str(tmp_path / "out")) == sha256_file(str(src))


def test_payload_length_is_what_age_writes() -> None:
    for n in (0, 1, 65535, 65536, 65537, 3 * 65536, 3 * 65536 + 7):
        out = io.BytesIO()
        pyrage.encrypt_io(io.BytesIO(b"\x00" * n), out, [IDENTITY.to_public()])
        data = out.getvalue()
        header = data.index(b"\n---") + 1
        header = data.index(b"\n", header) + 1
        assert len(data) - header == backup_age.payload_bytes(n), n


class _FailsAtTheEnd(io.FileIO):
    """A file whose last, small write fails (a disk filling up on the final chunk)."""

    def write(self, data: Any) -> int:
        if 0 < len(data) < 1000 and self.tell() > 1000:
            raise OSError(28, "No space left on device")
        return super().write(data)


def test_a_failed_final_write_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pyrage 1.4 writes the last chunk when it drops its buffer and ignores a failure there."""
    src = tmp_path / "plain"
    src.write_bytes(b"x" * (65536 + 100))  # one full chunk, then 116 bytes written at the very end

    @contextlib.contextmanager
    def failing(path: str, mode: int = 0o640) -> Iterator[Any]:
        with _FailsAtTheEnd(path, "x") as f:
            yield f

    monkeypatch.setattr(backup_age, "create_new", failing)
    with pytest.raises(OSError, match="No space left"):
        backup_age.encrypt(str(src), str(tmp_path / "out.age"), [RECIPIENT])


# ---- checks with and without the key ------------------------------------------------------------

def payload_byte(p: str) -> None:
    flip(p, os.path.getsize(p) - 40)


def payload_byte_resigned(p: str) -> None:
    payload_byte(p)
    resign(p)


def header_byte_resigned(p: str) -> None:
    flip(p, 40)  # inside the X25519 stanza
    resign(p)


def truncated_resigned(p: str) -> None:
    os.truncate(p, os.path.getsize(p) - 17)
    resign(p)


def extended_resigned(p: str) -> None:
    with open(p, "ab") as f:
        f.write(b"more")
    resign(p)


def reencrypted_other_frame(p: str) -> None:
    """Someone with the public key writes a different, valid age file and fixes the ciphertext fields."""
    other = os.urandom(load(p)["compressed_bytes"])  # as long as the real frame: the header and length agree
    Path(p).write_bytes(pyrage.encrypt(other, [IDENTITY.to_public()]))
    resign(p)


def wrong_sha(p: str) -> None:
    edit_manifest(p, ciphertext_sha256="0" * 64)


@pytest.mark.parametrize(("damage", "keyless", "keyed"), [
    (payload_byte, "ciphertext_sha256", "ciphertext_sha256"),
    (wrong_sha, "ciphertext_sha256", "ciphertext_sha256"),
    (payload_byte_resigned, None, "decryption failed"),
    (header_byte_resigned, None, "cannot be opened with the identities given"),
    (truncated_resigned, "an age file of a", "an age file of a"),
    (extended_resigned, "an age file of a", "an age file of a"),
    (reencrypted_other_frame, None, r"\(decrypted\): its sha256 .* is not the manifest's"),
])
async def test_checks_with_and_without_the_key(engine: Engine, cfg: BackupConfig, fake_clock: FakeClock,
                                               tmp_path: Path, damage: Callable[[str], None], keyless: str | None,
                                               keyed: str) -> None:
    path = await encrypted_backup(engine, cfg, fake_clock)
    backup_age.verify_without_key(path)
    damage(path)
    if keyless is None:
        backup_age.verify_without_key(path)  # what the key alone can tell
    else:
        with pytest.raises(BackupError, match=keyless):
            backup_age.verify_without_key(path)
    dest = tmp_path / "check.sqlite3"
    with pytest.raises(BackupError, match=keyed):
        backup_age.unpack(path, str(dest), [IDENTITY])
    assert not dest.exists() and not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


async def test_plain_verification_says_an_encrypted_backup_needs_its_identity(
        engine: Engine, cfg: BackupConfig, fake_clock: FakeClock) -> None:
    path = await encrypted_backup(engine, cfg, fake_clock)
    with pytest.raises(BackupError, match="is encrypted .*--identity FILE"):
        verify_backup(path)


async def test_a_manifest_that_lies_about_encryption_is_refused(engine: Engine, cfg: BackupConfig,
                                                                fake_clock: FakeClock, tmp_path: Path) -> None:
    path = await encrypted_backup(engine, cfg, fake_clock)
    m = load(path)
    del m["encryption"]
    with open(manifest_path(path), "w") as f:
        json.dump(m, f)
    with pytest.raises(BackupError, match="name says an encrypted backup but its manifest says no encryption"):
        backup_age.unpack(path, str(tmp_path / "x"), [IDENTITY])


# ---- restore --------------------------------------------------------------------------------------

def old_data_dir(tmp_path: Path) -> Path:
    target = tmp_path / "target"
    target.mkdir()
    Path(target, DB_NAME).write_bytes(b"old")
    os.mkdir(target / WAL_DIR)
    return target


async def test_restore_with_the_identity(engine: Engine, cfg: BackupConfig, fake_clock: FakeClock,
                                         tmp_path: Path) -> None:
    path = await encrypted_backup(engine, cfg, fake_clock)
    target = old_data_dir(tmp_path)
    aside = restore(path, str(target), identities=backup_age.load_identities(identity_file(tmp_path)))
    assert sorted(os.listdir(aside)) == [DB_NAME, WAL_DIR]
    assert sorted(os.listdir(target)) == sorted([DB_NAME, LOCK_NAME, os.path.basename(aside)]), "no scratch left"
    async with Engine(str(target), clock=fake_clock) as e2:
        assert e2.keyspace.get(b"s7") == b"v7" * 10
        assert e2.memories.get("user-1.prefs", "food") is not None


@pytest.mark.parametrize(("identities", "damage", "says"), [
    ([OTHER], None, "cannot be opened with the identities given.*encrypted for age1"),
    (None, None, "is encrypted for age1.*--identity FILE.*memd-backup-identity"),
    ([IDENTITY], payload_byte_resigned, "decryption failed.*damaged or tampered"),
    ([IDENTITY], payload_byte, "ciphertext_sha256"),
])
async def test_restore_refuses_and_changes_nothing(engine: Engine, cfg: BackupConfig, fake_clock: FakeClock,
                                                   tmp_path: Path, identities: list[x25519.Identity] | None,
                                                   damage: Callable[[str], None] | None, says: str) -> None:
    path = await encrypted_backup(engine, cfg, fake_clock)
    if damage is not None:
        damage(path)
    target = old_data_dir(tmp_path)
    with pytest.raises(BackupError, match=says):
        restore(path, str(target), identities=identities)
    assert sorted(os.listdir(target)) == sorted([DB_NAME, WAL_DIR, LOCK_NAME])
    assert Path(target, DB_NAME).read_bytes() == b"old"


# ---- identity files and the command line ----------------------------------------------------------

def test_identity_file_formats(tmp_path: Path) -> None:
    both = tmp_path / "two.txt"
    both.write_text(f"# two keys\n\n{OTHER}\n  {IDENTITY}  \n")
    assert [str(i) for i in backup_age.load_identities(str(both))] == [str(OTHER), str(IDENTITY)]
    cases = {
        "pub.txt": (f"{RECIPIENT}\n", "line 1 is a public key"),
        "bad.txt": ("# c\nAGE-SECRET-KEY-1NOTAKEY\n", "line 2 is not an age X25519 identity"),
        "empty.txt": ("# nothing\n", "holds no age identity"),
    }
    for name, (text, says) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(BackupError, match=says) as info:
            backup_age.load_identities(str(tmp_path / name))
        assert "NOTAKEY" not in str(info.value), "a line is never echoed"
    with pytest.raises(BackupError, match="cannot read the identity file"):
        backup_age.load_identities(str(tmp_path / "missing.txt"))


def test_identity_from_systemd_credentials(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    assert backup_age.identity_file(None, {"CREDENTIALS_DIRECTORY": str(creds)}) is None
    identity_file(creds, name=backup_age.CREDENTIAL)
    env = {"CREDENTIALS_DIRECTORY": str(creds)}
    assert backup_age.identity_file(None, env) == str(creds / "memd-backup-identity")
    assert backup_age.identity_file("/given", env) == "/given", "--identity wins"
    found = backup_age.identities_for(None, env)
    assert found is not None and [str(i) for i in found] == [str(IDENTITY)]
    assert backup_age.identities_for(None, {}) is None


async def test_cli_verify_and_restore(engine: Engine, cfg: BackupConfig, fake_clock: FakeClock, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    path = await encrypted_backup(engine, cfg, fake_clock)
    key, wrong = identity_file(tmp_path), identity_file(tmp_path, OTHER, "other.txt")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    assert main(["backup", "--verify", path]) == 0
    out = capsys.readouterr().out
    assert "ciphertext ok" in out and "content was not checked: give --identity FILE" in out
    assert main(["backup", "--verify", manifest_path(path), "--identity", key]) == 0
    assert "ok (decrypted and checked: sha256, lz4 checksum, integrity, LSN)" in capsys.readouterr().out
    assert main(["backup", "--verify", path, "--identity", wrong]) == 2
    err = capsys.readouterr().err
    assert err.startswith("memd backup: ") and "cannot be opened with the identities" in err and err.count("\n") == 1
    assert main(["backup", "--identity", key]) == 2
    assert "--identity goes with --verify" in capsys.readouterr().err
    target = old_data_dir(tmp_path)
    assert main(["restore", path, "--data-dir", str(target), "--identity", wrong]) == 2
    assert "cannot be opened with the identities" in capsys.readouterr().err
    assert Path(target, DB_NAME).read_bytes() == b"old"
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "creds"))
    os.mkdir(tmp_path / "creds")
    identity_file(tmp_path / "creds", name="memd-backup-identity")
    assert main(["restore", path, "--data-dir", str(target)]) == 0
    assert "restored" in capsys.readouterr().out
    assert Path(target, DB_NAME).read_bytes().startswith(b"SQLite format 3\x00")


async def test_cli_verify_of_a_plain_backup(engine: Engine, tmp_path: Path, fake_clock: FakeClock,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    write_some(engine)
    path = str((await run_backup(engine, BackupConfig(dir=str(tmp_path / "b")), now=fake_clock))["path"])
    assert main(["backup", "--verify", path]) == 0
    assert "ok (checked: sha256, lz4 checksum, integrity, LSN)" in capsys.readouterr().out
    flip(path, os.path.getsize(path) // 2)
    assert main(["backup", "--verify", path]) == 2
    assert "sha256" in capsys.readouterr().err
