"""The memory-growth watchdog: keep memd's RSS from taking the host down (issue 5).

A memd that runs for months must not be the process the kernel's OOM killer
picks. What grows with load is the write buffer (memtables waiting for their
flush), so that is what the watchdog acts on; it samples RSS with psutil on
the scheduler's interval and moves between four states:

``ok``
    RSS is at or under the soft limit.
``soft``
    RSS is above the soft limit: every sample first halves the read cache of
    stored rows (it is only a copy of SQLite; judged by the bytes the cache
    counts, since RSS alone cannot tell that shedding worked: CPython keeps
    freed memory), then flushes what is buffered; the first sample of an
    episode also drops caches (the read connection's SQLite
    page cache, Python's cyclic garbage) and logs one line. Writes go on
    during that flush; if RSS is above the hard limit once it is done, the
    refusal starts in the same sample rather than one interval later.
``refusing``
    RSS went above the hard limit: writes get ``-OOM <why, and what to do>``
    (``engine.write_refusal``), reads go on, the buffer is flushed. Writes
    resume as soon as RSS is back under the soft limit or the buffer is
    empty, which is normally right after that flush: refusing writes only
    ever helps while there is buffered data the flush can release.
``stuck``
    The buffer is empty yet RSS stays above the hard limit. CPython rarely
    returns freed memory to the OS, so waiting for RSS to fall could refuse
    writes forever; writes go on, the buffer is flushed at every sample (so
    it stays small), and the condition is logged once, loudly, and shown in
    ``status()``. It ends when RSS is back under the hard limit.

Nothing here ever drops data: the only way the watchdog frees the buffer is
the engine's own flush, which writes it to SQLite first. A flush that fails
is logged and the refusal stays in force; the next sample tries again.

Limits are bytes or a share of :func:`available_memory`: the cgroup's memory
limit when one is set (that is where the kernel's OOM killer acts for a
systemd service or a container), else the host's RAM. The available figure
is read again at every sample, so a ``systemctl set-property MemoryMax=``
takes effect without a reload.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import psutil

from memd.config import WatchdogConfig
from memd.errors import MemdError

if TYPE_CHECKING:
    from memd.engine.engine import Engine

log = logging.getLogger("memd.watchdog")

MiB = 1024 * 1024
# cgroup v1 reports "no limit" as a huge number (PAGE_COUNTER_MAX pages); anything this large is not a limit
_V1_UNLIMITED = 1 << 62

OK, SOFT, REFUSING, STUCK = "ok", "soft", "refusing", "stuck"


class _Process(Protocol):
    """What the watchdog needs of a process: ``psutil.Process`` or a test's fake."""

    def memory_info(self) -> Any: ...


# ---- how much memory memd may use ---------------------------------------------------------

_own: tuple[int, psutil.Process] | None = None


def own_process() -> psutil.Process:
    """This process, as one cached ``psutil.Process`` (re-created after a fork).

    psutil caches per-object state; creating a Process per sample costs more
    than the ~12 µs ``memory_info()`` itself.
    """
    global _own
    pid = os.getpid()
    if _own is None or _own[0] != pid:
        _own = (pid, psutil.Process(pid))
    return _own[1]


def _read_limit(path: str) -> int | None:
    """One cgroup limit file: bytes, or None for "max", a missing file or garbage."""
    try:
        with open(path) as fh:
            text = fh.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max" (v2: unlimited) is not digits


def _ancestors(cgroup_path: str) -> list[str]:
    """``/a/b`` -> ``["a/b", "a", ""]``: a limit anywhere above the process binds it too.

    Walking up also covers containers, where /proc/self/cgroup may name a host
    path that does not exist inside the container's own cgroup mount.
    """
    parts = [p for p in cgroup_path.split("/") if p and p not in (".", "..")]
    return ["/".join(parts[:i]) for i in range(len(parts), -1, -1)]


def _cgroup_entries(root: str) -> list[tuple[str, str]]:
    """``(controllers, path)`` pairs from ``<root>/proc/self/cgroup``; [] when unreadable."""
    try:
        with open(os.path.join(root, "proc/self/cgroup")) as fh:
            lines = fh.read().splitlines()
    except OSError:
        return []
    entries = []
    for line in lines:
        fields = line.split(":", 2)
        if len(fields) == 3:
            entries.append((fields[1], fields[2]))
    return entries


