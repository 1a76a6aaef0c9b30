"""RQ, a job queue on plain Redis, processes jobs through memd across a SIGKILL of memd.

RQ 3 enqueues with a Lua script and pipelines, dequeues with BLMOVE into an intermediate list
(a reliable queue), keeps registries in sorted sets, and writes each result to a stream
(XADD, read back with XREVRANGE): blocking commands, scripting and streams, all against memd,
with RQ's own worker processes (``rq worker``) and nothing changed for memd but the URL.

The scenario is an agent's: jobs are enqueued (acknowledged under ``fsync=always``), memd is
killed with SIGKILL and restarted, a worker drains the queue; then a worker is running when
memd is killed again mid-queue, and a new worker finishes what is left. Checked through RQ's
API: every acknowledged job ran to completion with its result readable, except a job in flight
at the kill, which RQ itself may finish, retry or declare abandoned; and none ran twice except
that one (each job counts its runs in a key of its own).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue, Retry
from rq.job import Job, JobStatus

from tests.integration.daemon import Daemon
from tests.integration.rq_jobs import square

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[2]
JOBS = 30


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    d = Daemon(fsync="always").start()
    try:
        yield d
    finally:
        d.cleanup()


def worker(d: Daemon, *, burst: bool) -> subprocess.Popen[bytes]:
    """``rq worker`` on memd's socket, in a process of its own (RQ forks a work horse per job)."""
    args = [sys.executable, "-c", "from rq.cli import main; main()", "worker", "--url", f"unix://{d.socket}",
            "--worker-ttl", "5", "--logging_level", "WARNING"]
    if burst:
        args.append("--burst")
    return subprocess.Popen([*args, "default"], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def enqueue(d: Daemon, first: int) -> list[str]:
    r = Redis(unix_socket_path=d.socket)
    q = Queue("default", connection=r)
    ids = [q.enqueue(square, n, job_id=f"job-{n:03d}", retry=Retry(max=1), job_timeout=5).id
           for n in range(first, first + JOBS)]
    r.close()
    return ids


def drain(d: Daemon) -> None:
    w = worker(d, burst=True)
    _, err = w.communicate(timeout=120)
    assert w.returncode == 0, err.decode(errors="replace")[-2000:]


def outcomes(d: Daemon, ids: list[str]) -> tuple[list[str], list[str]]:
    """(job ids not finished with the right result, job ids that ran more than once)."""
    r = Redis(unix_socket_path=d.socket)
    try:
        unfinished, twice = [], []
        for job_id in ids:
            job = Job.fetch(job_id, connection=r)
            n = int(job_id.split("-")[1])
            if job.get_status() != JobStatus.FINISHED or job.return_value() != n * n:
                unfinished.append(job_id)
            if int(r.get(f"runs:{job_id}") or 0) > 1:
                twice.append(job_id)
        return unfinished, twice
    finally:
        r.close()


def test_rq_jobs_survive_sigkills_of_memd(daemon: Daemon) -> None:
    # acknowledged, then memd dies before any worker ran: every job is still there
    ids = enqueue(daemon, 0)
    daemon.stop(signal.SIGKILL)
    daemon.start()
    drain(daemon)
    assert outcomes(daemon, ids) == ([], [])

    # memd dies under a running worker, mid-queue
    ids = enqueue(daemon, JOBS)
    w = worker(daemon, burst=False)
    r = Redis(unix_socket_path=daemon.socket)
    deadline = time.monotonic() + 60
    while (started := sum(1 for i in ids if r.exists(f"runs:{i}"))) < JOBS // 3:
        assert time.monotonic() < deadline, "the worker does not run jobs"
        time.sleep(0.02)
    r.close()
    daemon.stop(signal.SIGKILL)
    assert started < JOBS, "the kill must come mid-queue"
    w.kill()  # its connection died with memd; a new worker takes over, as after a host reboot
    w.communicate(timeout=10)
    daemon.start()
    drain(daemon)
    unfinished, twice = outcomes(daemon, ids)
    # one job at most was in flight (the worker runs one at a time): only it may be unfinished or have run twice
    assert len(set(unfinished) | set(twice)) <= 1, (unfinished, twice)
