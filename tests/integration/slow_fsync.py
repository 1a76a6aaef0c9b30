"""``python -m tests.integration.slow_fsync serve ...``: the memd daemon, each WAL write() 20 ms late.

Crash tests of the fsync = always guarantee kill the daemon at a random moment.
Under ``always`` a record stays in memd's memory from its append until the
WAL thread write()s it (then fsyncs it); with a fast disk that window is a few
microseconds, so a reply sent too early (before its record is durable) would
rarely be caught. Delaying the write() widens the window to where a SIGKILL
almost always lands in it, without changing anything else the daemon does.
"""

from __future__ import annotations

import sys
import time

from memd.cli import main
from memd.engine.fileops import FileOps

DELAY = 0.02

_write = FileOps.write


def _slow_write(self: FileOps, fd: int, data: bytes | memoryview) -> int:
    time.sleep(DELAY)
    return _write(self, fd, data)


FileOps.write = _slow_write  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(main())
