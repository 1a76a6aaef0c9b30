"""Long Python work run on the event loop in short steps, instead of in a worker thread.

Why: the daemon's worker threads share one GIL with the event loop. A thread running Python
takes the GIL at each system call the loop makes (every read, write and poll) and keeps it until
the loop's switch-interval timeout claims it back, so while it ran, every call cost the loop up
to that interval (1 ms), and the thread itself crawled: a key-filter build of 1,000,000 keys that
takes 4.9 s idle had not finished after 40 s of redis-benchmark GETs, and a flush's Python
(building its rows, refreshing the read cache) cost GETs running meanwhile about 45% of their
rate. Python work is serial under the GIL wherever it runs; on the loop it costs only its own
CPU. So such work is written as a generator that yields every millisecond or so, and the loop
runs it a slice at a time (:func:`run_on_loop`); worker threads keep what releases the GIL
(SQLite's statements, fsync, file copies).
"""

from __future__ import annotations

import time
from collections.abc import Generator
from typing import TypeVar

import anyio

T = TypeVar("T")
Steps = Generator[None, None, T]
SLICE = 0.002  # seconds of steps the loop runs before it serves again


def run_all(steps: Steps[T]) -> T:
    """All of ``steps`` at once (tests, code already off the loop); their result."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


async def run_on_loop(steps: Steps[T]) -> T:
    """``steps`` on the event loop, :data:`SLICE` at a time with the loop serving in between; their result.

    Cancelled between steps, the generator is closed (its ``finally`` blocks run).
    """
    try:
        while True:
            deadline = time.perf_counter() + SLICE
            while time.perf_counter() < deadline:
                try:
                    next(steps)
                except StopIteration as done:
                    return done.value  # type: ignore[no-any-return]
            await anyio.sleep(0)
    finally:
        steps.close()


__all__ = ["SLICE", "Steps", "run_all", "run_on_loop"]
