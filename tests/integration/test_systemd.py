"""memd and systemd, tested without systemd as PID 1.

- The unit files pass ``systemd-analyze verify`` (any output is a failure: it
  exits 0 on unknown keys) and score low on ``systemd-analyze security``;
  the sysusers.d / tmpfiles.d snippets are applied to a scratch root.
- A real daemon talks sd_notify to a datagram socket the test binds (path and
  abstract): STATUS= while recovering, READY=1 only once the socket accepts,
  WATCHDOG=1 periodically, STOPPING=1 on SIGTERM.
- A flush held up by a real SQLite lock stops the WATCHDOG=1 pings.
- Socket activation: a wrapper does what systemd does (listening socket at
  fd 3, LISTEN_FDS=1, LISTEN_PID=its pid) and execs ``memd serve``.
- The hardening that matters most for a Python daemon is emulated where the
  kernel allows: MemoryDenyWriteExecute= (prctl PR_SET_MDWE) and
  PrivateNetwork= (a new network namespace).

``systemd-analyze`` missing is a failure, not a skip: ``.ci/run`` installs it.
"""

from __future__ import annotations

import fcntl
import functools
import os
import re
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import anyio
import pytest
import redis

from memd import systemd
from memd.engine.engine import DB_NAME, Engine
from tests.integration.daemon import ROOT, short_tmpdir, wait_for_socket

pytestmark = pytest.mark.timeout(90)

UNITS = Path(ROOT) / "systemd"
EXPOSURE_MAX = 0.5  # measured 0.4 ("SAFE") with systemd 252 on Debian 12; a dropped hardening line shows here


def systemd_analyze() -> str:
    exe = shutil.which("systemd-analyze")
    assert exe, "systemd-analyze is missing: apt-get install systemd (.ci/run installs it)"
    return exe


def memd_entry_point() -> str:
    """The installed ``memd`` script (pip install -e . puts it next to the interpreter)."""
    candidate = os.path.join(os.path.dirname(sys.executable), "memd")
    path = candidate if os.access(candidate, os.X_OK) else shutil.which("memd")
    assert path, "no memd entry point: python3 -m pip install -e '.[test]'"
    return path


@pytest.fixture
def units(tmp_path: Path) -> Path:
    """The shipped units, with ExecStart= pointing at this machine's memd (verify checks it exists)."""
    for name in ("memd.service", "memd.socket"):
        shutil.copy(UNITS / name, tmp_path / name)
    shutil.copytree(UNITS / "memd.service.d", tmp_path / "memd.service.d")
    service = tmp_path / "memd.service"
    text = service.read_text()
    assert "ExecStart=/usr/bin/memd serve --config /etc/memd/memd.toml\n" in text
    service.write_text(text.replace("ExecStart=/usr/bin/memd ", f"ExecStart={memd_entry_point()} "))
    return tmp_path


