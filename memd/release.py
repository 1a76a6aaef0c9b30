"""Dropping big containers a piece at a time, so that freeing them never holds the GIL for long.

Freeing a list of 1,000,000 flush rows or a frozen memtable's dict of 1,000,000 entries is
ONE C call (the container's deallocation, which frees every element) that holds the GIL
throughout: 70-100 ms on a 2-core VM, an event-loop stall even when it runs in a worker
thread. :func:`release_steps` empties them in slices instead (each slice one short C call),
a step each, which the event loop runs between its other work (see memd.steps: a worker
thread doing it cost the loop more, in GIL hand-offs, than the work itself).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

CHUNK = 4096  # elements freed per C call


def release_steps(containers: Iterable[list[Any] | dict[Any, Any]]) -> Iterator[None]:
    """Empty each list or dict in slices of :data:`CHUNK`, a step each (the caller drops its last
    reference then): for the event loop to run between its other work (memd.steps)."""
    for container in containers:
        if isinstance(container, list):
            while container:
                del container[-CHUNK:]
                yield
        else:
            pop = container.popitem
            while container:
                for _ in range(min(CHUNK, len(container))):
                    pop()
                yield


__all__ = ["CHUNK", "release_steps"]
