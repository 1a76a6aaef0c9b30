"""Schema migrations report progress (systemd must not kill a long one), and a report never stops one."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sqlite3
import tempfile
from pathlib import Path

import pytest

from memd import daemon
from memd.engine.engine import DB_NAME, Engine
from memd.store import schema
from memd.store.schema import migrate
from tests.unit.old_schema import old_store, string_keys

pytestmark = pytest.mark.timeout(60)

N = 20_000


@pytest.fixture
def v3(tmp_path: Path) -> str:
    path = str(tmp_path / DB_NAME)
    old_store(path, 3, string_keys(N))
    return path


@pytest.fixture
def fine_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """The progress handler runs every 1,000 VM instructions: many chances to report in a small migration."""
    monkeypatch.setattr(schema, "PROGRESS_STEPS", 1000)


def migrated_keys(path: str) -> int:
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        return int(conn.execute("SELECT count(*) FROM keys").fetchone()[0])
    finally:
        conn.close()


def test_migration_reports_its_versions_and_elapsed_time(v3: str, fine_steps: None) -> None:
    calls: list[tuple[int, int, float]] = []
    assert migrate(v3, lambda a, b, s: calls.append((a, b, s)), interval=0.0) == 3
    assert len(calls) >= 2, "the v4 rebuild of 20,000 keys runs well over 2,000 VM instructions"
    assert {(a, b) for a, b, _ in calls} == {(3, 4), (6, 7)}  # the two rebuilds of the keys table
    elapsed = [s for _, _, s in calls]
    assert elapsed == sorted(elapsed) and elapsed[0] >= 0.0
    assert migrated_keys(v3) == N


def test_every_step_of_an_old_store_is_named(tmp_path: Path, fine_steps: None) -> None:
    path = str(tmp_path / DB_NAME)
    old_store(path, 1, string_keys(N))
    steps: list[tuple[int, int]] = []
    assert migrate(path, lambda a, b, s: steps.append((a, b)), interval=0.0) == 1
    assert (3, 4) in steps and (6, 7) in steps and set(steps) <= {(1, 2), (2, 3), (3, 4), (6, 7)}
    assert steps == sorted(steps), "steps are reported in the order they run"
    assert migrated_keys(path) == N


def test_an_upgrade_writes_in_place_not_through_the_sqlite_wal(v3: str, fine_steps: None) -> None:
    """Through the WAL, a rebuild's pages end in one long checkpoint that reports nothing (and doubles the disk)."""
    seen: list[tuple[bool, bool]] = []
    migrate(v3, lambda a, b, s: seen.append((os.path.exists(v3 + "-wal"), os.path.exists(v3 + "-journal"))),
            interval=0.0)
    assert seen and set(seen) == {(False, True)}, "a rollback journal while migrating, no -wal file"
    conn = sqlite3.connect(v3)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal", "WAL again for the daemon"
    finally:
        conn.close()


def test_reports_come_at_most_once_per_interval(v3: str, fine_steps: None) -> None:
    calls: list[float] = []
    migrate(v3, lambda a, b, s: calls.append(s), interval=3600.0)
    assert calls == [], "a migration shorter than the interval says nothing"


def test_a_failing_report_does_not_abort_the_migration(v3: str, fine_steps: None,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    calls = 0

    def broken(a: int, b: int, s: float) -> None:
        nonlocal calls
        calls += 1
        raise OSError("notification socket gone")

    with caplog.at_level(logging.WARNING, logger="memd.store"):
        assert migrate(v3, broken, interval=0.0) == 3
    assert calls >= 2
    assert migrated_keys(v3) == N
    warnings = [r.getMessage() for r in caplog.records if "schema_migration_progress_failed" in r.getMessage()]
    assert len(warnings) == 1 and "notification socket gone" in warnings[0], "logged once, not per report"


def test_a_current_store_reports_nothing(v3: str, fine_steps: None) -> None:
    migrate(v3)
    calls: list[tuple[int, int, float]] = []
    assert migrate(v3, lambda a, b, s: calls.append((a, b, s)), interval=0.0) == schema.SCHEMA_VERSION
    assert calls == []


@pytest.mark.anyio
async def test_engine_passes_migration_progress_to_the_store(v3: str, fine_steps: None,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schema, "MIGRATION_PROGRESS_SECONDS", 0.0)  # report at every chance
    calls: list[tuple[int, int]] = []
    async with Engine(str(Path(v3).parent), migration_progress=lambda a, b, s: calls.append((a, b))) as engine:
        assert engine.keyspace.get(b"key:00000007") == b"v" * 100
    assert calls and set(calls) == {(3, 4), (6, 7)}


def test_daemon_migration_progress_extends_the_start_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    base = tempfile.mkdtemp(prefix="memd-n-", dir="/tmp")  # short: AF_UNIX paths are limited to ~107 bytes
    address = os.path.join(base, "notify")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(address)
            sock.settimeout(5)
            monkeypatch.setenv("NOTIFY_SOCKET", address)
            daemon._migration_progress(3, 4, 12.4)
            lines = sock.recv(4096).decode().split("\n")
    finally:
        shutil.rmtree(base)
    assert lines == [f"EXTEND_TIMEOUT_USEC={daemon.MIGRATION_EXTEND_USEC}", "STATUS=migrating schema v3 -> v4, 12 s"]
