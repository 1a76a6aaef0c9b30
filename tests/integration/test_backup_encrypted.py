"""Encrypted backups against real daemon processes: the daemon, given only a public key, makes an
age-encrypted backup; a wrong identity (or none) is refused and leaves the data directory as it was;
`memd restore` with the identity (here from systemd's credentials directory) brings every key and
memory back; a recipient added to the config while the daemon runs applies to the next backup; a
secret key pasted into the config stops the start."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from pyrage import x25519

from memd.client import SyncClient
from memd.engine.engine import LOCK_NAME
from tests.integration.daemon import ROOT, Daemon, short_tmpdir
from tests.integration.test_backup_restore import check_everything, write_everything

pytestmark = pytest.mark.timeout(120)


def write_identity(path: str, identity: x25519.Identity) -> str:
    with open(path, "w") as f:
        f.write(f"# public key: {identity.to_public()}\n{identity}\n")
    os.chmod(path, 0o600)
    return path


def memd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "memd", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={**os.environ, **(env or {})})


def backup_config(base: str, recipients: list[str]) -> str:
    return (f'[backup]\nschedule = ""\ndir = "{os.path.join(base, "backups")}"\nkeep_last = 4\n'
            f"age_recipients = {json.dumps(recipients)}\n")


@pytest.fixture
def keys() -> Iterator[tuple[x25519.Identity, str]]:
    """The identity lives outside the daemon's directories, as the operator's would."""
    keydir = short_tmpdir("memd-key-")
    identity = x25519.Identity.generate()
    try:
        yield identity, write_identity(os.path.join(keydir, "backup-identity.txt"), identity)
    finally:
        shutil.rmtree(keydir, ignore_errors=True)


@pytest.fixture
def daemon(keys: tuple[x25519.Identity, str]) -> Iterator[Daemon]:
    base = short_tmpdir("memd-bke-")
    config = os.path.join(base, "memd.toml")
    with open(config, "w") as f:
        f.write(backup_config(base, [str(keys[0].to_public())]))
    d = Daemon(fsync="always", config=config, base=base)
    try:
        yield d
    finally:
        d.cleanup()


def contents(data_dir: str) -> dict[str, str]:
    """Every file under the data directory with its sha256 (the lock file holds the last holder's pid)."""
    found = {}
    for root, _, files in os.walk(data_dir):
        for name in files:
            path = os.path.join(root, name)
            if name != LOCK_NAME:
                with open(path, "rb") as f:
                    found[os.path.relpath(path, data_dir)] = hashlib.sha256(f.read()).hexdigest()
    return found


def test_encrypted_restore_drill(daemon: Daemon, keys: tuple[x25519.Identity, str], tmp_path: Path) -> None:
    identity, key_file = keys
    daemon.start()
    with SyncClient(daemon.socket, socket_timeout=30) as c:
        write_everything(c)
        out = memd("backup", "--socket", daemon.socket)
        assert out.returncode == 0, out.stderr
        backup = out.stdout.strip().splitlines()[-1]
        c.set("after-backup", "not in the backup")
    assert backup.endswith(".sqlite3.lz4.age") and os.path.dirname(backup) == os.path.join(daemon.base, "backups")
    with open(backup + ".json") as f:
        manifest = json.load(f)
    assert manifest["verified"] is True and manifest["recipients"] == [str(identity.to_public())]
    with open(backup, "rb") as f:
        assert f.read(22) == b"age-encryption.org/v1\n"
    out = memd("backup", "--verify", backup)
    assert out.returncode == 0 and "ciphertext ok" in out.stdout, out.stderr
    out = memd("backup", "--verify", backup, "--identity", key_file)
    assert out.returncode == 0 and "decrypted and checked" in out.stdout, out.stderr
    assert daemon.stop() == 0

    # a wrong identity, or none: refused in one line, nothing in the data directory changes
    before = contents(daemon.data_dir)
    wrong = write_identity(str(tmp_path / "wrong.txt"), x25519.Identity.generate())
    for args, says in ((["--identity", wrong], "cannot be opened with the identities given"),
                       ([], "give its identity with --identity FILE")):
        out = memd("restore", backup, "--data-dir", daemon.data_dir, *args, env={"CREDENTIALS_DIRECTORY": ""})
        assert out.returncode == 2 and out.stdout == "" and says in out.stderr, out.stderr
        assert out.stderr.startswith("memd restore: ") and out.stderr.count("\n") == 1, out.stderr
    assert contents(daemon.data_dir) == before, "the data directory is untouched"

    # the disaster; the identity comes the way systemd's LoadCredential= passes it
    shutil.rmtree(daemon.data_dir)
    creds = os.path.join(daemon.base, "credentials")
    os.mkdir(creds, 0o700)
    shutil.copy(key_file, os.path.join(creds, "memd-backup-identity"))
    out = memd("restore", backup, "--data-dir", daemon.data_dir, env={"CREDENTIALS_DIRECTORY": creds})
    assert out.returncode == 0, out.stderr
    daemon.start()
    with SyncClient(daemon.socket, socket_timeout=30) as c:
        check_everything(c)
        assert c.get("after-backup") is None


def test_recipients_added_while_running_apply_to_the_next_backup(daemon: Daemon,
                                                                 keys: tuple[x25519.Identity, str]) -> None:
    config = daemon.args[daemon.args.index("--config") + 1]
    with open(config, "w") as f:
        f.write(backup_config(daemon.base, []))
    daemon.start()
    with SyncClient(daemon.socket, socket_timeout=30) as c:
        c.set("k", "v")
        first = memd("backup", "--socket", daemon.socket)
        assert first.returncode == 0 and first.stdout.strip().endswith(".sqlite3.lz4"), first.stderr
        public = str(keys[0].to_public())
        with open(config + ".tmp", "w") as f:
            f.write(backup_config(daemon.base, [public]))
        os.replace(config + ".tmp", config)
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGHUP)
        r = redis.Redis(unix_socket_path=daemon.socket, decode_responses=True)
        deadline = time.monotonic() + 10
        while r.config_get("backup.age_recipients").get("backup.age_recipients") != public:
            assert time.monotonic() < deadline, "the reload never applied backup.age_recipients"
            time.sleep(0.05)
        r.close()
        second = memd("backup", "--socket", daemon.socket)
        assert second.returncode == 0 and second.stdout.strip().endswith(".sqlite3.lz4.age"), second.stderr
    out = memd("backup", "--verify", second.stdout.strip(), "--identity", keys[1])
    assert out.returncode == 0, out.stderr


def test_a_secret_key_in_the_config_stops_the_start(keys: tuple[x25519.Identity, str]) -> None:
    base = short_tmpdir("memd-bks-")
    try:
        config = os.path.join(base, "memd.toml")
        with open(config, "w") as f:
            f.write(f'[backup]\nage_recipients = ["{keys[0]}"]\n')
        d = Daemon(config=config, base=base)
        proc = subprocess.run(d.args, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and "backup.age_recipients[0]" in proc.stderr and "secret key" in proc.stderr
        assert str(keys[0]) not in proc.stderr + proc.stdout, "the secret is not echoed"
        assert not os.path.exists(d.data_dir), "refused before it touched anything"
    finally:
        shutil.rmtree(base, ignore_errors=True)
