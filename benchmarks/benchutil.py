"""What every benchmark script shares: cleaning up its processes and temp dirs on any exit.

Imported by the scripts in this folder (run as ``python3 benchmarks/<script>.py``,
which puts this folder on ``sys.path``).
"""

from __future__ import annotations

import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

STOP_GRACE = 300.0  # seconds for a server to exit after SIGTERM (memd flushes its buffer to SQLite)


class Interrupted(Exception):
    """SIGTERM/SIGHUP: unwind through the ``finally`` blocks like Ctrl-C does."""


def raise_interrupted(signum: int, _frame: object) -> None:
    raise Interrupted(signal.Signals(signum).name)


@dataclass
class Cleanup:
    """Every process started and every temp dir made, so they can all be removed on any exit."""

    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)

    def mkdtemp(self, prefix: str) -> str:
        d = tempfile.mkdtemp(prefix=prefix, dir="/tmp")  # short: AF_UNIX paths are limited to ~107 bytes
        self.dirs.append(d)
        return d

    def rmdir(self, d: str) -> None:
        shutil.rmtree(d, ignore_errors=True)
        if d in self.dirs:
            self.dirs.remove(d)

    def stop(self, proc: subprocess.Popen[bytes], grace: float = STOP_GRACE) -> None:
        if proc.poll() is None:
            try:
                proc.terminate()
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc in self.procs:
            self.procs.remove(proc)

    def all(self) -> None:
        # Signals arriving now must not interrupt the cleanup itself.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        for proc in list(self.procs):
            self.stop(proc, grace=30.0)
        for d in list(self.dirs):
            self.rmdir(d)


def tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def wait_ready(sock_path: str, proc: subprocess.Popen[bytes], log: str, deadline: float, *, poll: float = 0.05,
               reply_timeout: float = 2.0) -> None:
    """Poll connect + PING on the socket until the server answers, it exits, or the deadline passes.

    ``poll`` is also the resolution of a start time measured with it.
    """
    end = time.monotonic() + deadline
    last: Exception | None = None
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode} before accepting:\n{tail(log)}")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(reply_timeout)
                s.connect(sock_path)
                s.sendall(b"*1\r\n$4\r\nPING\r\n")
                if s.recv(64).startswith(b"+PONG"):
                    return
        except OSError as e:
            last = e
        time.sleep(poll)
    raise RuntimeError(f"{sock_path} did not accept within {deadline:.0f} s ({last}):\n{tail(log)}")


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def command_output(cmd: list[str]) -> str:
    """A command's stdout (run in the repository), or "?" when it cannot run."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=REPO).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def memd_build() -> str:
    """memd's version, event loop and commit (+dirty when memd/ has uncommitted changes): what was measured."""
    memd = command_output([sys.executable, "-m", "memd", "--version"]) or "memd ?"
    try:
        import uvloop  # noqa: F401, PLC0415
        memd += " (uvloop)"
    except ImportError:
        memd += " (asyncio)"
    commit = command_output(["git", "rev-parse", "--short", "HEAD"])
    if commit not in ("", "?"):
        dirty = command_output(["git", "status", "--porcelain", "--untracked-files=no", "--", "memd"])
        memd += f" @ {commit}{'+dirty' if dirty else ''}"
    return memd


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line() -> str:
    """CPUs (and how many this process may use), CPU model, kernel and Python: what the figures ran on."""
    ncpu = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else ncpu
    return (f"machine: {ncpu} CPUs ({usable} usable), {cpu_model()}; {platform.system()} {platform.release()}; "
            f"Python {platform.python_version()}")


def timed_steps(steps: Iterator[None], spent: Callable[[float], None]) -> Iterator[None]:
    """``steps`` (a generator the daemon runs on its loop a step at a time), each step's thread CPU
    time passed to ``spent``: what a flush's step costs the loop."""
    while True:
        t0 = time.thread_time()
        try:
            next(steps)
        except StopIteration:
            return
        finally:
            spent(time.thread_time() - t0)
        yield
