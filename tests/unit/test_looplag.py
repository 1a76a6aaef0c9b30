"""The event-loop lag monitor: a stall of the loop shows as a late tick, in INFO and MEMD.METRICS."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest

from memd.commands import Context, load_all
from memd.commands.connection import execute
from memd.engine.engine import Engine
from memd.looplag import LoopLag

pytestmark = pytest.mark.anyio
load_all()


async def test_a_blocked_loop_is_seen_as_a_late_tick() -> None:
    lag = LoopLag(interval=0.01)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lag.run)
        await anyio.sleep(0.05)
        quiet = lag.max
        time.sleep(0.2)  # the loop's thread held: nothing else runs meanwhile
        await anyio.sleep(0.05)
        tg.cancel_scope.cancel()
    assert quiet < 0.1
    assert 0.15 <= lag.max < 2.0
    assert lag.quantile_bound(1.0) == lag.max
    assert lag.quantile_bound(0.5) < 0.1  # most ticks were on time
    lag.reset()
    assert lag.max == 0.0 and lag.histogram.count == 0 and lag.quantile_bound(0.99) == 0.0


async def test_info_and_metrics_report_it(tmp_path: Path) -> None:
    async with Engine(str(tmp_path / "data")) as engine:
        ctx = Context(engine=engine)
        engine.loop_lag.observe(0.3)
        info = execute(ctx, [b"INFO", b"stats"]).decode()
        assert "memd_loop_lag_max_ms:300.0" in info and "memd_loop_lag_ticks:" in info
        metrics = execute(ctx, [b"MEMD.METRICS"]).decode()
        assert 'memd_loop_lag_seconds_bucket{le="0.5"}' in metrics
        assert "memd_loop_lag_seconds_count" in metrics
        execute(ctx, [b"CONFIG", b"RESETSTAT"])
        assert "memd_loop_lag_max_ms:0.0" in execute(ctx, [b"INFO", b"stats"]).decode()
