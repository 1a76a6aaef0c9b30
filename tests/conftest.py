"""Shared fixtures: the async backend and a controllable clock; hypothesis without its deadline."""

from __future__ import annotations

import pytest
from hypothesis import settings

# Hypothesis fails an example that takes over 200 ms by default: on a loaded 2-core machine that is
# a flake, not a finding (speed is measured in benchmarks/). pytest-timeout still bounds every test.
settings.register_profile("memd", deadline=None)
settings.load_profile("memd")


@pytest.fixture
def anyio_backend() -> str:
    """APScheduler 3 is asyncio-only: every ``@pytest.mark.anyio`` test runs on asyncio."""
    return "asyncio"


class FakeClock:
    """An engine clock (``clock=fake``) that moves only when told.

    Start and steps are whole multiples of 1/8 s, so ``int(now * 1000)`` is exact.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        assert float(seconds * 8).is_integer(), "steps of 1/8 s keep milliseconds exact"
        self.now += seconds


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()
