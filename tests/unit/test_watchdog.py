"""The memory watchdog against a real engine and a fake RSS: states, refusals, limits, cgroup files.

RSS is whatever the test says (a fake process), so every transition is
deterministic; the engine, its flush and its SQLite reader are real.
(A real daemon driven over a small limit: tests/integration/test_watchdog_daemon.py.)
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

from memd.config import WatchdogConfig
from memd.engine.engine import Engine
from memd.errors import OverloadError
from memd.maintenance import watchdog as wd_mod
from memd.maintenance.watchdog import Watchdog, available_memory, cgroup_memory_limit, own_process

pytestmark = pytest.mark.anyio

MiB = 1024 * 1024
SOFT, HARD = 100 * MiB, 200 * MiB
CFG = WatchdogConfig(sample_seconds=1.0, soft_limit=SOFT, hard_limit=HARD)


class FakeProcess:
    """A process whose RSS the test sets."""

    def __init__(self, rss: int) -> None:
        self.rss = rss

    def memory_info(self) -> SimpleNamespace:
        return SimpleNamespace(rss=self.rss)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    async with Engine(str(tmp_path), flush_max_age=3600) as e:  # nothing flushes unless the test says so
        yield e


@pytest.fixture
def proc() -> FakeProcess:
    return FakeProcess(50 * MiB)


@pytest.fixture
def dog(engine: Engine, proc: FakeProcess) -> Watchdog:
    return Watchdog(engine, CFG, process=proc, available=lambda: 1000 * MiB)


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "memd.watchdog" and r.getMessage().split(" ")[0] == name]


def traced_sql(engine: Engine) -> list[str]:
    """Every statement the engine's read connection runs from now on (to see PRAGMA shrink_memory)."""
    seen: list[str] = []
    engine.store.reader.set_trace_callback(seen.append)
    return seen


def during_flush(engine: Engine, monkeypatch: pytest.MonkeyPatch, probe: Callable[[], None]) -> list[int]:
    """Run ``probe`` inside every engine flush (what a client sees while the watchdog waits on it)."""
    calls: list[int] = []
    real: Callable[[], Awaitable[None]] = engine.flush

    async def flush() -> None:
        calls.append(engine.buffered_bytes())
        probe()
        await real()

    monkeypatch.setattr(engine, "flush", flush)
    return calls


# ---- states ---------------------------------------------------------------------------------

async def test_below_soft_limit_nothing_happens(engine: Engine, dog: Watchdog) -> None:
    engine.keyspace.set(b"k", b"v")
    status = await dog.sample()
    assert status["state"] == "ok" and status["episodes"] == 0
    assert engine.buffered_bytes() > 0 and engine.flush_count == 0  # no early flush below the soft limit
    assert engine.write_refusal is None


async def test_soft_limit_flushes_drops_caches_and_logs_once_per_episode(
        engine: Engine, dog: Watchdog, proc: FakeProcess, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.INFO, "memd.watchdog")
    collects: list[int] = []
    monkeypatch.setattr(wd_mod.gc, "collect", lambda *a: collects.append(1) or 0)
    sql = traced_sql(engine)
    proc.rss = 150 * MiB
    engine.keyspace.set(b"a", b"1")
    assert (await dog.sample())["state"] == "soft"
    assert engine.buffered_bytes() == 0 and engine.keyspace.get(b"a") == b"1"  # flushed, still readable
    assert "PRAGMA shrink_memory" in sql and collects == [1]
    assert len(events(caplog, "watchdog_soft_limit")) == 1
    assert engine.write_refusal is None  # soft never refuses

    engine.keyspace.set(b"b", b"2")  # still above soft: flushed again, but no new log line or cache drop
    assert (await dog.sample())["state"] == "soft"
    assert engine.buffered_bytes() == 0
    assert len(events(caplog, "watchdog_soft_limit")) == 1 and collects == [1] and dog.episodes == 1

    proc.rss = 60 * MiB  # the episode ends
    assert (await dog.sample())["state"] == "ok"
    assert len(events(caplog, "watchdog_ok")) == 1
    proc.rss = 150 * MiB  # a new episode logs again
    await dog.sample()
    assert len(events(caplog, "watchdog_soft_limit")) == 2 and dog.episodes == 2 and collects == [1, 1]
    engine.store.reader.set_trace_callback(None)


