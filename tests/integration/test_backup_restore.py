"""The restore drill against real daemon processes: write, `memd backup`, stop, destroy the data
directory, `memd restore`, start again: every key and memory is back. And a restore into a data
directory a live daemon is using is refused."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest

from memd.client import SyncClient
from tests.integration.daemon import ROOT, Daemon, short_tmpdir

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    """A daemon whose backups live outside its data directory, so that destroying one spares the other."""
    base = short_tmpdir("memd-bk-")
    config = os.path.join(base, "memd.toml")
    with open(config, "w") as f:
        f.write(f'[backup]\nschedule = ""\ndir = "{os.path.join(base, "backups")}"\nkeep_last = 2\n')
    d = Daemon(fsync="always", config=config, base=base)
    try:
        yield d
    finally:
        d.cleanup()


def memd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "memd", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def write_everything(c: SyncClient) -> None:
    c.set("greeting", "hello")
    c.set("counter", 41)
    c.incr("counter")
    c.set("ttl-key", "soon", ex=3600)
    c.rpush("chat:42", "hi", "how are you", "fine")
    c.hset("state:42", mapping={"step": "3", "agent": "planner"})
    c.sadd("tags", "a", "b", "c")
    c.zadd("scores", {"alice": 3.5, "bob": 1.0})
    c.set(b"bin\x00key", b"\xff\x00\x01")
    for i in range(300):
        c.set(f"bulk:{i}", "x" * 100)
    c.put(("user-42", "prefs"), "food", {"likes": "ramen", "stars": 5})
    c.put(("user-42", "prefs"), "food", {"likes": "udon", "stars": 4})  # version 2, version 1 in history
    c.put(("user-42", "notes"), "n1", {"text": "remember the milk"}, ttl=86400)


def check_everything(c: SyncClient) -> None:
    assert c.get("greeting") == b"hello" and c.get("counter") == b"42"
    assert c.get("ttl-key") == b"soon" and 0 < c.ttl("ttl-key") <= 3600
    assert c.lrange("chat:42", 0, -1) == [b"hi", b"how are you", b"fine"]
    assert c.hgetall("state:42") == {b"step": b"3", b"agent": b"planner"}
    assert c.smembers("tags") == {b"a", b"b", b"c"}
    assert c.zrange("scores", 0, -1, withscores=True) == [(b"bob", 1.0), (b"alice", 3.5)]
    assert c.get(b"bin\x00key") == b"\xff\x00\x01"
    assert all(c.get(f"bulk:{i}") == b"x" * 100 for i in range(300))
    food = c.get(("user-42", "prefs"), "food")
    assert food is not None and food.value == {"likes": "udon", "stars": 4} and food.version == 2
    assert [v.version for v in c.history(("user-42", "prefs"), "food")] == [1]
    note = c.get(("user-42", "notes"), "n1")
    assert note is not None and note.expires_at is not None
    assert [m.key for m in c.search(("user-42",), query="milk")] == ["n1"]


def test_restore_drill(daemon: Daemon) -> None:
    daemon.start()
    with SyncClient(daemon.socket, socket_timeout=30) as c:
        write_everything(c)
        out = memd("backup", "--socket", daemon.socket)
        assert out.returncode == 0, out.stderr
        backup = out.stdout.strip().splitlines()[-1]
        c.set("after-backup", "not in the backup")
    assert os.path.dirname(backup) == os.path.join(daemon.base, "backups") and os.path.isfile(backup)
    with open(backup + ".json") as f:
        assert json.load(f)["verified"] is True
    assert daemon.stop() == 0

    shutil.rmtree(daemon.data_dir)  # the disaster
    out = memd("restore", backup, "--data-dir", daemon.data_dir)
    assert out.returncode == 0, out.stderr
    assert os.path.isfile(os.path.join(daemon.data_dir, "memd.sqlite3"))

    daemon.start()
    with SyncClient(daemon.socket, socket_timeout=30) as c:
        check_everything(c)
        assert c.get("after-backup") is None
        c.set("life", "goes on")  # and the restored daemon takes writes
        assert c.get("life") == b"goes on"


def test_restore_into_a_live_daemons_data_dir_is_refused(daemon: Daemon) -> None:
    daemon.start()
    with SyncClient(daemon.socket, socket_timeout=30) as c:
        c.set("k", "v1")
        out = memd("backup", "--socket", daemon.socket)
        assert out.returncode == 0, out.stderr
        backup = out.stdout.strip().splitlines()[-1]
        c.set("k", "v2")
        before = sorted(os.listdir(daemon.data_dir))
        out = memd("restore", backup, "--data-dir", daemon.data_dir)
        assert out.returncode == 2
        assert "in use by another memd process" in out.stderr and "Traceback" not in out.stderr
        assert out.stderr.count("\n") == 1 and out.stdout == ""
        assert sorted(os.listdir(daemon.data_dir)) == before
        assert c.get("k") == b"v2"  # the daemon never noticed


def test_backup_cli_reports_a_daemon_error_in_one_line(daemon: Daemon) -> None:
    with open(os.path.join(daemon.base, "backups"), "w") as f:  # a file where the backup directory should be
        f.write("not a directory")
    daemon.start()
    out = memd("backup", "--socket", daemon.socket)
    assert out.returncode == 2, out.stdout
    assert out.stderr.startswith("memd backup: ") and out.stderr.count("\n") == 1, out.stderr
    assert "not a directory" in out.stderr and "Traceback" not in out.stderr and out.stdout == ""
    with SyncClient(daemon.socket, socket_timeout=30) as c:
        assert c.ping()  # a failed backup does not hurt the daemon


def test_serve_check_backup_restore_under_a_path_with_uri_characters() -> None:
    """SQLite opens read-only files through URIs, where '#', '?', '%' and spaces mean something:
    a data directory named like this once made `memd backup` fail, `memd check` call the store
    corrupt, and SQLite create an empty file at the path cut at '#'."""
    base = short_tmpdir("memd-odd-")
    odd = os.path.join(base, "a#b?c=1&d%20e f é")
    config = os.path.join(base, "memd.toml")
    with open(config, "w") as f:
        f.write(f'[backup]\nschedule = ""\ndir = {json.dumps(os.path.join(odd, "backups"))}\n')
    d = Daemon(fsync="always", config=config, base=base, data_dir=os.path.join(odd, "data"))
    try:
        d.start()
        with SyncClient(d.socket, socket_timeout=30) as c:
            write_everything(c)
            out = memd("backup", "--socket", d.socket)
            assert out.returncode == 0, out.stderr
            backup = out.stdout.strip().splitlines()[-1]
        assert backup.startswith(os.path.join(odd, "backups") + os.sep) and os.path.isfile(backup)
        assert d.stop() == 0
        out = memd("check", "--data-dir", d.data_dir)
        assert out.returncode == 0 and "check: ok" in out.stdout, out.stdout + out.stderr
        assert "integrity ok" in out.stdout
        shutil.rmtree(d.data_dir)
        out = memd("restore", backup, "--data-dir", d.data_dir)
        assert out.returncode == 0, out.stderr
        d.start()
        with SyncClient(d.socket, socket_timeout=30) as c:
            check_everything(c)
        assert d.stop() == 0
        # nothing appeared outside the data directory: no file at a path cut at '#', '?' or '%'
        assert sorted(os.listdir(base)) == sorted(["a#b?c=1&d%20e f é", "memd.toml", "memd.log", "memd.sock.lock"])
        assert sorted(os.listdir(odd)) == ["backups", "data"]
    finally:
        d.cleanup()
