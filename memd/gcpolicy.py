"""The daemon's cyclic-GC policy: what survives the young collections leaves the collector's reach.

Why: every object the cyclic GC tracks is walked by each full collection, on
whichever thread triggered it, with the GIL held. memd's long-lived objects are
mostly the buffer (one ``Entry`` per buffered key) and caches, which form no
reference cycles; a full collection over 1,000,000 buffered keys held the event
loop for ~600 ms. ``gc.freeze()`` after each flush already moved what was alive
out of reach, but between flushes (and with a buffer that is never flushed, as
with large flush limits) the buffer grew in generation 2 again.

So here, after every collection of generation 1 (every ~20,000 net allocations
under :data:`memd.daemon.GC_THRESHOLDS`), what survived it, now in generation 2,
is frozen at once: ``gc.freeze()`` splices lists, O(1). A full collection then
walks only what arrived since the last generation-1 collection. Frozen objects
are still freed by reference counting; what the collector no longer reclaims is a
reference cycle among objects that outlived two young collections and became
garbage later, the trade-off the flush-time freeze made already (memd's
long-lived objects break their cycles when they go: a closed connection
drops its pub/sub back-reference, see ``memd.server.Connection.connection_lost``).

The daemon also collects the young generations itself every 10 ms while busy
(:meth:`GcPolicy.pace_young_collections`): the collector's own trigger counts net
allocations, which a workload that replaces what it frees never moves.
Each collection is also timed (``gc.callbacks``): INFO shows the longest pause
(``memd_gc_pause_max_ms``) and a collection of 20 ms or more is logged, so a stall
the loop-lag figures show can be told apart from one that is not the collector's.
"""

from __future__ import annotations

import gc
import logging
import time
from typing import Any

import anyio

log = logging.getLogger("memd.gc")

SLOW_SECONDS = 0.020  # a collection this long is logged
YOUNG_INTERVAL = 0.01  # seconds between the young collections the daemon makes itself, while busy
IDLE_INTERVAL = 0.25  # ... and at most, while idle
IDLE_COLLECTION = 0.0002  # a collection this quick found little to do: the interval doubles


class GcPolicy:
    """Installed once per process (:meth:`install`); its figures feed INFO."""

    def __init__(self) -> None:
        self.pause_max = 0.0  # the longest collection seen, seconds
        self.freezes = 0
        self.collections = 0
        self._started = 0.0
        self._started_cpu = 0.0
        self._installed = False

    def install(self) -> None:
        if not self._installed:
            gc.callbacks.append(self._callback)
            self._installed = True

    def uninstall(self) -> None:
        if self._installed:
            gc.callbacks.remove(self._callback)
            self._installed = False

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            self._started_cpu = time.thread_time()
            return
        seconds = time.perf_counter() - self._started
        self.collections += 1
        if seconds > self.pause_max:
            self.pause_max = seconds
        generation = info.get("generation", 0)
        if seconds >= SLOW_SECONDS:
            # cpu_seconds well under seconds: the thread was off the CPU (a busy machine), not collecting
            log.info("gc_slow generation=%d seconds=%.3f cpu_seconds=%.3f collected=%d", generation, seconds,
                     time.thread_time() - self._started_cpu, info.get("collected", 0))
        if generation >= 1:  # the survivors are in generation 2 now: out of the next full collection's walk
            gc.freeze()
            self.freezes += 1

    def reset(self) -> None:
        """CONFIG RESETSTAT."""
        self.pause_max = 0.0

    async def pace_young_collections(self) -> None:
        """Collect the young generations every :data:`YOUNG_INTERVAL` seconds, on the event loop.

        Why: the collector starts a young collection when *net* allocations (new tracked objects
        minus freed ones) pass the generation-0 threshold. Under SETs that overwrite buffered keys
        each write allocates a buffer entry and frees the one it replaces, and a flush frees its
        rows by the thousand, so the net count stays low while tens of thousands of new objects
        pile up in generation 0; the collection that finally comes walks them all (a generation-1
        collection of ~40,000 objects: 25-120 ms under redis-benchmark ``-P 16`` over 1,000,000
        keys, logged as ``gc_slow``). Collecting on a clock bounds the pile by what the loop
        allocates in the interval: the same work in pauses of a few milliseconds (measured with
        the collections made every 10 ms: none reached 20 ms, and the loop's largest lag went
        from 71-130 ms to 25 ms, 1,000,000 keys under redis-benchmark ``-P 16``).
        """
        interval = YOUNG_INTERVAL
        while True:
            await anyio.sleep(interval)
            t0 = time.perf_counter()
            gc.collect(1)
            if time.perf_counter() - t0 > IDLE_COLLECTION:
                interval = YOUNG_INTERVAL
            else:  # nothing much to collect: an idle daemon wakes up a few times a second, not a hundred
                interval = min(2 * interval, IDLE_INTERVAL)

    def status(self) -> dict[str, float | int]:
        # objects in the permanent generation: flat under a steady load, unless frozen cycles leak
        return {"memd_gc_pause_max_ms": round(self.pause_max * 1000, 3), "memd_gc_freezes": self.freezes,
                "memd_gc_frozen_objects": gc.get_freeze_count()}


POLICY = GcPolicy()

__all__ = ["POLICY", "GcPolicy", "SLOW_SECONDS", "YOUNG_INTERVAL"]
