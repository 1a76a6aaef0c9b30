"""The fault matrix's start-up cases, against real daemon processes: damage on disk, then ``memd serve``.

- a SQLite file corrupted on disk: the start is refused with one line that
  names the file and says what to do; ``memd check`` reports it; the backup
  named in that advice brings every acknowledged write back;
- a WAL segment removed from the middle of the log (SIGKILLed daemon, so the
  log is all there is): the start is refused and the message names the
  missing LSN range; ``storage.recovery = "skip-corrupt"`` starts anyway,
  replays everything else and loses exactly that range, and the log is whole
  again afterwards.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator

import pytest
import redis

from tests.integration.daemon import NO_AUTOFLUSH, ROOT, Daemon, short_tmpdir

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

START_TIMEOUT = 60  # a refused start must end by itself: it exits, it does not hang


def memd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "memd", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=START_TIMEOUT)


def refused_start(daemon: Daemon) -> str:
    """Run ``memd serve`` on the damaged directory; it must exit non-zero with one line on stderr."""
    out = subprocess.run(daemon.args, cwd=ROOT, capture_output=True, text=True, timeout=START_TIMEOUT)
    assert out.returncode != 0, "memd started on a damaged data directory"
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("memd serve: "), out.stderr
    return lines[-1]


@pytest.fixture
def base() -> Iterator[str]:
    path = short_tmpdir("memd-ft-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def write_config(base: str, text: str) -> str:
    path = os.path.join(base, "memd.toml")
    with open(path, "w") as f:
        f.write(text)
    return path


# ---- 4. a SQLite file corrupted on disk -----------------------------------------------------

def corrupt(db: str, where: str) -> None:
    conn = sqlite3.connect(db)
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    meta_pages = conn.execute("SELECT type, rootpage FROM sqlite_master WHERE tbl_name = 'meta'").fetchall()
    conn.close()
    with open(db, "r+b") as f:
        if where == "header":  # the 100-byte file header: "file is not a database"
            f.write(b"\0" * 100)
        elif where == "schema":  # the rest of page 1, the schema table: "malformed database schema"
            f.seek(100)
            f.write(secrets.token_bytes(page_size - 100))
        else:  # the meta table's pages (and its index's) read as valid empty leaves: SQLite sees no error,
            for kind, page in meta_pages:  # even integrity_check finds none; the flushed LSN is just gone
                f.seek((page - 1) * page_size)
                leaf = 0x0D if kind == "table" else 0x0A
                f.write(bytes([leaf, 0, 0, 0, 0]) + page_size.to_bytes(2, "big") + bytes(page_size - 7))


def test_corrupt_sqlite_file_refuses_start_and_the_advice_works(base: str) -> None:
    config = write_config(base, f'[backup]\nschedule = ""\ndir = "{os.path.join(base, "backups")}"\n')
    daemon = Daemon(fsync="always", config=config, base=base)
    acked: dict[str, str] = {}
    daemon.start()
    try:
        r = redis.Redis(unix_socket_path=daemon.socket, socket_timeout=30)
        for i in range(500):
            r.set(f"k{i}", f"v{i}")
            acked[f"k{i}"] = f"v{i}"
        r.hset("h", mapping={"a": "1"})
        out = memd("backup", "--socket", daemon.socket)
        assert out.returncode == 0, out.stderr
        backup = out.stdout.strip().splitlines()[-1]
        r.close()
    finally:
        assert daemon.stop() == 0
    # a clean stop checkpoints SQLite's own -wal into the file: the damage cannot hide behind a newer page 1
    db_name = "memd.sqlite3"
    assert not os.path.exists(os.path.join(daemon.data_dir, db_name + "-wal"))

    for where in ("header", "schema", "meta"):  # each on its own copy of the stopped daemon's directory
        damaged = Daemon(fsync="always", config=config, base=base, data_dir=os.path.join(base, f"data-{where}"))
        shutil.copytree(daemon.data_dir, damaged.data_dir, ignore=shutil.ignore_patterns("memd.lock"))
        db = os.path.join(damaged.data_dir, db_name)
        corrupt(db, where)

        line = refused_start(damaged)
        assert db in line, (where, line)
        assert f"memd check --data-dir {damaged.data_dir}" in line, (where, line)  # what to run, here
        assert f"memd restore BACKUP --data-dir {damaged.data_dir}" in line, (where, line)  # and what repairs it

        out = memd("check", "--data-dir", damaged.data_dir)
        assert out.returncode == 1, (where, out.stdout)
        assert re.search(r"^PROBLEM sqlite: .*memd\.sqlite3", out.stdout, re.M), (where, out.stdout)
        assert f"memd restore BACKUP --data-dir {damaged.data_dir}" in out.stdout, (where, out.stdout)

    # the advice works: the backup brings back every write acknowledged before it
    out = memd("restore", backup, "--data-dir", damaged.data_dir)  # (the damaged file is kept aside)
    assert out.returncode == 0, out.stderr
    damaged.start()
    try:
        r = redis.Redis(unix_socket_path=damaged.socket, socket_timeout=30, decode_responses=True)
        lost = [k for k, v in acked.items() if r.get(k) != v]
        assert not lost, f"{len(lost)} acknowledged writes lost, e.g. {lost[:3]}"
        assert r.hgetall("h") == {"a": "1"}
        r.close()
    finally:
        assert damaged.stop() == 0


# ---- 5. a WAL segment removed from the middle of the log ------------------------------------

SEGMENTED = NO_AUTOFLUSH + '[storage]\nwal_segment_bytes = "64KiB"\n'


def test_missing_wal_segment_names_the_lsn_range_and_skip_corrupt_is_explicit(base: str) -> None:
    config = write_config(base, SEGMENTED)
    daemon = Daemon(fsync="always", config=config, base=base)
    value = "x" * 800  # under wal_compress_min_bytes: ~80 records per 64 KiB segment
    daemon.start()
    try:
        r = redis.Redis(unix_socket_path=daemon.socket, socket_timeout=30)
        for i in range(400):
            r.set(f"k{i}", value)  # the i-th write of a fresh data directory: LSN i + 1
    finally:
        daemon.stop(signal.SIGKILL)  # nothing was flushed: the WAL is the only copy
    wal = os.path.join(daemon.data_dir, "wal")
    segments = sorted(int(n.split(".")[0]) for n in os.listdir(wal))
    assert len(segments) >= 4, segments
    first, after = segments[2], segments[3]
    os.unlink(os.path.join(wal, f"{first:020d}.wal"))

    line = refused_start(daemon)
    assert f"LSNs {first}..{after - 1} are missing" in line, line
    assert "skip-corrupt" in line and f"memd check --data-dir {daemon.data_dir}" in line, line
    out = memd("check", "--data-dir", daemon.data_dir)
    assert out.returncode == 1 and f"LSNs {first}..{after - 1} are missing" in out.stdout, out.stdout

    # the operator's explicit choice: start without the missing records
    write_config(base, SEGMENTED + 'recovery = "skip-corrupt"\n')
    daemon.start()
    try:
        r = redis.Redis(unix_socket_path=daemon.socket, socket_timeout=30, decode_responses=True)
        missing = {i for i in range(400) if r.get(f"k{i}") != value}
        assert missing == set(range(first - 1, after - 1)), "exactly the named LSNs are lost, nothing else"
        r.set("after", "1")
        r.close()
    finally:
        assert daemon.stop() == 0
    assert f"LSNs {first}..{after - 1} are missing" in daemon.log()  # and the log says what was skipped

    # the next start, back on the default recovery mode, finds a whole log again
    write_config(base, SEGMENTED)
    daemon.start()
    try:
        r = redis.Redis(unix_socket_path=daemon.socket, socket_timeout=30, decode_responses=True)
        assert r.get("after") == "1" and r.get("k0") == value and r.get(f"k{after - 1}") == value
        r.close()
    finally:
        assert daemon.stop() == 0
