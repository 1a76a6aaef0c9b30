"""A fixed-bucket latency histogram: the one primitive behind memd's ``*_seconds`` histograms.

Why not prometheus_client's: the engine records into it on the event-loop
thread on every fsync and flush, so it must be a few attribute updates with
no lock and no registry, and the engine must not depend on an exporter.
Why per-bucket (not cumulative) counts: ``observe`` then touches one slot;
:meth:`Histogram.cumulative` does the running sum only when someone reads
the figures (``MEMD.METRICS``, the textfile job).

It imports nothing from memd, so every layer (the WAL included) may use it.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Sequence


def latency_buckets(low: float, high: float) -> tuple[float, ...]:
    """Upper bounds 1-2.5-5 per decade from ``low`` to ``high`` (both included when on the series).

    E.g. ``latency_buckets(0.001, 1)`` -> (0.001, 0.0025, 0.005, 0.01, ..., 0.5, 1.0): a few
    buckets per decade resolve both a healthy SSD's sub-millisecond fsync and a stalled disk's seconds.
    """
    if not 0 < low < high:
        raise ValueError(f"need 0 < low < high (got {low}, {high})")
    bounds: list[float] = []
    decade = 10.0 ** math.floor(math.log10(low))
    while decade <= high * (1 + 1e-9):
        for step in (1.0, 2.5, 5.0):
            bound = float(f"{decade * step:.6g}")  # 0.0025, not 0.0025000000000000005
            if low * (1 - 1e-9) <= bound <= high * (1 + 1e-9):
                bounds.append(bound)
        decade *= 10
    return tuple(bounds)


class Histogram:
    """Counts of observations per bucket, their sum and their number.

    ``bounds`` are the finite upper bounds (Prometheus ``le``), strictly
    increasing; an implicit last bucket takes everything above them (+Inf).
    Not thread-safe: observe from one thread (memd: the event loop).
    """

    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds: Iterable[float]) -> None:
        self.bounds: tuple[float, ...] = tuple(float(b) for b in bounds)
        if not self.bounds or any(not math.isfinite(b) for b in self.bounds) or any(
                a >= b for a, b in zip(self.bounds, self.bounds[1:], strict=False)):
            raise ValueError(f"bucket bounds must be finite and strictly increasing (got {self.bounds})")
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        """Record one observation; ``le`` is inclusive, so a value equal to a bound counts in it."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations <= bound) for each bucket, ending with (+inf, count)."""
        out: list[tuple[float, int]] = []
        running = 0
        for bound, n in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out

    @classmethod
    def of(cls, bounds: Sequence[float], values: Iterable[float]) -> Histogram:
        """A histogram already holding ``values`` (tests and examples build figures this way)."""
        hist = cls(bounds)
        for value in values:
            hist.observe(value)
        return hist


__all__ = ["Histogram", "latency_buckets"]
