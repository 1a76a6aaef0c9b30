"""Server commands: INFO, CONFIG GET, WAITAOF, SHUTDOWN, and memd's MEMD.* admin family."""

from __future__ import annotations

import os
import resource
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import anyio
import psutil

from memd import __version__, metrics
from memd.commands import NO_REPLY, CommandError, Context, Deferred, command, parse_int
from memd.commands.configcmd import config_command
from memd.commands.scripting import stop_script
from memd.commands.serverview import InfoProvider
from memd.pubsub import PubSub
from memd.resp import SimpleString, Verbatim

_STARTED = time.time()
_PROCESS = psutil.Process()
_RUN_ID = os.urandom(20).hex()  # Redis's run_id: 40 hex characters, new at each start
SECTIONS = ("server", "clients", "memory", "persistence", "stats", "replication", "errorstats", "keyspace",
            "cluster")


def info_sections(ctx: Context, *, keyspace: bool = True, only: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
    """Every INFO figure, by section (also what MEMD.STATS and MEMD.METRICS return).

    ``keyspace=False`` skips the key count, a COUNT over the SQLite table per database:
    the metrics, scraped every few seconds on the event loop, do without it. ``only``
    (section names; empty: all) skips the costly figures of the other sections too (the
    key counts, the providers' sections): ``INFO clients``, which clients poll (a queue
    waiting for its workers to block), costs microseconds, not a millisecond of the loop.
    """
    if only:
        keyspace = keyspace and "keyspace" in only
    engine = ctx.engine
    memory = not only or "memory" in only
    stats = engine.stats() if memory or "persistence" in only else {"buffer_bytes": 0}
    rss = _PROCESS.memory_info().rss if memory else 0
    peak = max(rss, _peak_rss()) if memory else 0
    counts = [engine.keyspace_of(db).dbsize() for db in range(engine.databases)] if keyspace else []
    server = ctx.server
    errors: Mapping[str, int] = {}
    providers: Sequence[InfoProvider] = ()
    pubsub = server.pubsub if server is not None else PubSub()
    socket_path, clients, max_clients, received, processed, writes = "", 1, 0, 0, 0, 0
    blocked = 0
    if server is not None:  # None: handlers run without a server (unit tests)
        errors, providers = server.stats_errors, server.info_providers
        blocked = server.blocked_clients
        socket_path, clients, max_clients = server.socket_path, len(server.connections), server.limits.max_clients
        received, processed, writes = server.stats_connections, server.stats_commands, server.stats_writes
    uname = os.uname()
    uptime = int(time.time() - _STARTED)
    sections: dict[str, dict[str, Any]] = {
        # the fields client libraries read (redis-py, Jedis, ioredis, go-redis probe some of them)
        "server": {
            "redis_version": "7.0.15", "memd_version": __version__, "redis_mode": "standalone",
            "os": f"{uname.sysname} {uname.release} {uname.machine}", "arch_bits": 64 if sys.maxsize > 2**32 else 32,
            "multiplexing_api": "epoll", "process_id": os.getpid(), "process_supervised": "no", "run_id": _RUN_ID,
            "tcp_port": 0, "uptime_in_seconds": uptime, "uptime_in_days": uptime // 86400, "hz": 10,
            "configured_hz": 10, "executable": sys.executable, "unix_socket": socket_path,
        },
        "clients": {"connected_clients": clients, "blocked_clients": blocked, "maxclients": max_clients},
        "memory": {"used_memory": rss, "used_memory_human": _human(rss), "used_memory_rss": rss,
                   "used_memory_rss_human": _human(rss), "used_memory_peak": peak, "used_memory_peak_human":
                   _human(peak), "maxmemory": 0, "maxmemory_human": "0B", "maxmemory_policy": "noeviction",
                   "mem_allocator": "libc",
                   "memd_buffer_bytes": stats["buffer_bytes"],
                   # semantic recall: vectors in memory (indexes and buffer), and their limit (0: none)
                   "memd_vector_bytes": engine.memories.vector_bytes() if memory else 0,
                   "memd_vector_max_bytes": engine.memories.vector_max_bytes},
        "persistence": {
            "loading": 0, "aof_enabled": 1, "rdb_bgsave_in_progress": 0, "aof_rewrite_in_progress": 0,
            **{f"memd_{k}": v for k, v in stats.items()},
        },
        "stats": {
            "total_connections_received": received,
            "total_commands_processed": processed,
            "rejected_connections": 0, "expired_keys": 0, "evicted_keys": 0, "keyspace_hits": 0,
            "keyspace_misses": 0, "pubsub_channels": len(pubsub.channels), "pubsub_patterns": len(pubsub.patterns),
            "pubsubshard_channels": len(pubsub.shard_channels),
            "total_error_replies": sum(errors.values()),
            "memd_write_commands": writes,
            **engine.loop_lag.status(),
            "memd_pubsub_messages": pubsub.messages,
            "memd_pubsub_output_limit_disconnections": server.stats_output_limit_disconnects if server else 0,
        },
        "replication": {"role": "master", "connected_slaves": 0, "master_failover_state": "no-failover",
                        "master_replid": _RUN_ID, "master_repl_offset": 0},
        "errorstats": {f"errorstat_{prefix}": f"count={n}" for prefix, n in sorted(errors.items())},
        "keyspace": {f"db{db}": f"keys={n},expires=0,avg_ttl=0" for db, n in enumerate(counts) if n},
        # clients probe it (langchain's get_client reads cluster_enabled) before anything else
        "cluster": {"cluster_enabled": 0},
    }
    for section, provider in providers:  # maintenance, watchdog, reload
        if not only or section in only:
            sections.setdefault(section, {}).update(provider())
    return sections


def _human(n: int) -> str:
    """Redis's bytesToHuman: 1.50M, 812.00K, 12B."""
    for unit, size in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n}B"


