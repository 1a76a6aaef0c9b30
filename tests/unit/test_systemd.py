"""memd.systemd without systemd: sd_notify datagrams, watchdog timing and health, socket activation.

The notification socket is a plain AF_UNIX datagram socket the test binds
(path and abstract); "systemd passed fd 3" is stood in for by pointing
``LISTEN_FDS_START`` at a socket the test made, so pytest's own fd 3 is never
touched.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from memd import daemon, systemd
from memd.engine import engine as engine_mod
from memd.engine.engine import WAL_DIR, Engine
from memd.engine.records import OP_SET, encode_record, encode_segment_header
from memd.engine.wal import segment_name
from memd.errors import MemdError

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def receiver() -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket standing in for systemd's notification socket, and its NOTIFY_SOCKET value."""
    base = Path("/tmp") / f"memd-n-{uuid.uuid4().hex[:8]}"  # short: AF_UNIX paths are limited to ~107 bytes
    base.mkdir()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(base / "notify"))
    sock.settimeout(5)
    yield sock, str(base / "notify")
    sock.close()
    (base / "notify").unlink()
    base.rmdir()


# ---- notify ------------------------------------------------------------------------------


def test_notify_sends_lines_as_one_datagram(receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    assert systemd.notify("READY=1", "STATUS=ready", env={"NOTIFY_SOCKET": path}) is True
    assert sock.recv(4096) == b"READY=1\nSTATUS=ready"


def test_notify_abstract_namespace() -> None:
    name = f"memd-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert systemd.notify("WATCHDOG=1", env={"NOTIFY_SOCKET": "@" + name}) is True
        assert sock.recv(4096) == b"WATCHDOG=1"


def test_notify_is_a_no_op_outside_systemd() -> None:
    assert systemd.notify("READY=1", env={}) is False
    assert systemd.notify("READY=1", env={"NOTIFY_SOCKET": "vsock:2:1234"}) is False


def test_notify_failure_is_logged_once_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                  receiver: tuple[socket.socket, str]) -> None:
    caplog.set_level("INFO", "memd.systemd")
    for _ in range(3):  # a watchdog tick each: one line, not one per tick
        assert systemd.notify("WATCHDOG=1", env={"NOTIFY_SOCKET": str(tmp_path / "gone")}) is False
    assert caplog.text.count("sd_notify_failed") == 1
    assert systemd.notify("WATCHDOG=1", env={"NOTIFY_SOCKET": receiver[1]}) is True
    assert "sd_notify_recovered" in caplog.text


# ---- watchdog interval -------------------------------------------------------------------


@pytest.mark.parametrize(("env", "expected"), [
    ({}, None),
    ({"WATCHDOG_USEC": "30000000"}, 15.0),
    ({"WATCHDOG_USEC": "400000"}, 0.2),
    ({"WATCHDOG_USEC": "400000", "WATCHDOG_PID": str(os.getpid())}, 0.2),
    ({"WATCHDOG_USEC": "400000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),  # meant for another process
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
])
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert systemd.watchdog_interval(env) == expected


def test_stall_limit_is_one_watchdog_period_with_a_floor() -> None:
    assert systemd.stall_limit(15.0) == 30.0
    assert systemd.stall_limit(0.2) == systemd.STALL_MIN_SECONDS


# ---- socket activation -------------------------------------------------------------------


def _passed(monkeypatch: pytest.MonkeyPatch, sock: socket.socket) -> int:
    """Make ``sock`` the fd systemd 'passed' (instead of fd 3); the caller no longer owns it."""
    fd = sock.detach()
    monkeypatch.setattr(systemd, "LISTEN_FDS_START", fd)
    return fd


def test_listen_socket_takes_the_passed_socket_and_clears_the_environment(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / "s"))
    listener.listen()
    listener.set_inheritable(True)  # as systemd passes it
    fd = _passed(monkeypatch, listener)
    env = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "1", "LISTEN_FDNAMES": "memd.socket", "HOME": "/x"}
    sock = systemd.listen_socket(env)
    assert sock is not None
    with sock:
        assert sock.fileno() == fd and sock.getsockname() == str(tmp_path / "s")
        assert not sock.get_inheritable(), "a child memd might start must not inherit the listener"
    assert env == {"HOME": "/x"}, "LISTEN_* are taken once"


def test_listen_socket_ignores_variables_meant_for_another_process() -> None:
    env = {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "1"}
    assert systemd.listen_socket(env) is None
    assert systemd.listen_socket({}) is None