async def test_hard_limit_refuses_writes_serves_reads_and_resumes_under_soft(
        engine: Engine, dog: Watchdog, proc: FakeProcess, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.INFO, "memd.watchdog")
    engine.keyspace.set(b"k", b"v")
    seen: dict[str, object] = {}

    def probe() -> None:  # a client's view while the watchdog's flush runs
        with pytest.raises(OverloadError) as err:
            engine.check_writable()
        seen["error"] = str(err.value)
        seen["prefix"] = err.value.prefix
        seen["read"] = engine.keyspace.get(b"k")
        proc.rss = 80 * MiB  # the flush released the buffer's memory

    flushes = during_flush(engine, monkeypatch, probe)
    proc.rss = 250 * MiB
    status = await dog.sample()

    assert flushes and flushes[0] > 0
    assert seen["prefix"] == "OOM" and seen["read"] == b"v"
    assert seen["error"] == (
        "memd RSS 250 MiB is above watchdog.hard_limit 200 MiB; writes resume when the write buffer is "
        "flushed or RSS is back under watchdog.soft_limit 100 MiB; reads go on; retry shortly, "
        "or raise watchdog.hard_limit")
    assert status["state"] == "ok" and status["refusals"] == 1 and status["episodes"] == 1
    assert engine.write_refusal is None
    engine.check_writable()  # writes go on
    engine.keyspace.set(b"k2", b"v2")
    assert [r.getMessage().split(" ")[1] for r in events(caplog, "watchdog_writes_resumed")] == \
        ["reason=rss_under_soft_limit"]
    assert events(caplog, "watchdog_refusing_writes")[0].levelno == logging.WARNING


