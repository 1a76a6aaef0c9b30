"""Dropping big containers a piece at a time, so that freeing them never holds the GIL for long.

Freeing a list of 1,000,000 flush rows or a frozen memtable's dict of 1,000,000 entries is
ONE C call (the container's deallocation, which frees every element) that holds the GIL
throughout: 70-100 ms on a 2-core VM, an event-loop stall even when it runs in a worker
thread. :func:`release_gradually` empties them in slices instead (each slice one short C
call; the interpreter hands the GIL over between them), in the thread that calls it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

CHUNK = 4096  # elements freed per C call


def release_gradually(containers: Iterable[list[Any] | dict[Any, Any]]) -> None:
    """Empty each list or dict in slices of :data:`CHUNK` (the caller drops its last reference then)."""
    for container in containers:
        if isinstance(container, list):
            while container:
                del container[-CHUNK:]
        else:
            pop = container.popitem
            while container:
                for _ in range(min(CHUNK, len(container))):
                    pop()


__all__ = ["CHUNK", "release_gradually"]
