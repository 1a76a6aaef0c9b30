"""Composition root: config -> engine -> server, signals, graceful shutdown.

It wires objects and waits; it does no one else's work. Shutdown order
(SIGTERM, SIGINT or SHUTDOWN): stop accepting, let in-flight batches finish
and answer them, close connections, remove the socket file, then the engine
flushes the buffer to SQLite, fsyncs and closes. A second signal only logs.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import grp
import json
import logging
import os
import shlex
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio

from memd import __version__, config as config_mod, gcpolicy, systemd
from memd.commands import Context, commandtable
from memd.commands.server import metrics_text
from memd.config import Config
from memd.engine.engine import DB_NAME, Engine
from memd.engine.memories import Memories
from memd.maintenance.backup import last_backup, run_backup
from memd.maintenance.compaction import run_compaction
from memd.maintenance.scheduler import Maintenance
from memd.maintenance.watchdog import Watchdog
from memd.metrics import write_textfile
from memd.reload import Reloader
from memd.server import Access, Limits, Server

log = logging.getLogger("memd.daemon")
# The cyclic GC's thresholds for the daemon process (Python's default: 700, 10, 10). The buffer holds
# up to millions of long-lived objects (one per buffered key) that never form cycles, and every
# full collection re-walks all of them. 1M pipelined SETs in-process (the buffer growing to 630,000
# keys): 7 full collections and 2.4 s of GC under the defaults; 1 and 1.2 s with these. Young
# collections stay small (2,000 objects: ~1 ms pauses; 50,000 gave 20-40 ms pauses and a worse
# p99). What survives a generation-1 collection is frozen at once (memd.gcpolicy).
GC_THRESHOLDS = (2_000, 10, 50)
# How long a thread running Python keeps the GIL while another waits for it (Python's default: 5 ms).
# The event loop gives the GIL up at every SQLite read and socket write; while a worker thread runs
# Python, each of those hand-offs costs the loop up to this long to get it back (at 5 ms, 16 pipelined
# GETs of stored keys waited up to 80 ms during a flush). The flush's Python now runs on the loop in
# steps (memd.steps); 1 ms bounds what threads remain.
SWITCH_INTERVAL = 0.001


def freeze_long_lived() -> None:
    """Move every object alive now out of the cyclic GC's reach (``gc.freeze``), after a flush and at start.

    What is alive then is mostly the buffer (one object per key, no cycles) and memd's own
    long-lived state; a full collection would re-walk all of it for nothing, and it runs on the
    event loop: 600 ms with 1,000,000 keys buffered (2026-12-07, in-process ``gc.collect()``),
    ~0 ms once frozen. Frozen objects are still freed by reference counting (a flushed buffer
    goes as before); what the collector no longer sees is a reference cycle among them that
    becomes garbage later. memd's long-lived objects do not form such cycles (asyncio breaks the
    transport-protocol one when a connection closes), and the young generations, where the
    short-lived cycles (an exception and its traceback) die, are collected first.
    """
    gc.collect(1)
    gc.freeze()
RECOVERY_EXTEND_USEC = 60_000_000  # per progress report (~1 s): room for a flush-as-you-go of a full buffer
# per schema-migration report (~1 s): room for the steps SQLite's progress handler does not see. DROP
# TABLE of the old keys table frees its every page in one VM instruction, as does the COMMIT's
# fsync: the longest stretch without a report was 41 s for 10,000,000 keys on a loaded 2-core
# machine (benchmarks/bench_bigstore.py; 110 s when the upgrade still went through SQLite's WAL). A migration stuck for good is killed 5 minutes after its
# last report; one killed while making progress would restart into the same migration, for ever.
MIGRATION_EXTEND_USEC = 300_000_000
# How often the approximate vector indexes are checked for a rebuild (memd.store.vectors decides whether
# one is due; the check itself costs nothing); also once right after start.
VECTOR_MAINTENANCE_SCHEDULE = "every 10s"


class JsonLineFormatter(logging.Formatter):
    """One JSON object per line: journald and log shippers parse it as is."""

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage(),
        }
        if record.exc_info:
            event["exc"] = self.formatException(record.exc_info)
        return json.dumps(event, default=str)


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLineFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # memd logs each job run itself; APScheduler's per-run lines would double them every few seconds
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


def _group_id(name: str) -> int | None:
    if not name:
        return None
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise config_mod.ConfigError("<config>", "server.socket_group", f"no such group {name!r}") from None


@dataclass
class Live:
    """The configuration in force and how to reach the reloader: jobs, views and signals read it here."""

    cfg: Config
    config_path: str | None = None
    overrides: Mapping[str, object] = field(default_factory=dict)
    request_reload: Callable[[str], None] | None = None  # set once the reloader runs (SIGHUP)


async def run(cfg: Config, config_path: str | None = None, overrides: Mapping[str, object] | None = None) -> int:
    """Serve until a signal or SHUTDOWN; return the exit status.

    The signal watcher outlives the server and the engine, so a second
    SIGTERM during the final flush is logged instead of killing the flush.
    """
    stop = asyncio.Event()
    live = Live(cfg, config_path, dict(overrides or {}))
    async with anyio.create_task_group() as tg:
        tg.start_soon(_watch_signals, stop, live)
        try:
            await _serve(live, stop)
        finally:
            tg.cancel_scope.cancel()
    log.info("shutdown_done")
    return 0


async def _serve(live: Live, stop: asyncio.Event) -> None:
    cfg = live.cfg
    s, st = cfg.server, cfg.storage
    group = _group_id(s.socket_group)
    activated = systemd.listen_socket()  # memd.socket: systemd made and holds the socket; clients queue in it
    systemd.notify(f"STATUS=recovering: replaying the WAL in {st.data_dir}")
    first_start = not os.path.exists(os.path.join(st.data_dir, DB_NAME))  # (before the engine creates it)
    async with Engine(st.data_dir, fsync=st.fsync, recovery=st.recovery, wal_segment_bytes=st.wal_segment_bytes,
                      wal_compress_min=st.wal_compress_min_bytes, flush_max_records=cfg.flush.max_records,
                      flush_max_bytes=cfg.flush.max_bytes, flush_max_age=cfg.flush.max_age_seconds,
                      buffer_max_bytes=cfg.backpressure.buffer_max_bytes,
                      write_timeout=cfg.backpressure.write_timeout_seconds,
                      recovery_progress=_recovery_progress, migration_progress=_migration_progress,
                      databases=s.databases) as engine:
        engine.store.configure_readcache(cfg.cache.max_bytes)
        freeze_long_lived()  # what recovery loaded
        engine.after_flush.append(freeze_long_lived)
        configure_memories(engine.memories, cfg.memory)
        server = Server(engine, s.socket, socket_mode=s.socket_mode, socket_group=group)
        configure_server(server, cfg, group)
        commandtable.table()  # built now, not on the loop at the first COMMAND (~150 ms on a busy box)
        server.config_view = lambda: config_mod.to_dict(live.cfg)
        server.lua_time_limit_ms = cfg.server.lua_time_limit_ms
        server.shutdown_requested = stop
        watchdog = Watchdog(engine, cfg.watchdog)
        maintenance = _maintenance(engine, live, watchdog)
        server.maintenance = maintenance
        maintenance.add("metrics", functools.partial(_write_metrics, live, server), _metrics_schedule(cfg), quiet=True)
        server.info_providers += [
            ("maintenance", maintenance.status),
            ("memory", lambda: {f"memd_watchdog_{k}": v for k, v in watchdog.status().items()}),
            ("persistence", lambda: _backup_age(live))]
        reloader = Reloader(live.config_path, live.overrides, lambda: live.cfg,
                            functools.partial(_apply, live, engine, server, maintenance, watchdog, group))
        server.info_providers += [("server", reloader.status), ("stats", gcpolicy.POLICY.status)]
        async with anyio.create_task_group() as tg:
            await tg.start(maintenance.run)
            await tg.start(reloader.run)
            live.request_reload = reloader.request
            await server.start(activated)
            tg.start_soon(_run_once, maintenance, "vectors")  # the ANN of a loaded index, without waiting 10 s
            tg.start_soon(gcpolicy.POLICY.pace_young_collections)  # (small pauses, see there)
            systemd.notify("READY=1", f"STATUS=ready: socket={server.socket_path} fsync={engine.fsync_policy}")
            interval = systemd.watchdog_interval()
            if interval is not None:  # WatchdogSec=: ping only while the loop runs and the flush progresses
                health = functools.partial(systemd.flush_health, engine, systemd.stall_limit(interval))
                tg.start_soon(systemd.watchdog_loop, interval, health)
            try:
                log.info("ready version=%s socket=%s data_dir=%s fsync=%s search_ranking=%r", __version__,
                         server.socket_path, st.data_dir, st.fsync, engine.store.ranking())
                if first_start:  # a newcomer's first run: where things are, and how to try it (once)
                    print(f"memd: first start: data in {st.data_dir}, socket {server.socket_path}; "
                          f"try it: redis-cli -s {shlex.quote(server.socket_path)} PING", file=sys.stderr, flush=True)
                await stop.wait()
                systemd.notify("STOPPING=1", "STATUS=shutting down: draining connections, then the final flush")
                log.info("shutdown_begin connections=%d", len(server.connections))
                server.stop_accepting()
                await server.drain()
            finally:
                tg.cancel_scope.cancel()  # the scheduler stops; a running job finishes first (shielded)
                await server.close()


def _recovery_progress(records: int) -> None:
    """While a long WAL replays, ask systemd for more start time (TimeoutStartSec=) and say how far it got."""
    systemd.notify(f"EXTEND_TIMEOUT_USEC={RECOVERY_EXTEND_USEC}", f"STATUS=recovering: {records} WAL records replayed")


def _migration_progress(from_version: int, to_version: int, seconds: float) -> None:
    """While a schema migration runs, ask systemd for more start time and say which step, for how long.

    Called in the thread running the migration: sd_notify is one datagram on a socket of its own.
    """
    systemd.notify(f"EXTEND_TIMEOUT_USEC={MIGRATION_EXTEND_USEC}",
                   f"STATUS=migrating schema v{from_version} -> v{to_version}, {seconds:.0f} s")


def _maintenance(engine: Engine, live: Live, watchdog: Watchdog) -> Maintenance:
    maintenance = Maintenance()
    cfg = live.cfg
    maintenance.add("compact", lambda: run_compaction(engine, live.cfg.compaction), cfg.compaction.schedule)
    maintenance.add("backup", lambda: run_backup(engine, live.cfg.backup), cfg.backup.schedule)
    maintenance.add("watchdog", watchdog.sample, _every(cfg.watchdog.sample_seconds), quiet=True)
    maintenance.add("vectors", lambda: _maintain_vectors(engine), VECTOR_MAINTENANCE_SCHEDULE, quiet=True)
    return maintenance


async def _run_once(maintenance: Maintenance, name: str) -> None:
    """Run a job now, from the daemon's task group: its failure is the job's (logged), not the daemon's."""
    try:
        await maintenance.run_now(name)
    except Exception as exc:  # noqa: BLE001 - the scheduler logged it; the next scheduled run retries
        log.debug("job_failed_at_start job=%s error=%r", name, str(exc))


