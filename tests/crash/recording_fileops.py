"""A FileOps that records what reached stable storage, for power-loss simulation.

Each event is appended as one line to a side log with a plain ``os.write``
(the process may be SIGKILLed at any moment, but the OS keeps what it was
given; only a power loss would not, and that is what we simulate, not suffer):

    created <path>      file created (its name is durable only after a dir fsync)
    dirsync             the WAL directory was fsynced: every created file's name is durable
    synced <path> <n>   the first n bytes of <path> are durable
    unlinked <path>

:func:`simulate_power_loss` then cuts every WAL file back to its last synced
length and deletes files whose creation no directory fsync covered.
"""

from __future__ import annotations

import os

from memd.engine.fileops import FileOps


class RecordingFileOps(FileOps):
    def __init__(self, log_path: str) -> None:
        self._log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._paths: dict[int, str] = {}
        self._sizes: dict[int, int] = {}

    def _event(self, line: str) -> None:
        os.write(self._log, (line + "\n").encode())

    def create(self, path: str) -> int:
        fd = super().create(path)
        self._paths[fd] = path
        self._sizes[fd] = 0
        self._event(f"created {path}")
        return fd

    def write(self, fd: int, data: bytes | memoryview) -> int:
        n = super().write(fd, data)
        self._sizes[fd] = self._sizes.get(fd, 0) + n
        return n

    def truncate(self, fd: int, size: int) -> None:
        super().truncate(fd, size)
        self._sizes[fd] = size

    def fsync(self, fd: int) -> None:
        size = self._sizes.get(fd, 0)  # bytes written before this fsync began
        super().fsync(fd)
        if fd in self._paths:
            self._event(f"synced {self._paths[fd]} {size}")

    def close(self, fd: int) -> None:
        self._paths.pop(fd, None)
        self._sizes.pop(fd, None)
        super().close(fd)

    def fsync_dir(self, path: str) -> None:
        super().fsync_dir(path)
        self._event("dirsync")

    def unlink(self, path: str) -> None:
        super().unlink(path)
        self._event(f"unlinked {path}")


def simulate_power_loss(log_path: str) -> dict[str, int]:
    """Cut WAL files back to what was fsynced; return {path: bytes kept} (-1: dropped)."""
    synced: dict[str, int] = {}
    created_pending: set[str] = set()
    durable_names: set[str] = set()
    with open(log_path) as f:
        for line in f:
            kind, _, rest = line.rstrip("\n").partition(" ")
            if kind == "created":
                created_pending.add(rest)
                synced[rest] = 0
            elif kind == "dirsync":
                durable_names |= created_pending
                created_pending.clear()
            elif kind == "synced":
                path, _, n = rest.rpartition(" ")
                synced[path] = max(synced.get(path, 0), int(n))
            elif kind == "unlinked":
                synced.pop(rest, None)
                created_pending.discard(rest)
                durable_names.discard(rest)
    outcome: dict[str, int] = {}
    for path, n in synced.items():
        if not os.path.exists(path):
            continue
        if path not in durable_names:
            os.unlink(path)  # its directory entry never reached the disk
            outcome[path] = -1
            continue
        if os.path.getsize(path) > n:
            os.truncate(path, n)
        outcome[path] = n
    return outcome