def _min_limit(base: str, cgroup_path: str, name: str) -> int | None:
    """The smallest limit in ``name`` files from the process's cgroup up to the mount's root."""
    found = [_read_limit(os.path.join(base, rel, name)) for rel in _ancestors(cgroup_path)]
    limits = [n for n in found if n is not None and 0 < n < _V1_UNLIMITED]
    return min(limits) if limits else None


def cgroup_memory_limit(root: str = "/") -> int | None:
    """The memory limit of this process's cgroup in bytes, or None when there is none.

    cgroup v2 (``0::<path>`` -> ``/sys/fs/cgroup/<path>/memory.max``) is
    preferred; else cgroup v1's ``memory.limit_in_bytes`` under the
    ``memory`` controller's mount. ``root`` is ``/`` in production; tests point
    it at a directory of fake files.
    """
    entries = _cgroup_entries(root)
    cgroup_fs = os.path.join(root, "sys/fs/cgroup")
    for controllers, path in entries:
        if controllers == "":  # the v2 (unified) hierarchy
            limit = _min_limit(cgroup_fs, path, "memory.max")
            if limit is not None:
                return limit
    for controllers, path in entries:
        if "memory" in controllers.split(","):
            limit = _min_limit(os.path.join(cgroup_fs, "memory"), path, "memory.limit_in_bytes")
            if limit is not None:
                return limit
    return None


def available_memory(root: str = "/") -> int:
    """The memory memd may use: the cgroup's limit when set, else the host's RAM.

    A cgroup limit above the host's RAM is no limit at all, hence the min.
    Under systemd's ``ProcSubset=pid`` the host's RAM cannot be read
    (psutil's ``virtual_memory()`` fails; RSS still works): a cgroup limit
    is then used alone, and without one
    this raises ``OSError`` — limits must then be given as sizes.
    """
    limit = cgroup_memory_limit(root)
    try:
        total = int(psutil.virtual_memory().total)
    except (OSError, psutil.Error) as exc:
        if limit is not None:
            return limit
        raise OSError(f"cannot read the host's memory size ({exc}); give watchdog limits as sizes") from exc
    return total if limit is None else min(limit, total)


# ---- formatting ----------------------------------------------------------------------------

def _mib(n: int) -> str:
    """Bytes for people: the -OOM text and INFO are read by operators, not parsed."""
    return f"{n / MiB:.0f} MiB" if n >= 10 * MiB else f"{n / MiB:.1f} MiB"


def _limit_text(name: str, limit: float | int, resolved: int, available: int | None) -> str:
    """``watchdog.hard_limit 800 MiB (70% of 1143 MiB available)``: the key, so it can be raised."""
    if isinstance(limit, float):
        of = _mib(available) if available else "unknown"
        return f"watchdog.{name} {_mib(resolved)} ({limit * 100:g}% of {of} available)"
    return f"watchdog.{name} {_mib(resolved)}"


# ---- the watchdog --------------------------------------------------------------------------