async def _maintain_vectors(engine: Engine) -> dict[str, Any]:
    """(Re)build the approximate vector indexes that need it: after start, growth, or many deletes.

    Cheap when none does; a rebuild runs in a worker thread while searches go on (exactly, meanwhile).
    """
    return {"rebuilt": await engine.store.maintain_vectors()}


def _every(seconds: float) -> str:
    return f"every {seconds:g}s"


def _metrics_schedule(cfg: Config) -> str:
    """The textfile job runs only when there is a file to write."""
    return cfg.metrics.schedule if cfg.metrics.textfile else ""


async def _write_metrics(live: Live, server: Server) -> dict[str, Any]:
    """Render on the loop (it reads live engine state), write and rename in a thread (disk I/O)."""
    path = live.cfg.metrics.textfile
    if not path:
        return {"textfile": "off"}
    text = metrics_text(Context(engine=server.engine, server=server))
    await anyio.to_thread.run_sync(write_textfile, path, text)
    return {"path": path, "bytes": len(text)}


def _backup_age(live: Live) -> dict[str, Any]:
    """INFO persistence: the newest verified backup and its age (operators alert on it)."""
    last = last_backup(live.cfg.backup.dir)
    return {"memd_last_backup": last[0] if last else "",
            "memd_last_backup_age_seconds": int(time.time() - last[1]) if last else -1}


