"""CONFIG GET / SET / RESETSTAT / REWRITE / HELP, as Redis 7.0 answers them, over memd's TOML config.

Client libraries read a handful of Redis parameters at start or in health
checks (``maxmemory``, ``maxmemory-policy``, ``timeout``, ``databases``,
``save``, ``appendonly``, ``notify-keyspace-events``...). CONFIG GET answers
them with what is true of memd (it evicts nothing, so ``maxmemory 0`` and
``noeviction``; it always logs every write, so ``appendonly yes``), next to
memd's own dotted keys (``storage.fsync``...). Patterns are Redis globs and
several may be given (7.0); each parameter appears once.

memd's configuration is its TOML file (reloaded on SIGHUP or when it
changes), so CONFIG SET changes only what Redis's clients commonly set at
runtime and memd can honour: ``appendfsync`` (the WAL's fsync policy, until
the next reload), and any parameter set to the value it already has (a
no-op, which libraries do to make sure of a setting). Anything else is an
error that names the TOML key to edit, or says memd does not have it.
Several pairs are all-or-nothing, as in Redis.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from memd import gcpolicy
from memd.commands import Context
from memd.commands.commandtable import declare_subcommands, subcommand
from memd.commands.keys import glob_match
from memd.commands.scripting import scripting, set_time_limit
from memd.int64 import parse_int64
from memd.errors import CommandError
from memd.resp import SimpleString

OK = SimpleString("OK")
_ARITY = {b"get": -3, b"set": -4, b"resetstat": 2, b"rewrite": 2, b"help": 2}
declare_subcommands("config", [s.decode() for s in _ARITY])
_FSYNC = ("always", "everysec", "no")
_HELP = (
    "CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "GET <pattern>",
    "    Return parameters matching the glob-like <pattern> and their values.",
    "SET <directive> <value>",
    "    Set the configuration <directive> to <value>.",
    "RESETSTAT",
    "    Reset statistics reported by the INFO command.",
    "REWRITE",
    "    Rewrite the configuration file.",
    "HELP",
    "    Prints this help.",
)

# Redis parameters memd answers, with where memd's equivalent lives (None: a fixed fact of memd)
_TOML_KEY: dict[str, str | None] = {
    "maxmemory": "backpressure.buffer_max_bytes and watchdog.hard_limit",
    "maxmemory-policy": None, "maxmemory-samples": None, "timeout": None, "databases": None, "save": None,
    "appendonly": None, "appendfsync": "storage.fsync", "notify-keyspace-events": None,
    "lua-time-limit": "server.lua_time_limit_ms", "busy-reply-threshold": "server.lua_time_limit_ms", "maxclients": "server.max_clients",
    "proto-max-bulk-len": "server.max_bulk_bytes", "client-query-buffer-limit": "server.max_pending_bytes",
    "port": None, "bind": None, "unixsocket": "server.socket", "unixsocketperm": "server.socket_mode",
    "dir": "storage.data_dir", "requirepass": "server.password", "tcp-keepalive": None, "hz": None,
    "loglevel": "log.level", "cluster-enabled": None, "replica-read-only": None, "slave-read-only": None,
    "slowlog-log-slower-than": None, "slowlog-max-len": None,
    "client-output-buffer-limit": "server.pubsub_output_hard_bytes, pubsub_output_soft_bytes and "
                                  "pubsub_output_soft_seconds",
    "io-threads": None, "daemonize": None, "protected-mode": None,
    "lfu-log-factor": None, "lfu-decay-time": None, "active-expire-enabled": None,
}
_LOGLEVEL = {"debug": "debug", "info": "notice", "warning": "warning", "error": "warning"}


def redis_parameters(ctx: Context) -> dict[str, str]:
    """The Redis parameters CONFIG GET answers, with memd's values."""
    server, engine = ctx.server, ctx.engine
    view: dict[str, str] = dict(server.config_view()) if server is not None else {}
    max_clients = str(server.limits.max_clients) if server is not None else "10000"
    limit = scripting(ctx).time_limit_ms
    socket_path = server.socket_path if server is not None else ""
    return {
        "maxmemory": "0", "maxmemory-policy": "noeviction", "maxmemory-samples": "5", "timeout": "0",
        "databases": str(getattr(engine, "databases", 1)), "save": "", "appendonly": "yes",
        "appendfsync": engine.fsync_policy, "notify-keyspace-events": "", "lua-time-limit": str(limit),
        "busy-reply-threshold": str(limit), "maxclients": max_clients,
        "proto-max-bulk-len": view.get("server.max_bulk_bytes", str(512 << 20)),
        "client-query-buffer-limit": view.get("server.max_pending_bytes", str(64 << 20)),
        "port": "0", "bind": "", "unixsocket": socket_path,
        "unixsocketperm": view.get("server.socket_mode", "0660").lstrip("0") or "0",
        "dir": engine.data_dir, "requirepass": "(set)" if server is not None and server.password else "",
        "tcp-keepalive": "0", "hz": "10", "loglevel": _LOGLEVEL.get(view.get("log.level", "info"), "notice"),
        "cluster-enabled": "no", "replica-read-only": "yes", "slave-read-only": "yes",
        "slowlog-log-slower-than": "10000", "slowlog-max-len": "128",
        "client-output-buffer-limit": "normal 0 0 0 slave 268435456 67108864 60 pubsub "
                                      f"{view.get('server.pubsub_output_hard_bytes', str(32 << 20))} "
                                      f"{view.get('server.pubsub_output_soft_bytes', str(8 << 20))} "
                                      f"{view.get('server.pubsub_output_soft_seconds', '60')}",
        "io-threads": "1", "daemonize": "no", "protected-mode": "no", "lfu-log-factor": "10",
        "lfu-decay-time": "1", "active-expire-enabled": "yes",
    }


