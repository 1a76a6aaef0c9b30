"""The file-system calls the WAL makes, behind one small seam.

Production uses :class:`FileOps` (plain ``os`` calls). Tests substitute a
subclass that records what was fsynced (to simulate a power loss by cutting
files back) or that fails on demand (full disk, I/O error) — faults are
injected at this boundary, never by patching the WAL's internals.
"""

from __future__ import annotations

import os


class FileOps:
    """Thin wrapper over the ``os`` calls the WAL needs."""

    def create(self, path: str) -> int:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)

    def write(self, fd: int, data: bytes | memoryview) -> int:
        return os.write(fd, data)

    def fsync(self, fd: int) -> None:
        os.fdatasync(fd)

    def truncate(self, fd: int, size: int) -> None:
        os.ftruncate(fd, size)

    def close(self, fd: int) -> None:
        os.close(fd)

    def unlink(self, path: str) -> None:
        os.unlink(path)

    def fsync_dir(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def truncate_path(self, path: str, size: int) -> None:
        """Cut a closed file back (torn-tail repair) and make the cut durable."""
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        finally:
            os.close(fd)