def _apply(live: Live, engine: Engine, server: Server, maintenance: Maintenance, watchdog: Watchdog,
           group: int | None, cfg: Config, changed: dict[str, tuple[Any, Any]]) -> None:
    """Put a reloaded config in force (keys in config.RELOADABLE; the others kept their values).

    Everything here is a plain assignment read per use, so it takes effect at
    once; connection limits apply to connections accepted from now on.
    """
    live.cfg = cfg
    f, bp = cfg.flush, cfg.backpressure
    engine.flush_max_records, engine.flush_max_bytes, engine.flush_max_age = f.max_records, f.max_bytes, \
        f.max_age_seconds
    engine.buffer_max_bytes, engine.write_timeout = bp.buffer_max_bytes, bp.write_timeout_seconds
    if "storage.fsync" in changed:
        engine.fsync_policy = cfg.storage.fsync
    logging.getLogger().setLevel(cfg.log.level.upper())
    configure_server(server, cfg, group)
    configure_memories(engine.memories, cfg.memory)
    maintenance.reschedule("compact", cfg.compaction.schedule)
    maintenance.reschedule("backup", cfg.backup.schedule)
    watchdog.configure(cfg.watchdog)
    if "cache.max_bytes" in changed:
        engine.store.configure_readcache(cfg.cache.max_bytes)
    maintenance.reschedule("watchdog", _every(cfg.watchdog.sample_seconds))
    maintenance.reschedule("metrics", _metrics_schedule(cfg))


