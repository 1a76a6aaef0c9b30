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
from collections.abc import Generator, Iterator
from typing import Any, TypeVar, overload

import anyio

T = TypeVar("T")
SLICE = 0.002  # seconds of steps the loop runs before it serves again


@overload
async def run_on_loop(steps: Generator[None, None, T]) -> T: ...  # type: ignore[overload-overlap]


@overload
async def run_on_loop(steps: Iterator[None]) -> None: ...


async def run_on_loop(steps: Iterator[None]) -> Any:
    """``steps`` on the event loop, :data:`SLICE` at a time with the loop serving in between; their result
    (a generator's return value).

    Cancelled between steps, the generator is closed (its ``finally`` blocks run).
    """
    try:
        while True:
            deadline = time.perf_counter() + SLICE
            while time.perf_counter() < deadline:
                try:
                    next(steps)
                except StopIteration as done:
                    return done.value
            await anyio.sleep(0)
    finally:
        close = getattr(steps, "close", None)
        if close is not None:
            close()


__all__ = ["SLICE", "run_on_loop"]