def config_command(ctx: Context, args: list[bytes]) -> Any:
    sub = subcommand("config", args, _ARITY, ctx)
    if sub == b"get":
        return _get(ctx, args[1:])
    if sub == b"set":
        return _set(ctx, args[1:])
    if sub == b"resetstat":
        if ctx.server is not None:
            ctx.server.reset_stats()
        ctx.engine.loop_lag.reset()
        gcpolicy.POLICY.reset()
        return OK
    if sub == b"rewrite":
        raise CommandError("memd's configuration is a TOML file (memd --config PATH; `memd config show` prints "
                           "what is in force): edit it, memd reloads it on change or SIGHUP; it never rewrites it")
    return [SimpleString(line) for line in _HELP]


def _get(ctx: Context, patterns: list[bytes]) -> dict[str, str]:
    """Every parameter matching any pattern, once (a map in RESP3, name/value pairs in RESP2)."""
    settings = redis_parameters(ctx)
    if ctx.server is not None:
        settings.update(ctx.server.config_view())
    found: dict[str, str] = {}
    for pattern in patterns:
        pat = pattern.lower()
        if b"*" not in pat and b"?" not in pat and b"[" not in pat:  # Redis looks a plain name up directly
            name = pat.decode(errors="replace")
            if name in settings:  # named as asked, as Redis replies to a plain name
                found.setdefault(pattern.decode(errors="replace"), settings[name])
            continue
        for name, value in settings.items():
            if name not in found and glob_match(pat, name.encode()):
                found[name] = value
    return found


def _set(ctx: Context, args: list[bytes]) -> Any:
    """CONFIG SET name value [name value ...]: all checked first, then applied (all or nothing)."""
    if len(args) % 2:
        raise CommandError("syntax error")
    current = redis_parameters(ctx)
    seen: set[str] = set()
    changes: list[Callable[[], None]] = []
    for raw_name, raw_value in zip(args[::2], args[1::2]):
        name, value = raw_name.decode(errors="replace").lower(), raw_value.decode(errors="replace")
        if name not in _TOML_KEY:
            raise CommandError(f"Unknown option or number of arguments for CONFIG SET - '{name}'")
        if name in seen:
            raise CommandError(f"CONFIG SET failed (possibly related to argument '{name}') - duplicate parameter")
        seen.add(name)
        if name == "appendfsync":
            policy = value.lower()
            if policy not in _FSYNC:
                raise CommandError(f"CONFIG SET failed (possibly related to argument '{name}') - argument(s) must "
                                   "be one of the following: always, everysec, no")
            changes.append(lambda p=policy: setattr(ctx.engine, "fsync_policy", p))  # type: ignore[misc]
            continue
        if name in ("lua-time-limit", "busy-reply-threshold"):
            ms = parse_int64(raw_value)
            if ms is None:
                raise CommandError(f"CONFIG SET failed (possibly related to argument '{name}') - argument couldn't be "
                                   "parsed into an integer")
            if ms < 0:
                raise CommandError(f"CONFIG SET failed (possibly related to argument '{name}') - argument must be "
                                   "between 0 and 9223372036854775807 inclusive")
            changes.append(lambda v=ms: set_time_limit(ctx, v))  # type: ignore[misc]
            continue
        if name != "requirepass" and value == current[name]:
            continue  # already so: nothing to change
        raise CommandError(f"CONFIG SET failed (possibly related to argument '{name}') - {_why(name)}")
    for change in changes:
        change()
    return OK


def _why(name: str) -> str:
    """Why a parameter cannot be set at runtime, and what to do instead (never echoing the value)."""
    key = _TOML_KEY[name]
    if key is None:
        return f"memd does not support changing '{name}' (its value is a fixed property of memd)"
    return (f"memd is configured by its TOML file: set {key} there (memd --config PATH; `memd config show` "
            "prints what is in force); memd reloads it on change or SIGHUP")