def configure_server(server: Server, cfg: Config, group: int | None) -> None:
    """Apply the server's live settings (at start and on reload): limits, peer access, password, namespace rules."""
    s = cfg.server
    server.limits = Limits(s.max_clients, s.max_bulk_bytes, s.max_args, s.max_inline_bytes, s.max_pending_bytes,
                           s.pubsub_output_hard_bytes, s.pubsub_output_soft_bytes, s.pubsub_output_soft_seconds)
    server.access = Access.default(s.allow_uids, s.allow_gids, group)
    server.password = s.password  # a reload applies to connections made from now on, as requirepass does
    server.namespace_rules = cfg.memory.access


def configure_memories(memories: Memories, mc: config_mod.MemoryConfig) -> None:
    """Apply the [memory] section (at start, and on reload: plain attributes, read per command)."""
    memories.max_value_bytes = mc.max_value_bytes
    memories.history_versions = mc.history_versions
    memories.history_max_age_ms = int(mc.history_max_age_seconds * 1000)
    memories.vector_max_bytes = mc.vector_max_bytes


async def _watch_signals(stop: asyncio.Event, live: Live) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            if signum == signal.SIGHUP:
                log.info("signal signal=SIGHUP action=reload")
                if live.request_reload is not None:
                    live.request_reload("SIGHUP")
            elif stop.is_set():
                log.warning("signal_ignored signal=%s reason='already shutting down'", signal.Signals(signum).name)
            else:
                log.info("signal signal=%s", signal.Signals(signum).name)
                stop.set()


def serve(cfg: Config, config_path: str | None = None, overrides: Mapping[str, object] | None = None) -> int:
    setup_logging(cfg.log.level)
    gc.set_threshold(*GC_THRESHOLDS)
    gcpolicy.POLICY.install()
    sys.setswitchinterval(SWITCH_INTERVAL)
    options: dict[str, Any] = {}
    try:
        import uvloop  # noqa: F401, PLC0415 - optional speed-up
        options["use_uvloop"] = True
    except ImportError:
        pass
    return anyio.run(run, cfg, config_path, overrides, backend="asyncio", backend_options=options)
