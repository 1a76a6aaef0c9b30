"""Start and stop a real memd daemon process for integration tests."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# config sections for a daemon that never flushes on its own: writes stay in the buffer and the WAL
NO_AUTOFLUSH = """\
[flush]
max_records = 10000000
max_bytes = "1GiB"
max_age_seconds = 3600
[backpressure]
buffer_max_bytes = "2GiB"
"""


def short_tmpdir(prefix: str = "memd-") -> str:
    """AF_UNIX paths are limited to ~107 bytes: pytest's tmp_path can be too deep."""
    return tempfile.mkdtemp(prefix=prefix, dir="/tmp")


def wait_for_socket(path: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"daemon exited with {proc.returncode} before listening")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            return
        except OSError:
            time.sleep(0.02)
        finally:
            s.close()
    raise TimeoutError(f"nothing listens on {path} after {timeout} s")


class Daemon:
    """``memd serve`` in a subprocess with its own socket and data directory."""

    def __init__(self, *, fsync: str = "everysec", config: str | None = None, extra: Sequence[str] = (),
                 data_dir: str | None = None, base: str | None = None) -> None:
        self.base = base or short_tmpdir()
        self.socket = os.path.join(self.base, "memd.sock")
        self.data_dir = data_dir or os.path.join(self.base, "data")
        self.log_path = os.path.join(self.base, "memd.log")
        self.args = [sys.executable, "-m", "memd", "serve", "--socket", self.socket, "--data-dir", self.data_dir,
                     "--fsync", fsync, *(["--config", config] if config else []), *extra]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> Daemon:
        if hasattr(self, "_log"):
            self._log.close()  # the previous run may have ended by itself (SHUTDOWN)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, cwd=ROOT, stdout=self._log, stderr=self._log)
        try:
            wait_for_socket(self.socket, timeout, self.proc)
        except Exception:
            self.kill()
            raise RuntimeError(f"memd did not start:\n{self.log()}") from None
        return self

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if hasattr(self, "_log"):
            self._log.close()

    def cleanup(self) -> None:
        self.kill()
        shutil.rmtree(self.base, ignore_errors=True)
