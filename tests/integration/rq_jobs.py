"""Job functions for tests/integration/test_library_rq.py: RQ's worker imports them by name."""

from __future__ import annotations

import time

from rq import get_current_job


def square(n: int) -> int:
    """Counts its own runs (a second run of a job shows) and takes a moment, so a kill lands mid-queue."""
    job = get_current_job()
    assert job is not None
    job.connection.incr(f"runs:{job.id}")
    time.sleep(0.02)
    return n * n