def test_listen_socket_refuses_several_sockets() -> None:
    with pytest.raises(MemdError, match="exactly one"):
        systemd.listen_socket({"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "2"})


@pytest.mark.parametrize("kind", ["datagram", "not-listening"])
def test_listen_socket_refuses_what_it_cannot_serve(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                    kind: str) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM if kind == "datagram" else socket.SOCK_STREAM)
    sock.bind(str(tmp_path / "s"))
    fd = _passed(monkeypatch, sock)
    try:
        with pytest.raises(MemdError, match="not a listening AF_UNIX stream socket"):
            systemd.listen_socket({"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "1"})
    finally:
        os.close(fd)  # refused, not taken: the fd is still the caller's


# ---- watchdog health ---------------------------------------------------------------------


class FakeEngine:
    """The engine state the watchdog reads (systemd.Flushing)."""

    def __init__(self) -> None:
        self.stalled = False
        self.flush_error: str | None = None

    def flush_stalled(self, seconds: float) -> bool:
        return self.stalled

    def buffered_bytes(self) -> int:
        return 1234


def test_flush_health_reports_why() -> None:
    engine = FakeEngine()
    assert systemd.flush_health(engine, 30.0) is None
    engine.stalled, engine.flush_error = True, "OperationalError: database is locked"
    reason = systemd.flush_health(engine, 30.0)
    assert reason is not None and "30s" in reason and "buffer_bytes=1234" in reason and "locked" in reason


@pytest.mark.anyio
async def test_watchdog_loop_pings_only_while_healthy() -> None:
    engine = FakeEngine()
    sent: list[tuple[str, ...]] = []

    def send(*lines: str) -> bool:
        sent.append(lines)
        return True

    async def pings_reach(n: int) -> None:
        with anyio.fail_after(5):
            while sum(lines == ("WATCHDOG=1",) for lines in sent) < n:
                await anyio.sleep(0.005)

    async with anyio.create_task_group() as tg:
        tg.start_soon(systemd.watchdog_loop, 0.01, lambda: systemd.flush_health(engine, 1.0), send)
        await pings_reach(3)
        engine.stalled = True
        with anyio.fail_after(5):
            while not any(lines[0].startswith("STATUS=unhealthy") for lines in sent):
                await anyio.sleep(0.005)
        stalled_at = len(sent)
        await anyio.sleep(0.1)  # ~10 intervals
        assert len(sent) == stalled_at, "no WATCHDOG=1 (and no repeated STATUS) while the flush is stuck"
        engine.stalled = False
        await pings_reach(4)
        tg.cancel_scope.cancel()


def test_engine_flush_stalled_reads_progress(tmp_path: Path) -> None:
    engine = Engine(str(tmp_path), flush_max_age=5.0)  # not opened: only its flush bookkeeping is used
    now = time.monotonic()
    assert not engine.flush_stalled(10.0)
    engine.flush_started = now - 11.0  # a flush (or a series of failing retries) began 11 s ago
    assert engine.flush_stalled(10.0) and not engine.flush_stalled(12.0)
    engine.flush_started = None
    engine.active.records, engine.active.created = 1, now - 16.0  # buffered writes the loop never flushed
    assert engine.flush_stalled(10.0), "due at flush_max_age, overdue by more than 10 s"
    assert not engine.flush_stalled(12.0)
    engine.active.records = 0
    assert not engine.flush_stalled(10.0), "an idle, empty buffer is healthy however old"


# ---- recovery progress -------------------------------------------------------------------


@pytest.mark.anyio
async def test_recovery_reports_progress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wal_dir = tmp_path / WAL_DIR
    wal_dir.mkdir()
    data = bytearray(encode_segment_header(1))
    for lsn in range(1, 3001):
        data += encode_record(lsn, [(OP_SET, b"k%d" % lsn, b"v", None)], 1024)
    (wal_dir / segment_name(1)).write_bytes(bytes(data))
    monkeypatch.setattr(engine_mod, "RECOVERY_PROGRESS_SECONDS", 0.0)  # report at every chance
    seen: list[int] = []
    async with Engine(str(tmp_path), recovery_progress=seen.append) as engine:
        assert engine.keyspace.get(b"k3000") == b"v"
    assert seen == [1024, 2048]


def test_daemon_recovery_progress_extends_the_start_timeout(
        receiver: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch) -> None:
    sock, path = receiver
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    daemon._recovery_progress(5000)
    lines = sock.recv(4096).decode().split("\n")
    assert lines == [f"EXTEND_TIMEOUT_USEC={daemon.RECOVERY_EXTEND_USEC}",
                     "STATUS=recovering: 5000 WAL records replayed"]