async def test_rss_crossing_hard_during_the_soft_flush_refuses_in_the_same_sample(
        engine: Engine, dog: Watchdog, proc: FakeProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    refusals: list[str | None] = []
    real = engine.flush

    async def flush() -> None:
        refusals.append(engine.write_refusal)
        await real()
        if len(refusals) == 1:  # writes went on while the soft flush ran, and pushed RSS over hard
            engine.keyspace.set(b"during", b"x")
            proc.rss = 250 * MiB
        else:
            proc.rss = 60 * MiB

    monkeypatch.setattr(engine, "flush", flush)
    engine.keyspace.set(b"k", b"v")
    proc.rss = 150 * MiB
    status = await dog.sample()
    assert refusals[0] is None and refusals[1] is not None and len(refusals) == 2
    assert status["state"] == "ok" and status["refusals"] == 1 and engine.write_refusal is None
    assert engine.buffered_bytes() == 0 and engine.keyspace.get(b"during") == b"x"


async def test_empty_buffer_resumes_writes_between_soft_and_hard(
        engine: Engine, dog: Watchdog, proc: FakeProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    engine.keyspace.set(b"k", b"v")
    during_flush(engine, monkeypatch, lambda: setattr(proc, "rss", 150 * MiB))
    proc.rss = 250 * MiB
    assert (await dog.sample())["state"] == "soft"  # RSS did not get under soft, but nothing is left to flush
    assert engine.write_refusal is None and engine.buffered_bytes() == 0


async def test_stuck_above_hard_with_empty_buffer_resumes_writes_and_says_so_once(
        engine: Engine, dog: Watchdog, proc: FakeProcess, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "memd.watchdog")
    proc.rss = 250 * MiB  # and it stays there: CPython keeps the memory
    engine.keyspace.set(b"k", b"v")
    status = await dog.sample()
    assert status["state"] == "stuck" and status["refusals"] == 1
    assert engine.write_refusal is None and engine.buffered_bytes() == 0
    engine.check_writable()
    stuck = events(caplog, "watchdog_stuck")
    assert len(stuck) == 1 and stuck[0].levelno >= logging.ERROR

    engine.keyspace.set(b"k2", b"v2")  # still stuck: no new refusal or log line, but the buffer is kept small
    assert (await dog.sample())["state"] == "stuck"
    assert engine.write_refusal is None and engine.buffered_bytes() == 0
    assert len(events(caplog, "watchdog_stuck")) == 1 and dog.refusals == 1

    proc.rss = 150 * MiB  # under hard again: the stuck condition is over
    assert (await dog.sample())["state"] == "soft"
    proc.rss = 250 * MiB  # a new rise above hard refuses again
    engine.keyspace.set(b"k3", b"v3")
    await dog.sample()
    assert dog.refusals == 2
    assert engine.keyspace.get(b"k") == b"v" and engine.keyspace.get(b"k3") == b"v3"


async def test_failed_flush_keeps_refusing_and_drops_nothing(
        engine: Engine, dog: Watchdog, proc: FakeProcess, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.INFO, "memd.watchdog")
    engine.keyspace.set(b"k", b"v")

    async def broken() -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(engine, "flush", broken)
    proc.rss = 250 * MiB
    assert (await dog.sample())["state"] == "refusing"
    with pytest.raises(OverloadError, match="RSS 250 MiB is above watchdog.hard_limit 200 MiB"):
        engine.check_writable()
    assert engine.keyspace.get(b"k") == b"v" and engine.buffered_bytes() > 0  # acknowledged data kept
    assert len(events(caplog, "watchdog_flush_failed")) == 1

    monkeypatch.undo()  # the disk has room again
    proc.rss = 240 * MiB
    status = await dog.sample()
    assert status["state"] == "stuck" and engine.write_refusal is None  # resumed once the buffer drained
    assert engine.buffered_bytes() == 0 and engine.keyspace.get(b"k") == b"v"
    assert dog.refusals == 1


async def test_refusal_lifted_when_rss_falls_under_soft_even_if_flush_fails(
        engine: Engine, dog: Watchdog, proc: FakeProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    engine.keyspace.set(b"k", b"v")

    async def broken() -> None:
        raise OSError(5, "I/O error")

    monkeypatch.setattr(engine, "flush", broken)
    proc.rss = 250 * MiB
    await dog.sample()
    assert engine.write_refusal is not None
    proc.rss = 90 * MiB
    assert (await dog.sample())["state"] == "ok"
    assert engine.write_refusal is None and engine.buffered_bytes() > 0


async def test_a_refusal_set_by_someone_else_is_left_alone(engine: Engine, dog: Watchdog, proc: FakeProcess) -> None:
    proc.rss = 250 * MiB
    engine.keyspace.set(b"k", b"v")
    await dog.sample()  # refuses, flushes, resumes (stuck)
    engine.write_refusal = "something else"
    proc.rss = 50 * MiB
    await dog.sample()
    assert engine.write_refusal == "something else"


# ---- limits -----------------------------------------------------------------------------------

async def test_shares_resolve_against_available_memory_at_every_sample(engine: Engine, proc: FakeProcess) -> None:
    avail = [1000 * MiB]
    dog = Watchdog(engine, WatchdogConfig(1.0, 0.5, 0.7), process=proc, available=lambda: avail[0])
    assert (dog.soft_bytes, dog.hard_bytes) == (500 * MiB, 700 * MiB)
    avail[0] = 2000 * MiB  # e.g. systemctl set-property MemoryMax=
    status = await dog.sample()
    assert (status["soft_limit_bytes"], status["hard_limit_bytes"], status["available_bytes"]) == \
        (1000 * MiB, 1400 * MiB, 2000 * MiB)

    proc.rss = 1500 * MiB
    engine.keyspace.set(b"k", b"v")
    seen: list[str] = []
    real = engine.flush

    async def flush() -> None:
        seen.append(engine.write_refusal or "")
        await real()

    engine.flush = flush  # type: ignore[method-assign]
    await dog.sample()
    assert seen == ["memd RSS 1500 MiB is above watchdog.hard_limit 1400 MiB (70% of 2000 MiB available); "
                    "writes resume when the write buffer is flushed or RSS is back under watchdog.soft_limit "
                    "1000 MiB (50% of 2000 MiB available); reads go on; retry shortly, "
                    "or raise watchdog.hard_limit"]


async def test_mixed_limits_that_cross_use_the_hard_limit_for_both(
        engine: Engine, proc: FakeProcess, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "memd.watchdog")
    dog = Watchdog(engine, WatchdogConfig(1.0, 0.9, 100 * MiB), process=proc, available=lambda: 1000 * MiB)
    await dog.sample()
    await dog.sample()
    assert dog.soft_bytes == dog.hard_bytes == 100 * MiB
    assert len(events(caplog, "watchdog_limits_crossed")) == 1  # once, not per sample


async def test_unknown_available_memory_disables_share_limits_only(
        engine: Engine, proc: FakeProcess, caplog: pytest.LogCaptureFixture) -> None:
    def fails() -> int:
        raise OSError("cannot read the host's memory size")

    dog = Watchdog(engine, WatchdogConfig(1.0, 0.5, 200 * MiB), process=proc, available=fails)
    proc.rss = 150 * MiB
    assert (await dog.sample())["state"] == "ok"  # the share cannot be resolved: no soft limit below hard
    proc.rss = 250 * MiB
    engine.keyspace.set(b"k", b"v")
    assert (await dog.sample())["state"] == "stuck"  # the size limit is still enforced
    assert len(events(caplog, "watchdog_available_unknown")) == 1


async def test_configure_applies_new_limits_at_the_next_sample(
        engine: Engine, dog: Watchdog, proc: FakeProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken() -> None:
        raise OSError(5, "I/O error")

    monkeypatch.setattr(engine, "flush", broken)
    engine.keyspace.set(b"k", b"v")
    proc.rss = 250 * MiB
    await dog.sample()
    assert dog.state == "refusing"
    dog.configure(WatchdogConfig(0.5, 300 * MiB, 400 * MiB))
    assert (dog.soft_bytes, dog.hard_bytes, dog.cfg.sample_seconds) == (300 * MiB, 400 * MiB, 0.5)
    assert (await dog.sample())["state"] == "ok" and engine.write_refusal is None


async def test_status_has_the_info_figures_before_any_sample(engine: Engine, dog: Watchdog) -> None:
    assert dog.status() == {
        "state": "ok", "rss_bytes": 50 * MiB, "vector_bytes": 0, "cache_shed_bytes": 0, "soft_limit_bytes": SOFT, "hard_limit_bytes": HARD,
        "available_bytes": 1000 * MiB, "episodes": 0, "refusals": 0, "samples": 0, "sample_seconds": 1.0,
    }


async def test_real_process_by_default(engine: Engine) -> None:
    dog = Watchdog(engine, WatchdogConfig(1.0, 0.5, 0.7))
    status = await dog.sample()
    assert status["rss_bytes"] == dog.rss > 0 and status["available_bytes"] > 0
    assert own_process() is own_process()


# ---- how much memory memd may use: cgroup files -----------------------------------------------

def fake_root(tmp_path: Path, cgroup: str, files: dict[str, str]) -> str:
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/cgroup").write_text(cgroup)
    for rel, text in files.items():
        f = tmp_path / "sys/fs/cgroup" / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text + "\n")
    return str(tmp_path)


def test_cgroup_v2_memory_max_of_the_process_cgroup(tmp_path: Path) -> None:
    root = fake_root(tmp_path, "0::/system.slice/memd.service\n",
                     {"system.slice/memd.service/memory.max": "536870912"})
    assert cgroup_memory_limit(root) == 512 * MiB


def test_cgroup_v2_max_means_unlimited_but_a_parent_limit_binds(tmp_path: Path) -> None:
    root = fake_root(tmp_path, "0::/user.slice/user-1000.slice/session-3.scope\n",
                     {"user.slice/user-1000.slice/session-3.scope/memory.max": "max",
                      "user.slice/user-1000.slice/memory.max": "max",
                      "user.slice/memory.max": "1073741824"})
    assert cgroup_memory_limit(root) == 1024 * MiB


def test_cgroup_v2_without_any_limit(tmp_path: Path) -> None:
    root = fake_root(tmp_path, "0::/a\n", {"a/memory.max": "max"})
    assert cgroup_memory_limit(root) is None


def test_cgroup_v1_memory_controller(tmp_path: Path) -> None:
    root = fake_root(tmp_path, "9:name=systemd:/\n4:memory:/docker/abc\n0::/\n",
                     {"memory/docker/abc/memory.limit_in_bytes": "268435456",
                      "memory/memory.limit_in_bytes": "9223372036854771712"})
    assert cgroup_memory_limit(root) == 256 * MiB


def test_cgroup_v1_in_a_container_whose_path_is_not_mounted(tmp_path: Path) -> None:
    """Inside a container /proc/self/cgroup names a host path; the mount's root is the container's cgroup."""
    root = fake_root(tmp_path, "4:memory:/process_api/9caa\n", {"memory/memory.limit_in_bytes": "2147483648"})
    assert cgroup_memory_limit(root) == 2048 * MiB


def test_cgroup_v1_unlimited_is_no_limit(tmp_path: Path) -> None:
    root = fake_root(tmp_path, "4:memory:/x\n", {"memory/x/memory.limit_in_bytes": "9223372036854771712"})
    assert cgroup_memory_limit(root) is None


def test_no_cgroup_files_at_all(tmp_path: Path) -> None:
    assert cgroup_memory_limit(str(tmp_path)) is None


def test_available_memory_is_the_cgroup_limit_capped_by_the_host(tmp_path: Path) -> None:
    host = psutil.virtual_memory().total
    small = fake_root(tmp_path / "s", "0::/m\n", {"m/memory.max": str(64 * MiB)})
    assert available_memory(small) == 64 * MiB
    huge = fake_root(tmp_path / "h", "0::/m\n", {"m/memory.max": str(host * 4)})
    assert available_memory(huge) == host
    assert available_memory(str(tmp_path / "none")) == host


def test_available_memory_without_host_figures_uses_the_cgroup(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    def denied() -> None:
        raise PermissionError(13, "Permission denied: '/proc/meminfo'")  # systemd ProcSubset=pid

    monkeypatch.setattr(wd_mod.psutil, "virtual_memory", denied)
    root = fake_root(tmp_path, "0::/m\n", {"m/memory.max": str(64 * MiB)})
    assert available_memory(root) == 64 * MiB
    with pytest.raises(OSError, match="give watchdog limits as sizes"):
        available_memory(str(tmp_path / "none"))


async def test_status_counts_the_vectors_in_memory(engine: Engine, dog: Watchdog) -> None:
    """Vectors are memory a flush cannot release: the watchdog's figures show them, buffered or flushed."""
    engine.memories.create_index("docs", 4, "cosine", '["$"]')
    engine.memories.put("docs", "k", "{}", vectors=(("$", b"\x00\x00\x80\x3f" * 4),))
    assert dog.status()["vector_bytes"] == 16
    await engine.flush()
    assert dog.status()["vector_bytes"] >= 16


async def test_sheds_the_read_cache_first_by_its_own_bytes_and_restores_it_when_calm(
        engine: Engine, dog: Watchdog, proc: FakeProcess) -> None:
    ks = engine.keyspace
    for i in range(3000):
        ks.set(b"key:%d" % i, b"x" * 400)
    await engine.flush()  # the flush fills the cache with what it wrote
    for i in range(3000):
        assert ks.get(b"key:%d" % i) == b"x" * 400
    cache = engine.store.readcache
    before = cache.bytes
    assert before > 1 << 20
    proc.rss = SOFT + MiB  # (RSS does not move: the watchdog judges shedding by the cache's own bytes)
    assert (await dog.sample())["state"] == "soft"
    assert cache.bytes <= before // 2 and cache.limit <= before // 2
    assert dog.status()["cache_shed_bytes"] == before - cache.bytes
    await dog.sample()
    assert cache.bytes <= before // 4  # halved again at each sample above the soft limit
    assert ks.get(b"key:1") == b"x" * 400  # reads go on (from SQLite)
    proc.rss = SOFT - MiB
    assert (await dog.sample())["state"] == "ok"
    assert cache.limit == cache.max_bytes  # the configured bound again
