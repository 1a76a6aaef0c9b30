"""arq, a job queue built on plain Redis, processes jobs through memd across a SIGKILL of memd.

arq keeps its queue in a sorted set (ZADD, ZRANGEBYSCORE), each job in a key set with PSETEX,
claims a job with WATCH / MULTI / SET NX ("in progress" keys with a TTL) and stores results with
SETEX: every command it sends is one memd has, and nothing is changed for memd but the socket.

The scenario is an agent's: jobs are enqueued and acknowledged under ``fsync=always``, a worker
runs part of them, memd is killed with SIGKILL mid-way (jobs claimed, results half written),
restarted on the same data, and a new worker drains the queue. Checked: every job acknowledged
before the kill ran to completion and its result is readable through arq's own API; a job runs
again only if memd died before its completion was durable (arq's at-least-once: each job counts
its runs in a key of its own, so the test sees exactly which ran twice, and only a few may).
"""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import Iterator
from typing import Any

import pytest
from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from arq.jobs import Job, JobStatus
from arq.worker import Worker

from tests.integration.daemon import Daemon

pytestmark = [
    pytest.mark.timeout(120),
    # arq 0.28 closes its pool with redis-py's deprecated close()
    pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning"),
    # the first worker's connections die with memd: asyncio reports them unclosed when the loop ends
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

JOBS = 60


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    d = Daemon(fsync="always").start()
    try:
        yield d
    finally:
        d.cleanup()


async def work(ctx: dict[str, Any], n: int) -> int:
    """A job: counts its own runs (a duplicate shows), takes a little time, returns a value derived from n."""
    await ctx["redis"].incr(f"runs:{n}")
    await asyncio.sleep(0.01)
    return n * n


def settings(d: Daemon) -> RedisSettings:
    return RedisSettings(unix_socket_path=d.socket, conn_timeout=2, conn_retries=0)


def worker(d: Daemon, *, burst: bool) -> Worker:
    return Worker(functions=[work], redis_settings=settings(d), burst=burst, poll_delay=0.02, max_jobs=4,
                  job_timeout=2, keep_result=3600, handle_signals=False)


async def scenario(d: Daemon) -> None:
    pool: ArqRedis = await create_pool(settings(d))
    ids = []
    for n in range(JOBS):
        job = await pool.enqueue_job("work", n, _job_id=f"job-{n:03d}")
        assert job is not None
        ids.append(job.job_id)
    await pool.aclose()

    # a worker runs part of the queue; memd dies under it
    first = worker(d, burst=False)
    task = asyncio.create_task(first.async_run())
    probe: ArqRedis = await create_pool(settings(d))
    for _ in range(500):
        done = sum([await probe.exists(f"runs:{n}") for n in range(JOBS)])
        if done >= JOBS // 3:
            break
        await asyncio.sleep(0.01)
    await probe.aclose()
    d.stop(signal.SIGKILL)
    assert JOBS // 3 <= done < JOBS, f"{done} jobs had run at the kill: it must come mid-way"
    await asyncio.sleep(0.2)
    task.cancel()
    try:
        await task
    except (asyncio.CancelledError, Exception):  # noqa: BLE001 - its connection died with memd: that is the point
        pass
    try:
        await first.close()
    except Exception:  # noqa: BLE001 - closing connections to a dead server may fail
        pass

    # memd restarts on the same data; a new worker drains the queue (jobs claimed by the dead worker
    # run again once their in-progress keys expire: job_timeout + arq's margin)
    d.start()
    second = worker(d, burst=True)
    await asyncio.wait_for(second.async_run(), 60)
    await second.close()

    pool = await create_pool(settings(d))
    try:
        twice = []
        for n, job_id in enumerate(ids):
            job = Job(job_id, pool)
            assert await job.status() == JobStatus.complete, job_id
            info = await job.result_info()
            assert info is not None and info.success and info.result == n * n, (job_id, info)
            runs = int(await pool.get(f"runs:{n}") or 0)
            assert runs >= 1, job_id
            if runs > 1:
                twice.append(job_id)
        # only jobs in flight at the kill (at most max_jobs claimed at once) may run again
        assert len(twice) <= 4, twice
        assert await pool.zcard("arq:queue") == 0
    finally:
        await pool.aclose()


def test_arq_jobs_survive_a_sigkill_of_memd(daemon: Daemon) -> None:
    asyncio.run(scenario(daemon))
    gc.collect()  # the dead worker's sockets are reclaimed here, under this test's warning filters