class Watchdog:
    """Samples RSS and flushes, drops caches or refuses writes; see the module docstring."""

    def __init__(self, engine: Engine, cfg: WatchdogConfig, *, process: _Process | None = None,
                 available: Callable[[], int] | None = None) -> None:
        self.engine = engine
        self.cfg = cfg
        self._process = process
        self._available_fn = available or available_memory
        self.available: int | None = None
        self.soft_bytes = 0
        self.hard_bytes = 0
        self.rss = 0
        self.state = OK
        self.episodes = 0  # times RSS went above the soft limit
        self.refusals = 0  # times writes were refused (RSS above the hard limit)
        self.samples = 0
        self.cache_shed_bytes = 0  # read cache bytes released by shedding, since the start
        self._episode_start = 0.0
        self._refusal_start = 0.0
        self._refusal: str | None = None  # the text we put into engine.write_refusal
        self._warned: set[str] = set()  # configuration problems already logged (once each, not per sample)
        self._refresh_limits()

    # ---- configuration ---------------------------------------------------------------------

    def configure(self, cfg: WatchdogConfig) -> None:
        """Apply a reloaded ``[watchdog]`` section; the next sample acts on it."""
        self.cfg = cfg
        self._warned.clear()
        self._refresh_limits()
        log.info("watchdog_configured sample_seconds=%g soft_limit=%d hard_limit=%d available=%d",
                 cfg.sample_seconds, self.soft_bytes, self.hard_bytes, self.available or 0)

    def _refresh_limits(self) -> None:
        """Resolve both limits to bytes against the memory available right now."""
        try:
            self.available = self._available_fn()
        except (OSError, psutil.Error, MemdError) as exc:
            self._warn_once("available", "watchdog_available_unknown error=%r known=%d (the last known figure "
                            "stays in use; with none, limits given as a share are not enforced: give them as "
                            "sizes)", str(exc), self.available or 0)
        hard = self._resolve(self.cfg.hard_limit)
        soft = self._resolve(self.cfg.soft_limit)
        if soft >= hard:
            # the loader only compares two sizes or two shares; a mix can cross once resolved
            self._warn_once("order", "watchdog_limits_crossed soft_limit=%d hard_limit=%d "
                            "(the soft limit resolves at or above the hard one: using the hard limit for both)",
                            soft, hard)
            soft = hard
        self.soft_bytes, self.hard_bytes = soft, hard

    def _resolve(self, limit: float | int) -> int:
        """Bytes for a limit; a share with no known available memory is no limit at all."""
        if isinstance(limit, float):
            return int(limit * self.available) if self.available else 1 << 63
        return int(limit)

    def _warn_once(self, what: str, msg: str, *args: Any) -> None:
        if what not in self._warned:
            self._warned.add(what)
            log.warning(msg, *args)

    # ---- sampling ----------------------------------------------------------------------------

    def _read_rss(self) -> int:
        if self._process is None:
            self._process = own_process()
        self.rss = int(self._process.memory_info().rss)
        return self.rss

    async def sample(self) -> dict[str, Any]:
        """One look at RSS and whatever that calls for; the scheduler awaits one at a time.

        Safe to cancel anywhere: the state (refusing included) is kept and the
        next sample re-evaluates it.
        """
        self.samples += 1
        self._refresh_limits()
        rss = self._read_rss()
        if rss <= self.soft_bytes:
            self._calm(rss)
            return self.status()
        drop = False
        if self.state == OK:
            self._start_episode(rss)
            drop = True
        if rss > self.hard_bytes and self.state in (OK, SOFT):
            self._refuse(rss)
            drop = True
        elif rss <= self.hard_bytes and self.state == STUCK:
            self.state = SOFT
            log.info("watchdog_unstuck rss=%d hard_limit=%d", rss, self.hard_bytes)
        self._shed_cache()
        await self._flush()
        if drop:
            self._drop_caches()
        if self.state == SOFT and self._read_rss() > self.hard_bytes:
            # writes went on during that flush: act on the hard limit now, not a sample later
            self._refuse(self.rss)
            await self._flush()
        if self.state == REFUSING:
            self._settle()
        return self.status()

    def _calm(self, rss: int) -> None:
        """RSS at or under the soft limit: writes on, the episode (if any) is over."""
        if self.state == REFUSING:
            self._resume(rss, "rss_under_soft_limit")
        self.engine.store.readcache.unshed()  # (the configured bound again: it refills as reads miss)
        if self.state != OK:
            log.info("watchdog_ok rss=%d soft_limit=%d episode_seconds=%.3f",
                     rss, self.soft_bytes, time.monotonic() - self._episode_start)
        self.state = OK

    def _start_episode(self, rss: int) -> None:
        self.episodes += 1
        self._episode_start = time.monotonic()
        self.state = SOFT
        log.warning("watchdog_soft_limit rss=%d soft_limit=%d hard_limit=%d buffer_bytes=%d vector_bytes=%d "
                    "action=flush,drop_caches episode=%d", rss, self.soft_bytes, self.hard_bytes,
                    self.engine.buffered_bytes(), self.engine.memories.vector_bytes(), self.episodes)

    def _refusal_text(self, rss: int) -> str:
        hard = _limit_text("hard_limit", self.cfg.hard_limit, self.hard_bytes, self.available)
        soft = _limit_text("soft_limit", self.cfg.soft_limit, self.soft_bytes, self.available)
        return (f"memd RSS {_mib(rss)} is above {hard}; writes resume when the write buffer is flushed "
                f"or RSS is back under {soft}; reads go on; retry shortly, or raise watchdog.hard_limit")

    def _refuse(self, rss: int) -> None:
        self.refusals += 1
        self._refusal_start = time.monotonic()
        self.state = REFUSING
        self._refusal = self._refusal_text(rss)
        self.engine.write_refusal = self._refusal
        log.warning("watchdog_refusing_writes rss=%d hard_limit=%d soft_limit=%d buffer_bytes=%d vector_bytes=%d "
                    "refusal=%d", rss, self.hard_bytes, self.soft_bytes, self.engine.buffered_bytes(),
                    self.engine.memories.vector_bytes(), self.refusals)

    def _settle(self) -> None:
        """After a flush while refusing: resume if RSS fell under soft or nothing is left to flush."""
        rss = self._read_rss()
        if rss <= self.soft_bytes:
            self._calm(rss)
        elif self.engine.buffered_bytes() == 0:
            self._resume(rss, "buffer_empty")
            if rss > self.hard_bytes:
                self.state = STUCK
                log.error("watchdog_stuck rss=%d hard_limit=%d buffer_bytes=0: writes resumed although RSS "
                          "stays above the hard limit; the buffer is empty, so the memory is held by the "
                          "Python heap or SQLite, which rarely give it back to the OS; restart memd in a "
                          "quiet moment to release it, or raise watchdog.hard_limit", rss, self.hard_bytes)
            else:
                self.state = SOFT
        else:  # the flush failed (logged): keep refusing, with the current figure
            self._refusal = self._refusal_text(rss)
            self.engine.write_refusal = self._refusal

    def _resume(self, rss: int, reason: str) -> None:
        if self.engine.write_refusal == self._refusal:  # never clear a refusal that is not ours
            self.engine.write_refusal = None
        self._refusal = None
        log.info("watchdog_writes_resumed reason=%s rss=%d soft_limit=%d hard_limit=%d refused_seconds=%.3f",
                 reason, rss, self.soft_bytes, self.hard_bytes, time.monotonic() - self._refusal_start)

    # ---- actions -----------------------------------------------------------------------------

    def _shed_cache(self) -> None:
        """Halve the read cache and hold it there until RSS is back under the soft limit.

        First, because it costs no I/O and loses nothing (SQLite holds every row). Measured by the
        cache's own count of the bytes its entries cost: whether RSS falls depends on the allocator.
        """
        cache = self.engine.store.readcache
        if cache.bytes == 0:
            return
        freed = cache.shed()
        self.cache_shed_bytes += freed
        log.info("watchdog_cache_shed freed_bytes=%d cache_bytes=%d cache_limit=%d", freed, cache.bytes, cache.limit)

    async def _flush(self) -> None:
        """Flush the buffer to SQLite (a failure is logged; the WAL still holds every write)."""
        if self.engine.buffered_bytes() == 0:
            return
        try:
            await self.engine.flush()
        except Exception as exc:  # noqa: BLE001 - the watchdog must survive a failing flush; the next sample retries
            log.error("watchdog_flush_failed error=%r state=%s (nothing is lost: the WAL holds the data)",
                      f"{type(exc).__name__}: {exc}", self.state)

    def _drop_caches(self) -> None:
        """Release what memd can give back cheaply: the read connection's page cache, cyclic garbage.

        Once per episode (and once more on refusing), not at every sample. Only the young
        generations are collected: this runs on the event loop, and a full collection walks
        every object generation 2 holds (600 ms with 1,000,000 buffered keys before
        memd.gcpolicy froze the survivors of young collections; what is frozen a full
        collection would not reclaim anyway), while the young ones are bounded by the
        thresholds (a few ms).
        """
        t0 = time.perf_counter()
        try:
            self.engine.store.shrink_memory()
        except MemdError as exc:  # a closed store: nothing to shrink
            log.debug("watchdog_shrink_memory_failed error=%r", str(exc))
        collected = gc.collect(1)
        log.info("watchdog_caches_dropped gc_collected=%d seconds=%.3f", collected, time.perf_counter() - t0)

    # ---- reporting ---------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Figures for INFO: the last sample's RSS (read now if there was none yet) and the limits."""
        if self.samples == 0 and self.rss == 0:
            self._read_rss()
        return {
            "state": self.state,
            "rss_bytes": self.rss,
            # what of RSS the vectors of semantic recall hold: flushing cannot release it, dropping indexes can
            "vector_bytes": self.engine.memories.vector_bytes(),
            "cache_shed_bytes": self.cache_shed_bytes,
            "soft_limit_bytes": self.soft_bytes,
            "hard_limit_bytes": self.hard_bytes,
            "available_bytes": self.available or 0,
            "episodes": self.episodes,
            "refusals": self.refusals,
            "samples": self.samples,
            "sample_seconds": self.cfg.sample_seconds,
        }


__all__ = ["Watchdog", "available_memory", "cgroup_memory_limit", "own_process",
           "OK", "SOFT", "REFUSING", "STUCK"]