def _peak_rss() -> int:
    """The process's peak resident size (getrusage's ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _render(sections: dict[str, dict[str, Any]], wanted: list[str]) -> str:
    lines = []
    for name, fields in sections.items():
        if wanted and name not in wanted:
            continue
        lines.append(f"# {name.capitalize()}")
        lines += [f"{k}:{v}" for k, v in fields.items()]
        lines.append("")
    return "\r\n".join(lines)


@command("info", -1)
def info(ctx: Context, args: list[bytes]) -> Any:
    wanted = [a.decode(errors="replace").lower() for a in args]
    if any(w in ("all", "everything", "default") for w in wanted):
        wanted = []
    text = _render(info_sections(ctx, only=wanted), wanted)
    return Verbatim(text) if ctx.protocol == 3 else text.encode()


def metrics_text(ctx: Context) -> str:
    """The Prometheus exposition of INFO's figures and the engine's latency histograms.

    MEMD.METRICS replies with it and the daemon's textfile job writes it, so
    both show exactly what INFO shows (see :mod:`memd.metrics`).
    """
    engine = ctx.engine
    families = metrics.collect(info_sections(ctx, keyspace=False),
                               {"fsync": engine.wal.fsync_latency, "flush": engine.flush_latency,
                                "loop_lag": engine.loop_lag.histogram})
    return metrics.render(families)


@command("memd.metrics", 1)
def memd_metrics(ctx: Context, args: list[bytes]) -> Any:
    """Prometheus text format 0.0.4, as INFO replies: verbatim text in RESP3, a bulk string in RESP2."""
    text = metrics_text(ctx)
    return Verbatim(text) if ctx.protocol == 3 else text.encode()


@command("memd.stats", 1)
def memd_stats(ctx: Context, args: list[bytes]) -> Any:
    flat: dict[str, Any] = {}
    for fields in info_sections(ctx).values():
        flat.update(fields)
    return {k: (v if isinstance(v, int) else str(v)) for k, v in flat.items()}


@command("config", -2)
def config(ctx: Context, args: list[bytes]) -> Any:
    """CONFIG GET / SET / RESETSTAT / REWRITE / HELP (see :mod:`memd.commands.configcmd`)."""
    return config_command(ctx, args)


@command("waitaof", 4)
def waitaof(ctx: Context, args: list[bytes]) -> Any:
    numlocal = parse_int(args[0])
    parse_int(args[1])  # numreplicas: validated; memd has no replicas, so 0 are ever reached
    timeout_ms = parse_int(args[2], "timeout is not an integer or out of range")
    if timeout_ms < 0:
        raise CommandError("timeout is negative")
    if numlocal > 1:
        raise CommandError("WAITAOF cannot be used when numlocal is set but appendonly is disabled.")
    if ctx.multi is not None:
        raise CommandError("WAITAOF cannot be used inside a transaction")
    engine = ctx.engine
    target = engine.last_lsn

    async def wait() -> Any:
        with anyio.move_on_after(timeout_ms / 1000 if timeout_ms else None):
            await engine.sync(target)
            return [1, 0]
        return [0, 0]

    return Deferred(wait)


@command("memd.flush", 1, admin=True)
def memd_flush(ctx: Context, args: list[bytes]) -> Any:
    async def run() -> Any:
        await ctx.engine.flush()
        return SimpleString("OK")
    return Deferred(run)


def _maintenance_job(ctx: Context, name: str, render: Any) -> Any:
    maintenance = ctx.server.maintenance if ctx.server is not None else None
    if maintenance is None or name not in maintenance.jobs:
        raise CommandError(f"{name} is not available here (no maintenance scheduler in this process)")

    async def run() -> Any:
        try:
            return render(await maintenance.run_now(name))
        except Exception as exc:  # noqa: BLE001 - the job logged it; the caller gets one clear line
            raise CommandError(f"{name} failed: {exc}") from exc
    return Deferred(run)


@command("memd.compact", 1, admin=True, no_multi=True)
def memd_compact(ctx: Context, args: list[bytes]) -> Any:
    """Compact now; reply with what it removed (a map) once it is done."""
    return _maintenance_job(ctx, "compact", lambda result: result)


@command("memd.backup", 1, admin=True, no_multi=True)
def memd_backup(ctx: Context, args: list[bytes]) -> Any:
    """Back up now; reply with the path of the new, verified backup once it is done."""
    return _maintenance_job(ctx, "backup", lambda result: str(result["path"]).encode())


@command("shutdown", -1, admin=True, no_multi=True)
def shutdown(ctx: Context, args: list[bytes]) -> Any:
    opts = {a.lower() for a in args}
    if not opts <= {b"nosave", b"save", b"now", b"force", b"abort"}:
        raise CommandError("syntax error")
    server = ctx.server
    if server is None or server.shutdown_requested is None:
        raise CommandError("shutdown is not available here")
    if getattr(server, "script", None) is not None:  # a script past lua-time-limit (memd.commands.scripting)
        stop_script(ctx, b"nosave" in opts)
    server.shutdown_requested.set()

    async def never() -> Any:
        return NO_REPLY  # like Redis: a successful SHUTDOWN closes the connection without a reply

    return Deferred(never)


@command("time", 1)
def time_(ctx: Context, args: list[bytes]) -> Any:
    now = time.time()
    return [str(int(now)).encode(), str(int((now % 1) * 1_000_000)).encode()]
