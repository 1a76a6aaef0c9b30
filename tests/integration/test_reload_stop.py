"""Shutdown does not wait for the config watcher.

watchfiles runs its watch in a thread that no cancellation interrupts; it returns when a change
arrives, when its stop event is set, or after ``rust_timeout`` (5 s). On a quiet config directory
(``/etc/memd`` under systemd) a shutdown that only cancelled the reloader therefore waited up to
5 s between ``shutdown_begin`` and ``shutdown_done``. The reloader sets the stop event when it is
cancelled; this checks the cancellation returns well inside one watchfiles timeout.
"""

from __future__ import annotations

import os
import time

import anyio
import pytest

from memd import config as config_mod
from memd.reload import Reloader
from tests.integration.daemon import short_tmpdir

WATCHFILES_TIMEOUT_S = 5.0  # watchfiles' default rust_timeout on Linux


@pytest.mark.timeout(30)
def test_cancelling_the_reloader_stops_its_watcher_thread_at_once() -> None:
    conf_dir = os.path.join(short_tmpdir(), "conf")  # nothing else writes here: the watch stays quiet
    os.makedirs(conf_dir)
    path = os.path.join(conf_dir, "memd.toml")
    with open(path, "w") as f:
        f.write("[flush]\nmax_age_seconds = 5.0\n")
    cfg = config_mod.load(path, {})
    reloader = Reloader(path, {}, lambda: cfg, lambda _cfg, _live: None)

    async def main() -> float:
        async with anyio.create_task_group() as tg:
            await tg.start(reloader.run)
            await anyio.sleep(0.3)  # the watcher thread is inside its 5 s wait
            began = time.monotonic()
            tg.cancel_scope.cancel()
        return time.monotonic() - began

    took = anyio.run(main)
    # without the stop event this is the rest of the watcher's 5 s window (about 4.7 s here)
    assert took < WATCHFILES_TIMEOUT_S / 2, f"cancelling the reloader took {took:.2f} s"
