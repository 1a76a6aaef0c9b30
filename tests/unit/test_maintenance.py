"""The maintenance scheduler and compaction, in-process (the daemon wiring: integration tests)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from memd.config import CompactionConfig
from memd.engine.engine import Engine
from memd.maintenance.compaction import run_compaction
from memd.maintenance.scheduler import Maintenance, trigger_for

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    async with Engine(str(tmp_path), clock=Clock(), flush_max_age=3600) as e:
        yield e


# ---- scheduler -----------------------------------------------------------------------------

def test_triggers() -> None:
    assert trigger_for("") is None
    assert trigger_for("every 2h").interval.total_seconds() == 7200  # type: ignore[union-attr]
    assert "cron" in type(trigger_for("0 3 * * *")).__name__.lower()


async def test_jobs_run_on_schedule_fail_retry_and_report() -> None:
    calls: list[str] = []

    async def flaky() -> dict[str, Any]:
        calls.append("flaky")
        if len(calls) == 1:
            raise RuntimeError("disk on fire")
        return {"n": len(calls)}

    m = Maintenance()
    m.add("flaky", flaky, "every 0.05s")
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await tg.start(m.run)
            while len(calls) < 3:
                await anyio.sleep(0.02)
            status = m.status()
            m.reschedule("flaky", "")
            stopped_at = len(calls)
            await anyio.sleep(0.2)
            assert len(calls) <= stopped_at + 1  # at most one trigger already in flight
            tg.cancel_scope.cancel()
    assert status["flaky_failures"] == 1 and status["flaky_runs"] >= 3 and status["flaky_last_ok"] == 1
    assert status["flaky_schedule"] == "every 0.05s" and status["flaky_next_run"]
    assert m.status()["flaky_schedule"] == "off" and m.status()["flaky_next_run"] == ""


async def test_run_now_waits_for_the_running_instance_then_runs_afresh() -> None:
    started = anyio.Event()
    release = anyio.Event()
    runs: list[int] = []

    async def slow() -> dict[str, Any]:
        runs.append(len(runs))
        started.set()
        await release.wait()
        return {"run": runs[-1]}

    m = Maintenance()
    m.add("slow", slow, "")
    results: list[dict[str, Any]] = []
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: _append(results, m.run_now("slow")))
            await started.wait()
            tg.start_soon(lambda: _append(results, m.run_now("slow")))
            await anyio.sleep(0.05)
            assert m.status()["slow_running"] == 1 and len(runs) == 1  # one instance at a time
            release.set()
    assert results == [{"run": 0}, {"run": 1}]


async def _append(out: list[dict[str, Any]], coro: Any) -> None:
    out.append(await coro)


async def test_run_now_raises_the_jobs_error() -> None:
    async def broken() -> dict[str, Any]:
        raise OSError("no space left on device")

    m = Maintenance()
    m.add("broken", broken, "")
    with pytest.raises(OSError, match="no space"):
        await m.run_now("broken")
    assert m.status()["broken_last_result"] == "OSError: no space left on device"


# ---- compaction ----------------------------------------------------------------------------

async def test_compaction_shrinks_a_store_of_expired_and_overwritten_data(engine: Engine) -> None:
    ks, mem, clock = engine.keyspace, engine.memories, engine.clock
    mem.history_versions = 2
    blob = b"x" * 1000
    soon = int(clock() * 1000) + 1000
    for i in range(3000):
        ks.set(b"tmp%d" % i, blob, expires_at=soon)
    for i in range(300):
        ks.set(b"keep%d" % i, b"v")
        for version in range(6):  # 5 archived versions each; retention keeps 2
            mem.put("ns", f"m{i}", json.dumps({"text": "y" * 500, "v": version}))
    for i in range(200):
        mem.put("ttl", f"t{i}", json.dumps({"text": "short lived"}), ttl_ms=1000)
    await engine.flush()
    clock.now += 5  # type: ignore[attr-defined]
    before = engine.store.disk_bytes()
    result = await run_compaction(engine, CompactionConfig(wal_truncate_bytes=0))
    assert result["expired_keys"] == 3000 and result["expired_memories"] == 200
    assert result["history_pruned"] == 300 * 3
    assert result["checkpoint"] == "truncate"
    assert result["bytes_after"] < before / 2, result
    assert ks.dbsize() == 300 and ks.get(b"keep7") == b"v"
    assert [h.version for h in mem.history("ns", "m7")] == [5, 4]
    # expired memories were archived as versions that ended at their expiry
    assert [(h.version, h.deleted) for h in mem.history("ttl", "t1")] == [(1, False)]
    assert await mem.search("", "short", [], 10, 0) == []
    await engine.store.execute("INSERT INTO mem_fts (mem_fts) VALUES ('integrity-check')")


async def test_compaction_skips_items_still_in_the_buffer(engine: Engine) -> None:
    ks, clock = engine.keyspace, engine.clock
    ks.hset(b"h", [(b"a", b"1")])
    ks.expire_at(b"h", int(clock() * 1000) + 1000)
    await engine.flush()
    ks.hset(b"h", [(b"b", b"2")])  # a delta over the flushed hash, made before it expired
    clock.now += 5  # type: ignore[attr-defined]
    result = await run_compaction(engine, CompactionConfig())
    assert result["expired_keys"] == 0  # buffered: its buffered state wins, the next run sees it
    await engine.flush()
    assert (await run_compaction(engine, CompactionConfig()))["expired_keys"] == 1
    orphans = await engine.store.execute("SELECT count(*) FROM elems WHERE (db, key) NOT IN (SELECT db, key FROM keys)")
    assert orphans == [(0,)] and ks.dbsize() == 0


async def test_versions_are_never_reused_after_compaction(engine: Engine) -> None:
    mem, clock = engine.memories, engine.clock
    mem.history_max_age_ms = 10_000
    mem.history_versions = 0  # not even history remembers the versions
    mem.put("ns", "deleted", "{}")
    mem.delete("ns", "deleted")
    mem.put("ns", "expired", "{}", ttl_ms=1000)
    mem.put("ns", "expired", "{}", ttl_ms=1000)
    await engine.flush()
    clock.now += 60  # type: ignore[attr-defined]  # far past the expiry and the history retention
    result = await run_compaction(engine, CompactionConfig())
    assert result["expired_memories"] == 1 and result["history_pruned"] == 3  # incl. the one just archived
    assert await engine.store.execute("SELECT count(*) FROM mem_history") == [(0,)]
    assert await engine.store.execute("SELECT key, version FROM mem_items WHERE value IS NULL ORDER BY key") == [
        ("deleted", 1), ("expired", 2)]  # value-less tombstones hold the count
    assert mem.put("ns", "deleted", "{}") == 2 and mem.put("ns", "expired", "{}") == 3


async def test_a_run_now_whose_caller_goes_away_still_finishes_inside_the_scheduler() -> None:
    release = anyio.Event()
    finished: list[str] = []

    async def slow() -> dict[str, Any]:
        await release.wait()
        finished.append("done")
        return {}

    m = Maintenance()
    m.add("slow", slow, "")
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await tg.start(m.run)
            with anyio.move_on_after(0.05):  # the client hangs up while the job runs
                await m.run_now("slow")
            assert m.status()["slow_running"] == 1
            release.set()
            while not finished:
                await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
    assert m.status()["slow_runs"] == 1 and m.status()["slow_last_ok"] == 1
