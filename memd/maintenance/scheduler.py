"""The maintenance scheduler: APScheduler decides *when*, anyio runs the jobs.

APScheduler 3 (``AsyncIOScheduler`` on the daemon's loop) fires triggers —
an interval (``"every 30m"``) or a cron line — with missed runs coalesced.
Its job function only posts the job's name on a memory stream: APScheduler's
shutdown cancels running job tasks straight through anyio shields, so the
work runs in tasks of our own task group instead, each job under its own
lock (one instance at a time; a trigger that finds the job running is
dropped, which is what coalescing means). A failed run is logged with its
error and simply runs again at its next trigger. ``MEMD.COMPACT`` and
``MEMD.BACKUP`` call :meth:`Maintenance.run_now`, which waits for a running
instance and then runs a fresh one, so the reply reflects a run that started
after the request.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio
import anyio.abc
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from memd.config import schedule_seconds

log = logging.getLogger("memd.maintenance")

JobFn = Callable[[], Awaitable[dict[str, Any]]]


def trigger_for(schedule: str) -> BaseTrigger | None:
    """The APScheduler trigger of a validated schedule string ("" = none)."""
    if not schedule:
        return None
    seconds = schedule_seconds(schedule)
    if seconds is not None:
        return IntervalTrigger(seconds=seconds, timezone=UTC)
    return CronTrigger.from_crontab(schedule, timezone=UTC)


@dataclass(eq=False)
class Job:
    """One maintenance job and what INFO shows about it."""

    name: str
    fn: JobFn
    schedule: str
    quiet: bool = False  # frequent jobs (the watchdog) log failures only
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    runs: int = 0
    failures: int = 0
    last_start: float = 0.0
    last_seconds: float = 0.0
    last_ok: bool | None = None
    last_result: str = ""


class Maintenance:
    """Owns the scheduler and the job workers; the daemon runs :meth:`run` in its task group."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self._scheduler: AsyncIOScheduler | None = None
        self._send: anyio.abc.ObjectSendStream[str] | None = None
        self._tg: anyio.abc.TaskGroup | None = None

    def add(self, name: str, fn: JobFn, schedule: str, *, quiet: bool = False) -> None:
        self.jobs[name] = Job(name, fn, schedule, quiet)
        if self._scheduler is not None:
            self._schedule(self.jobs[name])

    def reschedule(self, name: str, schedule: str) -> None:
        """Live reload: a new schedule string for a job ("" stops its trigger)."""
        job = self.jobs[name]
        job.schedule = schedule
        if self._scheduler is not None:
            self._schedule(job)

    def _schedule(self, job: Job) -> None:
        assert self._scheduler is not None
        if self._scheduler.get_job(job.name) is not None:
            self._scheduler.remove_job(job.name)
        trigger = trigger_for(job.schedule)
        if trigger is not None:
            self._scheduler.add_job(self._fire, trigger, args=[job.name], id=job.name, name=job.name)

    async def _fire(self, name: str) -> None:
        if self._send is not None:
            self._send.send_nowait(name)

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Start the scheduler on this loop and run triggered jobs until cancelled."""
        scheduler = AsyncIOScheduler(timezone=UTC, job_defaults={
            "coalesce": True, "max_instances": 1, "misfire_grace_time": 30})
        send, receive = anyio.create_memory_object_stream[str](math.inf)
        self._scheduler, self._send = scheduler, send
        for job in self.jobs.values():
            self._schedule(job)
        scheduler.start()
        try:
            async with send, receive, anyio.create_task_group() as tg:
                self._tg = tg
                task_status.started()
                async for name in receive:
                    job = self.jobs.get(name)
                    if job is not None and not job.lock.locked():  # running: this trigger coalesces into it
                        tg.start_soon(self._execute, job)
        finally:
            scheduler.shutdown(wait=False)
            self._scheduler = self._send = self._tg = None

    async def run_now(self, name: str) -> dict[str, Any]:
        """Run a job now (after a running instance finishes) and return its result; raises its error.

        While :meth:`run` runs, the job runs in its task group, not in the caller's task: the
        daemon waits for that group before it closes the engine, so a MEMD.COMPACT in flight at
        shutdown finishes against an open store, and a client that hangs up does not cancel it.
        """
        job = self.jobs[name]
        if self._tg is None:
            return await self._run_raising(job)
        done = anyio.Event()
        outcome: list[Any] = []

        async def in_group() -> None:
            try:
                outcome.append(await self._run_raising(job))
            except Exception as exc:  # noqa: BLE001 - handed to the caller below
                outcome.append(exc)
            finally:
                done.set()

        self._tg.start_soon(in_group)
        await done.wait()
        if not outcome:  # cancelled before the job could start: the daemon is stopping
            raise RuntimeError(f"{name} did not run: memd is shutting down")
        if isinstance(outcome[0], Exception):
            raise outcome[0]
        return outcome[0]  # type: ignore[no-any-return]

    async def _run_raising(self, job: Job) -> dict[str, Any]:
        result = await self._execute(job, raise_errors=True)
        assert result is not None
        return result

    async def _execute(self, job: Job, raise_errors: bool = False) -> dict[str, Any] | None:
        async with job.lock:
            job.last_start = time.time()
            t0 = time.perf_counter()
            try:
                with anyio.CancelScope(shield=True):  # a half-done backup or compaction helps nobody
                    result = await job.fn()
            except Exception as exc:  # noqa: BLE001 - logged, shown in INFO, retried at the next trigger
                job.failures += 1
                job.last_ok, job.last_result = False, f"{type(exc).__name__}: {exc}"
                log.error("job_failed job=%s error=%r retry='at its next run'", job.name, job.last_result)
                if raise_errors:
                    raise
                return None
            finally:
                job.runs += 1
                job.last_seconds = time.perf_counter() - t0
            job.last_ok = True
            job.last_result = " ".join(f"{k}={v}" for k, v in result.items())
            if not job.quiet:
                log.info("job_done job=%s seconds=%.3f %s", job.name, job.last_seconds, job.last_result)
            return result

    def next_run(self, name: str) -> datetime | None:
        aps = self._scheduler.get_job(name) if self._scheduler is not None else None
        return aps.next_run_time if aps is not None else None

    def status(self) -> dict[str, Any]:
        """INFO's maintenance section: each job's schedule, last run, duration, result and next run."""
        out: dict[str, Any] = {}
        for name, job in self.jobs.items():
            nxt = self.next_run(name)
            out.update({
                f"{name}_schedule": job.schedule or "off",
                f"{name}_runs": job.runs,
                f"{name}_failures": job.failures,
                f"{name}_running": int(job.lock.locked()),
                f"{name}_last_run": _iso(job.last_start) if job.last_start else "",
                f"{name}_last_seconds": round(job.last_seconds, 3),
                f"{name}_last_ok": "" if job.last_ok is None else int(job.last_ok),
                f"{name}_last_result": job.last_result,
                f"{name}_next_run": nxt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if nxt else "",
            })
        return out


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