def verify(units: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([systemd_analyze(), "verify", str(units / "memd.service"), str(units / "memd.socket")],
                          capture_output=True, text=True, timeout=60)


# ---- the unit files ----------------------------------------------------------------------


def test_units_verify_without_a_word(units: Path) -> None:
    result = verify(units)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", ""), result.stdout + result.stderr


def test_verify_output_is_what_catches_mistakes(units: Path) -> None:
    """The check above is meaningful: an unknown key (here in the drop-in) exits 0 but prints."""
    with open(units / "memd.service.d" / "socket-activation.conf", "a") as f:
        f.write("RuntimeDirectoryPreserved=yes\n")
    result = verify(units)
    assert result.returncode == 0 and "Unknown key" in result.stderr


def test_security_exposure_is_low(units: Path) -> None:
    result = subprocess.run([systemd_analyze(), "security", "--offline=true", "--no-pager",
                             str(units / "memd.service")], capture_output=True, text=True, timeout=60)
    found = re.search(r"Overall exposure level for memd\.service: (\d+(?:\.\d+)?)", result.stdout)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= EXPOSURE_MAX, result.stdout


def test_hardening_leaves_out_what_memd_needs() -> None:
    text = (UNITS / "memd.service").read_text()
    settings = {line.split("=", 1)[0] for line in text.splitlines() if "=" in line and not line.startswith("#")}
    assert "ProcSubset" not in settings, "ProcSubset=pid hides /proc/meminfo: the memory watchdog needs it"
    assert "PrivateUsers" not in settings, "PrivateUsers= turns peers' uids into 65534 for SO_PEERCRED"
    for key in ("Type=notify", "NotifyAccess=main", "WatchdogSec=30", "Restart=on-failure", "User=memd",
                "StateDirectory=memd", "RuntimeDirectory=memd", "ConfigurationDirectory=memd",
                "MemoryDenyWriteExecute=yes", "RestrictAddressFamilies=AF_UNIX", "ExecReload=/bin/kill -HUP $MAINPID"):
        assert key + "\n" in text, key


def test_sysusers_and_tmpfiles_snippets_apply(tmp_path: Path) -> None:
    """Applied to a scratch root, not to this machine: the user, the group and the directories' modes."""
    sysusers, tmpfiles = shutil.which("systemd-sysusers"), shutil.which("systemd-tmpfiles")
    assert sysusers and tmpfiles, "systemd-sysusers / systemd-tmpfiles are missing: apt-get install systemd"
    (tmp_path / "etc").mkdir()
    for cmd in ([sysusers, f"--root={tmp_path}", str(UNITS / "memd.sysusers.conf")],
                [tmpfiles, f"--root={tmp_path}", "--create", str(UNITS / "memd.tmpfiles.conf")]):
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
    def memd_id(table: str) -> int:
        found = re.search(r"^memd:x:(\d+):", (tmp_path / "etc" / table).read_text(), re.M)
        assert found, f"no memd in the scratch root's /etc/{table}"
        return int(found.group(1))

    uid, gid = memd_id("passwd"), memd_id("group")
    etc, state = os.stat(tmp_path / "etc" / "memd"), os.stat(tmp_path / "var" / "lib" / "memd")
    assert (stat.S_IMODE(etc.st_mode), etc.st_uid, etc.st_gid) == (0o750, 0, gid)
    assert (stat.S_IMODE(state.st_mode), state.st_uid, state.st_gid) == (0o700, uid, gid)


# ---- sd_notify from a real daemon ---------------------------------------------------------


class NotifyReceiver:
    """What systemd's notification socket would receive: one list of lines per datagram."""

    def __init__(self, address: str) -> None:
        self.address = address  # the NOTIFY_SOCKET value: a path, or "@name" (abstract namespace)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.messages: list[list[str]] = []

    def wait_for(self, line: str, timeout: float, count: int = 1,
                 proc: subprocess.Popen[bytes] | None = None) -> list[str]:
        """Receive until ``count`` datagrams hold a line starting with ``line``; return the last one.

        With ``proc``, give up as soon as that process has exited.
        """
        deadline = time.monotonic() + timeout
        while True:
            hits = [m for m in self.messages if any(x.startswith(line) for x in m)]
            if len(hits) >= count:
                return hits[count - 1]
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {line!r} (x{count}) within {timeout}s; got {self.messages}"
            assert proc is None or proc.poll() is None, f"the daemon exited ({proc.returncode}) first"
            self.sock.settimeout(min(remaining, 0.2))
            try:
                self.messages.append(self.sock.recv(4096).decode().split("\n"))
            except TimeoutError:
                pass

    def lines(self) -> list[str]:
        return [x for m in self.messages for x in m]

    def close(self) -> None:
        self.sock.close()


def daemon_env(**extra: str) -> dict[str, str]:
    """The test's environment minus anything systemd-ish it may itself run under, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("NOTIFY_", "WATCHDOG_", "LISTEN_")) and k not in ("RUNTIME_DIRECTORY",
                                                                               "STATE_DIRECTORY")}
    return {**env, **extra}


class Run:
    """A ``memd serve`` process with its own short temp dir; ``prefix`` wraps the command (exec wrappers)."""

    def __init__(self, env: dict[str, str], prefix: Sequence[str] = ()) -> None:
        self.base = short_tmpdir("memd-sd-")
        self.socket = os.path.join(self.base, "memd.sock")
        self.data_dir = os.path.join(self.base, "data")
        self.log_path = os.path.join(self.base, "memd.log")
        self.prefix, self.env = list(prefix), env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, fsync: str = "everysec") -> Run:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*self.prefix, sys.executable, "-m", "memd", "serve", "--socket", self.socket, "--data-dir",
                 self.data_dir, "--fsync", fsync], cwd=ROOT, env=self.env, stdout=log, stderr=log)
        return self

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self, timeout: float = 30) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture
def runs() -> Iterator[Callable[..., Run]]:
    made: list[Run] = []

    def make(env: dict[str, str], prefix: Sequence[str] = ()) -> Run:
        made.append(Run(env, prefix))
        return made[-1]

    yield make
    for run in made:
        run.cleanup()


def ping(path: str, timeout: float = 10.0) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(b"*1\r\n$4\r\nPING\r\n")
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = s.recv(64)
            assert chunk, "the server closed the connection"
            reply += chunk
        return reply


def test_notify_ready_watchdog_status_stopping(runs: Callable[..., Run]) -> None:
    base = short_tmpdir("memd-n-")
    receiver = NotifyReceiver(os.path.join(base, "notify"))
    try:
        run = runs(daemon_env(NOTIFY_SOCKET=receiver.address, WATCHDOG_USEC="400000")).start()
        ready = receiver.wait_for("READY=1", 30, proc=run.proc)
        assert ping(run.socket) == b"+PONG\r\n", "READY=1 is sent only once the socket accepts"
        assert f"STATUS=ready: socket={run.socket} fsync=everysec" in ready
        before = receiver.lines()[:receiver.lines().index("READY=1")]
        assert any(x.startswith("STATUS=recovering") for x in before), before
        receiver.wait_for("WATCHDOG=1", 15, count=4)  # every 0.2 s (WATCHDOG_USEC / 2)
        assert run.proc is not None
        run.proc.send_signal(signal.SIGTERM)
        stopping = receiver.wait_for("STOPPING=1", 15)
        assert any(x.startswith("STATUS=shutting down") for x in stopping)
        assert run.proc.wait(30) == 0, run.log()
    finally:
        receiver.close()
        shutil.rmtree(base, ignore_errors=True)


def test_notify_abstract_namespace_socket(runs: Callable[..., Run]) -> None:
    receiver = NotifyReceiver(f"@memd-test-{uuid.uuid4().hex}")
    try:
        run = runs(daemon_env(NOTIFY_SOCKET=receiver.address)).start()
        receiver.wait_for("READY=1", 30, proc=run.proc)
        assert ping(run.socket) == b"+PONG\r\n"
        assert run.stop() == 0, run.log()
        receiver.wait_for("STOPPING=1", 5)
        assert "WATCHDOG=1" not in receiver.lines(), "no WATCHDOG_USEC, no pings"
    finally:
        receiver.close()


# ---- a stuck flush -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_stuck_flush_stops_the_watchdog_pings(tmp_path: Path) -> None:
    """A second connection holds SQLite's write lock (a real fault, not a patched engine)."""
    sent: list[tuple[str, ...]] = []

    def send(*lines: str) -> bool:
        sent.append(lines)
        return True

    def pings() -> int:
        return sum(lines == ("WATCHDOG=1",) for lines in sent)

    async def until(condition: Callable[[], bool], timeout: float) -> None:
        with anyio.fail_after(timeout):
            while not condition():
                await anyio.sleep(0.01)

    async with Engine(str(tmp_path), flush_max_age=0.1) as engine:
        health = functools.partial(systemd.flush_health, engine, 0.5)
        async with anyio.create_task_group() as tg:
            tg.start_soon(systemd.watchdog_loop, 0.05, health, send)
            await until(lambda: pings() >= 3, 5)
            blocker = sqlite3.connect(str(tmp_path / DB_NAME), isolation_level=None)
            blocker.execute("BEGIN EXCLUSIVE")
            try:
                engine.keyspace.set(b"k", b"v")
                await engine.wait_durable()
                await until(lambda: any(lines[0].startswith("STATUS=unhealthy") for lines in sent), 10)
                quiet = pings()
                await anyio.sleep(0.5)  # ten intervals
                assert pings() == quiet, "no WATCHDOG=1 while the flush is stuck: systemd would restart memd"
            finally:
                blocker.execute("ROLLBACK")
                blocker.close()
            await until(lambda: pings() > quiet, 20)  # the flush goes through; pings resume
            assert engine.flush_count >= 1 and not engine.flush_stalled(0.5)
            tg.cancel_scope.cancel()


# ---- socket activation -------------------------------------------------------------------

# What systemd does for memd.socket, in miniature: listen, put the socket at fd 3,
# say so in LISTEN_FDS / LISTEN_PID (exec keeps the pid), then exec the service.
ACTIVATE = r"""
import os, socket, sys
path, argv = sys.argv[1], sys.argv[2:]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
os.chmod(path, 0o660)
s.listen(64)
fd = s.detach()
if fd != 3:
    os.dup2(fd, 3)  # (the copy is inheritable)
    os.close(fd)
else:
    os.set_inheritable(3, True)
os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()))
os.execvp(argv[0], argv)
"""


def activated(runs: Callable[..., Run], **env: str) -> Run:
    run = runs(daemon_env(**env))
    run.prefix = [sys.executable, "-c", ACTIVATE, run.socket]
    return run


def test_socket_activation_serves_the_passed_socket_and_leaves_it(runs: Callable[..., Run]) -> None:
    base = short_tmpdir("memd-n-")
    receiver = NotifyReceiver(os.path.join(base, "notify"))
    try:
        run = activated(runs, NOTIFY_SOCKET=receiver.address).start()
        assert run.proc is not None
        deadline = time.monotonic() + 20
        while not os.path.exists(run.socket):
            assert time.monotonic() < deadline and run.proc.poll() is None, run.log()
            time.sleep(0.01)
        # a client may connect before memd is ready: it waits in the backlog, it does not fail
        assert ping(run.socket, timeout=30) == b"+PONG\r\n"
        receiver.wait_for("READY=1", 30, proc=run.proc)
        assert "activated=systemd" in run.log()
        assert stat.S_IMODE(os.stat(run.socket).st_mode) == 0o660, "the file's mode is the socket unit's"
        assert run.stop() == 0, run.log()
        assert stat.S_ISSOCK(os.stat(run.socket).st_mode), "the socket file belongs to systemd: it stays"
    finally:
        receiver.close()
        shutil.rmtree(base, ignore_errors=True)


def test_socket_activation_still_refuses_a_held_lock(runs: Callable[..., Run]) -> None:
    run = activated(runs)
    with open(run.socket + ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as a running daemon would
        run.start()
        assert run.proc is not None
        assert run.proc.wait(30) != 0
    assert "another memd is already serving" in run.log(), run.log()


# ---- hardening the kernel can emulate -----------------------------------------------------

# MemoryDenyWriteExecute=yes, as prctl(PR_SET_MDWE) (Linux 6.3+; inherited across exec):
# no writable+executable memory for CPython and the C extensions memd or its clients load.
MDWE = r"""
import ctypes, mmap, os, sys
if ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
    sys.exit(77)
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    sys.exit(78)  # not enforced: the test would prove nothing
except OSError:
    pass
import hiredis, lz4.block, msgpack
reader = hiredis.Reader(); reader.feed(b"*1\r\n+OK\r\n"); assert reader.gets() == [b"OK"]
assert lz4.block.decompress(lz4.block.compress(b"x" * 5000)) == b"x" * 5000
assert msgpack.unpackb(msgpack.packb({"a": [1, 2]})) == {"a": [1, 2]}
os.execvp(sys.argv[1], sys.argv[1:])
"""


def test_runs_under_memory_deny_write_execute_and_a_private_network(runs: Callable[..., Run]) -> None:
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "--net", "true"], capture_output=True, timeout=30).returncode:
        pytest.skip("no network namespaces here (unshare --net needs CAP_SYS_ADMIN): PrivateNetwork= not emulated")
    base = short_tmpdir("memd-n-")
    receiver = NotifyReceiver(os.path.join(base, "notify"))  # a path: it crosses network namespaces
    try:
        run = runs(daemon_env(NOTIFY_SOCKET=receiver.address), [unshare, "--net", sys.executable, "-c", MDWE])
        run.start()
        assert run.proc is not None
        try:
            receiver.wait_for("READY=1", 30, proc=run.proc)
        except AssertionError:
            if run.proc.poll() == 77:
                pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3+): MemoryDenyWriteExecute= not emulated")
            raise AssertionError(run.log()) from None
        client = redis.Redis(unix_socket_path=run.socket)
        big = b"compressible " * 1000  # past storage.wal_compress_min_bytes: lz4 in the WAL
        assert client.set("big", big) and client.get("big") == big
        assert client.execute_command("MEM.PUT", "agent.prefs", "food", '{"likes": "ramen"}') == 1
        assert client.execute_command("MEMD.FLUSH")
        assert "used_memory_rss" in client.info("memory")  # psutil
        client.close()
        assert run.stop() == 0, run.log()
        restarted = runs(daemon_env())
        restarted.data_dir, restarted.socket = run.data_dir, os.path.join(restarted.base, "memd.sock")
        restarted.start()
        wait_for_socket(restarted.socket, 30, restarted.proc)
        client = redis.Redis(unix_socket_path=restarted.socket)
        assert client.get("big") == big
        client.close()
        assert restarted.stop() == 0
    finally:
        receiver.close()
        shutil.rmtree(base, ignore_errors=True)
