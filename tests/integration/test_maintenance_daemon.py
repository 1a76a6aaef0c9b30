"""Maintenance through a real daemon: MEMD.COMPACT, INFO maintenance, scheduled runs."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
import redis

from tests.integration.daemon import Daemon, short_tmpdir


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    base = short_tmpdir()
    conf = os.path.join(base, "memd.toml")
    with open(conf, "w") as f:
        f.write('[compaction]\nschedule = "every 1s"\n[backup]\nschedule = ""\n[watchdog]\nsample_seconds = 0.2\n')
    d = Daemon(config=conf, base=base).start()
    yield d
    d.cleanup()


def test_compact_now_and_on_schedule(daemon: Daemon) -> None:
    c = redis.Redis(unix_socket_path=daemon.socket, decode_responses=True, protocol=3)
    for i in range(500):
        c.set(f"k{i}", "x" * 200, px=50)
    c.execute_command("MEM.PUT", "ns", "gone", '{"t": "soon"}', "TTL", "0.05")
    c.execute_command("MEMD.FLUSH")
    time.sleep(0.1)
    result = c.execute_command("MEMD.COMPACT")
    assert result["expired_keys"] + result["expired_memories"] >= 1  # a scheduled run may have come first
    assert {"expired_memories", "history_pruned", "checkpoint", "free_pages", "bytes_returned"} <= set(result)
    deadline = time.monotonic() + 10
    while int(c.info("maintenance")["compact_runs"]) < 3:  # the 1 s schedule runs too
        assert time.monotonic() < deadline, c.info("maintenance")
        time.sleep(0.1)
    info = c.info("maintenance")
    assert info["compact_last_ok"] == 1 and info["compact_schedule"] == "every 1s" and info["compact_next_run"]
    assert info["backup_schedule"] == "off" and info["watchdog_runs"] >= 1
    assert c.dbsize() == 0 and c.execute_command("MEM.GET", "ns", "gone") is None
