"""Event-loop lag: how late a periodic timer fires, the direct measure of a stall.

Every command runs on the event loop's thread, so anything that holds it (a long command,
a cyclic-GC pass over a big buffer, a GIL-holding stretch of the flush thread) delays every
client by as long. Client-side latency figures mix that with the client's own delays; a timer
that should fire every :data:`INTERVAL` seconds and fires late by ``x`` shows an ``x``-second
stall of the loop itself, whatever caused it. The lateness of every tick goes into a
histogram (``memd_loop_lag_seconds`` in MEMD.METRICS) and INFO shows its largest value and a
99th-percentile bound.
"""

from __future__ import annotations

import time

import anyio

from memd.histogram import Histogram, latency_buckets

INTERVAL = 0.05  # seconds between ticks: 20 wake-ups a second, a stall of 50 ms or more never goes unseen
LAG_BUCKETS = latency_buckets(0.0001, 10.0)  # 100 µs (a healthy loop's jitter) .. 10 s


class LoopLag:
    """The tick task (:meth:`run`) and what it measured."""

    def __init__(self, interval: float = INTERVAL) -> None:
        self.interval = interval
        self.histogram = Histogram(LAG_BUCKETS)
        self.max = 0.0

    async def run(self) -> None:
        """Tick until cancelled, recording each tick's lateness."""
        clock = time.monotonic
        while True:
            due = clock() + self.interval
            await anyio.sleep(self.interval)
            self.observe(max(0.0, clock() - due))

    def observe(self, lag: float) -> None:
        self.histogram.observe(lag)
        if lag > self.max:
            self.max = lag

    def quantile_bound(self, q: float) -> float:
        """An upper bound of the ``q`` quantile of the lags seen: the bound of the bucket it falls in
        (the largest lag seen, for the open last bucket)."""
        h = self.histogram
        if not h.count:
            return 0.0
        want = q * h.count
        seen = 0
        for bound, n in zip(h.bounds, h.counts, strict=False):
            seen += n
            if seen >= want:
                return min(bound, self.max)
        return self.max

    def reset(self) -> None:
        """CONFIG RESETSTAT: start counting again."""
        self.histogram = Histogram(LAG_BUCKETS)
        self.max = 0.0

    def status(self) -> dict[str, float | int]:
        """INFO's figures, in milliseconds."""
        return {"memd_loop_lag_max_ms": round(self.max * 1000, 3),
                "memd_loop_lag_p99_ms": round(self.quantile_bound(0.99) * 1000, 3),
                "memd_loop_lag_ticks": self.histogram.count}


__all__ = ["INTERVAL", "LAG_BUCKETS", "LoopLag"]
