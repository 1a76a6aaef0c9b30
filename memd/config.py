"""memd's configuration: a TOML file (plus command-line flags) -> frozen dataclasses.

Strict on purpose: an unknown section or key, a wrong type or a value out of
range raises :class:`~memd.errors.ConfigError` naming the file and the dotted
key, and saying what is allowed. A typo such as ``fsnyc = "always"`` must stop
the start, not silently run with weaker durability (hypercorn's loader ignores
unknown keys; memd does not). Defaults are module constants (litestream style)
so other modules and the docs can name them. Each field's parser lives in its
dataclass field's metadata, so the schema is written exactly once.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from memd.errors import ConfigError

KiB, MiB, GiB, TiB = 1 << 10, 1 << 20, 1 << 30, 1 << 40
DEFAULT_SOCKET = ""  # "" -> default_socket_path() at load time
DEFAULT_SOCKET_MODE = 0o660
DEFAULT_SOCKET_GROUP = ""  # "" -> the daemon's primary group
DEFAULT_ALLOW_UIDS: tuple[int, ...] = ()  # besides the daemon's uid and root
DEFAULT_ALLOW_GIDS: tuple[int, ...] = ()  # besides the daemon's groups
DEFAULT_MAX_CLIENTS = 10_000
DEFAULT_MAX_BULK_BYTES = 512 * MiB
DEFAULT_MAX_ARGS = 1_048_576
DEFAULT_MAX_INLINE_BYTES = 64 * KiB
DEFAULT_MAX_PENDING_BYTES = 64 * MiB
DEFAULT_PUBSUB_OUTPUT_HARD_BYTES = 32 * MiB  # Redis's client-output-buffer-limit pubsub 32mb 8mb 60
DEFAULT_PUBSUB_OUTPUT_SOFT_BYTES = 8 * MiB
DEFAULT_PUBSUB_OUTPUT_SOFT_SECONDS = 60.0
DEFAULT_DATABASES = 16  # Redis's default (the engine's own default is the same)
MAX_DATABASES = 1024  # each database costs every buffer layer an empty table; Redis setups use a few dozen at most
DEFAULT_PASSWORD = ""  # "" = no password: peer credentials alone admit a client (as Redis without requirepass)
DEFAULT_DATA_DIR = ""  # "" -> default_data_dir() at load time
DEFAULT_FSYNC = "everysec"
DEFAULT_RECOVERY = "tolerate-tail"
DEFAULT_WAL_SEGMENT_BYTES = 64 * MiB
DEFAULT_WAL_COMPRESS_MIN_BYTES = 1 * KiB  # 0 = never compress
DEFAULT_FLUSH_MAX_RECORDS = 100_000
DEFAULT_FLUSH_MAX_BYTES = 64 * MiB
DEFAULT_FLUSH_MAX_AGE_SECONDS = 5.0
DEFAULT_BUFFER_MAX_BYTES = 512 * MiB
DEFAULT_WRITE_TIMEOUT_SECONDS = 5.0
DEFAULT_LOG_LEVEL = "info"
DEFAULT_COMPACT_SCHEDULE = "every 1h"
DEFAULT_COMPACT_WAL_TRUNCATE_BYTES = 64 * MiB
DEFAULT_BACKUP_SCHEDULE = "every 6h"
DEFAULT_BACKUP_DIR = ""  # "" -> <data_dir>/backups at load time
DEFAULT_BACKUP_KEEP_LAST = 4
DEFAULT_BACKUP_KEEP_DAILY = 7
DEFAULT_BACKUP_KEEP_WEEKLY = 4
DEFAULT_BACKUP_AGE_RECIPIENTS: tuple[str, ...] = ()  # () = backups are not encrypted
DEFAULT_WATCHDOG_SAMPLE_SECONDS = 5.0
DEFAULT_WATCHDOG_SOFT_LIMIT: float | int = 0.5  # a fraction of the memory available to memd
DEFAULT_WATCHDOG_HARD_LIMIT: float | int = 0.7
DEFAULT_MEMORY_MAX_VALUE_BYTES = 1 * MiB
DEFAULT_MEMORY_HISTORY_VERSIONS = 10
DEFAULT_MEMORY_VECTOR_MAX_BYTES = 1 * GiB  # ~650,000 vectors of 384 dimensions (float32 plus the ANN's copy)
DEFAULT_MEMORY_HISTORY_MAX_AGE_SECONDS = 90 * 24 * 3600.0
DEFAULT_CACHE_MAX_BYTES = 64 * MiB  # the read cache of stored rows (memd.store.readcache); 0 = off
DEFAULT_METRICS_TEXTFILE = ""  # "" = no textfile (MEMD.METRICS still works)
DEFAULT_METRICS_SCHEDULE = "every 15s"
FSYNC_POLICIES = ("always", "everysec", "no")
RECOVERY_MODES = ("tolerate-tail", "absolute", "skip-corrupt")
LOG_LEVELS = ("debug", "info", "warning", "error")
SYSTEM_SOCKET_PATH = "/run/memd/memd.sock"
MAX_SOCKET_PATH_BYTES = 107  # sizeof(sun_path) - 1 on Linux
FLAGS = "<command line>"  # the ConfigError path for overrides

_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
          "kib": KiB, "mib": MiB, "gib": GiB, "tib": TiB}
_SIZE_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)", re.IGNORECASE)


def _show(value: object) -> str:
    """Render a bad value the way the operator wrote it (TOML-ish), for messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _toml_str(value)
    return repr(value)


def _toml_str(text: str) -> str:
    """A TOML basic string; json.dumps would emit surrogate escapes TOML rejects."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _is_int(value: object) -> bool:
    """TOML ``true`` is a Python int; it must never pass for a number."""
    return isinstance(value, int) and not isinstance(value, bool)


def parse_size(value: object, *, path: str = "<value>", key: str = "size") -> int:
    """Bytes from an int or a string such as ``"64MiB"``, ``"1.5 GiB"``, ``"10KB"``.

    KB/MB/GB/TB are powers of 1000, KiB..TiB powers of 1024 (units are
    case-insensitive). Redis-style bare ``k``/``m``/``g`` are refused because
    Redis itself reads ``1kb`` as 1024: better an error than a guess. Fractions
    of a byte are dropped (sizes are limits, not addresses).
    """
    if _is_int(value):
        if value < 0:  # type: ignore[operator]
            raise ConfigError(path, key, f"must not be negative (got {value})")
        return value  # type: ignore[return-value]
    if isinstance(value, str):
        m = _SIZE_RE.fullmatch(value.strip())
        if m and m.group(2).lower() in _UNITS:
            return int(Decimal(m.group(1)) * _UNITS[m.group(2).lower()])
    raise ConfigError(path, key, "must be a size: bytes as an integer, or a string like "
                      f'"64MiB" (units B, KB, MB, GB, TB, KiB, MiB, GiB, TiB) (got {_show(value)})')


def _render_size(n: int) -> str:
    """The largest binary unit that divides ``n`` exactly, so ``config show`` is readable."""
    for name, unit in (("TiB", TiB), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n and n % unit == 0:
            return f'"{n // unit}{name}"'
    return str(n)


@dataclass(frozen=True, slots=True)
class NamespaceRule:
    """Who may read and write the memories under one namespace prefix ([[memory.access]]).

    Writers may also read. The rule with the longest prefix covering a
    namespace governs it; namespaces no rule covers are open to every peer
    the socket admits. The daemon's own uid and root are never restricted.
    """

    prefix: str
    read_uids: tuple[int, ...] = ()
    read_gids: tuple[int, ...] = ()
    write_uids: tuple[int, ...] = ()
    write_gids: tuple[int, ...] = ()


_RULE_IDS = ("read_uids", "read_gids", "write_uids", "write_gids")


@dataclass(frozen=True, slots=True)
class _Kind:
    """How one key is parsed, rendered into TOML, and shown by ``CONFIG GET``."""

    name: str  # str | path | choice | int | size | number | mode | ids | rules | schedule | memlimit | recipients
    # | secret
    minimum: float = 0
    strict_min: bool = False
    maximum: float = math.inf
    choices: tuple[str, ...] = ()

    def parse(self, value: object, path: str, key: str) -> Any:
        """Validate ``value`` for ``key``; the error text says what is allowed."""
        def bad(allowed: str) -> ConfigError:
            return ConfigError(path, key, f"must be {allowed} (got {_show(value)})")

        n = self.name
        if n in ("str", "path", "choice"):
            if not isinstance(value, str) or "\0" in value:
                raise bad("a string")
            if n == "choice" and value not in self.choices:
                raise bad("one of " + ", ".join(self.choices))
            return value
        if n == "mode":
            if not isinstance(value, str) or not re.fullmatch(r"0?[0-7]{3}", value):
                raise bad('an octal mode string such as "0660" (0000..0777)')
            return int(value, 8)
        if n == "ids":
            if not isinstance(value, (list, tuple)) or not all(_is_int(v) and v >= 0 for v in value):
                raise bad("a list of non-negative integer ids, e.g. [1001, 1002]")
            return tuple(value)
        if n == "schedule":
            if not isinstance(value, str):
                raise bad('a schedule: "every 30m" (s, m, h or d), a 5-field cron line such as "0 3 * * *", '
                          'or "" (off)')
            return parse_schedule(value, path, key)
        if n == "memlimit":
            return parse_memlimit(value, path, key)
        if n == "secret":  # never echoed, not even in an error: it may be the password itself
            if not isinstance(value, str) or "\0" in value or "\n" in value or "\r" in value:
                raise ConfigError(path, key, f"must be a string on one line (got a {type(value).__name__} or a "
                                  "string with a newline or NUL; the value is not shown)")
            return value
        if n == "recipients":  # the value is not echoed: it may hold a pasted secret key
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                raise ConfigError(path, key, 'must be a list of age public keys such as ["age1..."] '
                                  f"([] = backups are not encrypted) (got a {type(value).__name__})")
            return tuple(parse_age_recipient(v, path, f"{key}[{i}]") for i, v in enumerate(value))
        if n == "rules":
            if not isinstance(value, (list, tuple)):
                raise bad('a list of tables such as [{prefix = "user-42", write_uids = [1001]}]')
            return tuple(_parse_rule(rule, path, f"{key}[{i}]") for i, rule in enumerate(value))
        limit = f"{'>' if self.strict_min else '>='} {self.minimum:g}"
        if n == "size":
            size = parse_size(value, path=path, key=key)
            if size < self.minimum:
                raise bad("at least " + _render_size(int(self.minimum)).strip('"'))
            return size
        if n == "int":
            if not _is_int(value) or value < self.minimum:  # type: ignore[operator]
                raise bad(f"an integer {limit}")
            if value > self.maximum:  # type: ignore[operator]
                raise bad(f"an integer <= {self.maximum:g}")
            return value
        ok = (_is_int(value) or isinstance(value, float)) and math.isfinite(value)  # type: ignore[arg-type]
        if not ok or (value <= self.minimum if self.strict_min else value < self.minimum):  # type: ignore[operator]
            raise bad(f"a number {limit}")
        return float(value)  # type: ignore[arg-type]

    def toml(self, value: Any) -> str:
        """A TOML literal that parses back to ``value``."""
        if self.name == "mode":
            return f'"{value:04o}"'
        if self.name == "size":
            return _render_size(value)
        if self.name == "ids":
            return "[" + ", ".join(map(str, value)) + "]"
        if self.name == "rules":
            return "[" + ", ".join(_render_rule(r) for r in value) + "]"
        if self.name == "recipients":
            return "[" + ", ".join(map(_toml_str, value)) + "]"
        if self.name == "memlimit":
            return f'"{value * 100:g}%"' if isinstance(value, float) else _render_size(value)
        return _toml_str(value) if isinstance(value, str) else repr(value)

    def text(self, value: Any) -> str:
        """The string ``CONFIG GET`` replies with (Redis shows bytes as plain integers)."""
        if self.name == "secret":  # CONFIG GET says whether one is set, never what it is
            return "(set)" if value else ""
        if self.name == "mode":
            return f"{value:04o}"
        if self.name in ("ids", "recipients"):
            return " ".join(map(str, value))
        if self.name == "rules":
            return "; ".join(_render_rule(r)[1:-1] for r in value)
        if self.name == "memlimit" and isinstance(value, float):
            return f"{value * 100:g}%"
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value)


_EVERY_RE = re.compile(r"every\s+(\d+(?:\.\d+)?)\s*([smhd])", re.IGNORECASE)
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_schedule(value: str, path: str = "<value>", key: str = "schedule") -> str:
    """Validate ``"every 30m"``, a 5-field cron line, or "" (off); return it normalized."""
    text = " ".join(value.split())
    if not text or schedule_seconds(text) is not None:
        return text
    if len(text.split()) == 5:
        from apscheduler.triggers.cron import CronTrigger  # noqa: PLC0415 - only to validate cron lines
        try:
            CronTrigger.from_crontab(text)
            return text
        except ValueError as exc:
            raise ConfigError(path, key, f"is not a valid cron line ({exc}) (got {_show(value)})") from None
    raise ConfigError(path, key, 'must be "every <n><s|m|h|d>" (e.g. "every 30m"), a 5-field cron line '
                      f'(minute hour day month weekday, e.g. "0 3 * * *"), or "" for off (got {_show(value)})')


def schedule_seconds(text: str) -> float | None:
    """The interval of an ``"every ..."`` schedule (> 0), or None for a cron line or ""."""
    m = _EVERY_RE.fullmatch(text.strip())
    if m is None:
        return None
    seconds = float(m.group(1)) * _SECONDS[m.group(2).lower()]
    return seconds if seconds > 0 else None


def parse_memlimit(value: object, path: str = "<value>", key: str = "limit") -> float | int:
    """A size (``"2GiB"``, bytes) or a share of the memory available to memd (``"50%"`` -> 0.5)."""
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            share = float(value.strip()[:-1]) / 100
        except ValueError:
            share = math.nan
        if not 0 < share <= 1:
            raise ConfigError(path, key, f"must be a percentage in (0%, 100%] (got {_show(value)})")
        return share
    size = parse_size(value, path=path, key=key)
    if size <= 0:
        raise ConfigError(path, key, f"must be a size > 0 or a percentage such as \"50%\" (got {_show(value)})")
    return size


def parse_age_recipient(value: str, path: str = "<value>", key: str = "recipient") -> str:
    """An age X25519 public key (``age1...``), normalized; a secret key is refused without being echoed.

    Only public keys belong in memd's config: with them the daemon can
    encrypt a backup but never read one back.
    """
    text = value.strip()
    if "SECRET-KEY-" in text.upper():
        raise ConfigError(path, key, "is an age identity (a secret key): memd must never hold it; put its public key "
                          "here (`age-keygen -y IDENTITY_FILE` prints it) and keep the identity off this host")
    from pyrage import RecipientError, x25519  # noqa: PLC0415 - only configs that encrypt backups need it
    try:
        return str(x25519.Recipient.from_str(text))
    except RecipientError as exc:
        raise ConfigError(path, key, f"must be an age X25519 public key such as \"age1...\" as age-keygen prints "
                          f"it ({exc}) (got {_show(value)})") from None


def _parse_rule(rule: object, path: str, key: str) -> NamespaceRule:
    if not isinstance(rule, dict):
        raise ConfigError(path, key, f"must be a table with prefix and *_uids / *_gids lists (got {_show(rule)})")
    unknown = set(rule) - {"prefix", *_RULE_IDS}
    if unknown:
        raise ConfigError(path, f"{key}.{sorted(unknown)[0]}",
                          f"is not a rule field; known: prefix, {', '.join(_RULE_IDS)}")
    prefix = rule.get("prefix")
    if not isinstance(prefix, str) or not prefix or "" in prefix.split("."):
        raise ConfigError(path, f"{key}.prefix", "must be a namespace such as \"user-42\" or \"team.shared\" "
                          f"(non-empty labels joined by '.') (got {_show(prefix)})")
    ids = {name: _Kind("ids").parse(rule.get(name, []), path, f"{key}.{name}") for name in _RULE_IDS}
    return NamespaceRule(prefix, **ids)


def _render_rule(rule: NamespaceRule) -> str:
    fields = [f"prefix = {_toml_str(rule.prefix)}"] + [
        f"{name} = [{', '.join(map(str, getattr(rule, name)))}]" for name in _RULE_IDS if getattr(rule, name)]
    return "{" + ", ".join(fields) + "}"


def _opt(default: Any, name: str, **kw: Any) -> Any:
    """A dataclass field that carries its own validator, so the schema is written once."""
    return field(default=default, metadata={"kind": _Kind(name, **kw)})


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """The socket and the per-connection limits that stop one client hurting the rest."""

    socket: str = _opt(DEFAULT_SOCKET, "path")
    socket_mode: int = _opt(DEFAULT_SOCKET_MODE, "mode")
    socket_group: str = _opt(DEFAULT_SOCKET_GROUP, "str")
    allow_uids: tuple[int, ...] = _opt(DEFAULT_ALLOW_UIDS, "ids")
    allow_gids: tuple[int, ...] = _opt(DEFAULT_ALLOW_GIDS, "ids")
    max_clients: int = _opt(DEFAULT_MAX_CLIENTS, "int", minimum=1)
    max_bulk_bytes: int = _opt(DEFAULT_MAX_BULK_BYTES, "size", minimum=1)
    max_args: int = _opt(DEFAULT_MAX_ARGS, "int", minimum=1)
    max_inline_bytes: int = _opt(DEFAULT_MAX_INLINE_BYTES, "size", minimum=1)
    max_pending_bytes: int = _opt(DEFAULT_MAX_PENDING_BYTES, "size", minimum=1)
    # a subscriber's unsent output: disconnected at the hard limit, or past the soft one for the seconds (0: off)
    pubsub_output_hard_bytes: int = _opt(DEFAULT_PUBSUB_OUTPUT_HARD_BYTES, "size")
    pubsub_output_soft_bytes: int = _opt(DEFAULT_PUBSUB_OUTPUT_SOFT_BYTES, "size")
    pubsub_output_soft_seconds: float = _opt(DEFAULT_PUBSUB_OUTPUT_SOFT_SECONDS, "number")
    password: str = _opt(DEFAULT_PASSWORD, "secret")  # Redis's requirepass, after the peer-credentials gate
    databases: int = _opt(DEFAULT_DATABASES, "int", minimum=1, maximum=MAX_DATABASES)  # SELECT 0..databases-1
    lua_time_limit_ms: int = _opt(5000, "int", minimum=0)  # Redis's lua-time-limit: past it, -BUSY and SCRIPT KILL


@dataclass(frozen=True, slots=True)
class StorageConfig:
    """Where data lives and how hard the WAL works to keep it (config/memd.toml explains each option)."""

    data_dir: str = _opt(DEFAULT_DATA_DIR, "path")
    fsync: str = _opt(DEFAULT_FSYNC, "choice", choices=FSYNC_POLICIES)
    recovery: str = _opt(DEFAULT_RECOVERY, "choice", choices=RECOVERY_MODES)
    wal_segment_bytes: int = _opt(DEFAULT_WAL_SEGMENT_BYTES, "size", minimum=64 * KiB)
    wal_compress_min_bytes: int = _opt(DEFAULT_WAL_COMPRESS_MIN_BYTES, "size")


@dataclass(frozen=True, slots=True)
class FlushConfig:
    """When the memtable goes to SQLite: whichever limit is reached first."""

    max_records: int = _opt(DEFAULT_FLUSH_MAX_RECORDS, "int", minimum=1)
    max_bytes: int = _opt(DEFAULT_FLUSH_MAX_BYTES, "size", minimum=1)
    max_age_seconds: float = _opt(DEFAULT_FLUSH_MAX_AGE_SECONDS, "number", strict_min=True)


@dataclass(frozen=True, slots=True)
class BackpressureConfig:
    """How much unflushed data writers may pile up, and how long they then wait."""

    buffer_max_bytes: int = _opt(DEFAULT_BUFFER_MAX_BYTES, "size", minimum=1)
    write_timeout_seconds: float = _opt(DEFAULT_WRITE_TIMEOUT_SECONDS, "number")


@dataclass(frozen=True, slots=True)
class LogConfig:
    """Logging; only the level for now."""

    level: str = _opt(DEFAULT_LOG_LEVEL, "choice", choices=LOG_LEVELS)


@dataclass(frozen=True, slots=True)
class CompactionConfig:
    """Scheduled compaction: expired and deleted data out, SQLite's WAL and free pages back."""

    schedule: str = _opt(DEFAULT_COMPACT_SCHEDULE, "schedule")
    wal_truncate_bytes: int = _opt(DEFAULT_COMPACT_WAL_TRUNCATE_BYTES, "size")


@dataclass(frozen=True, slots=True)
class BackupConfig:
    """Scheduled, verified, rotated backups of the SQLite file."""

    schedule: str = _opt(DEFAULT_BACKUP_SCHEDULE, "schedule")
    dir: str = _opt(DEFAULT_BACKUP_DIR, "path")
    keep_last: int = _opt(DEFAULT_BACKUP_KEEP_LAST, "int", minimum=1)
    keep_daily: int = _opt(DEFAULT_BACKUP_KEEP_DAILY, "int", minimum=0)
    keep_weekly: int = _opt(DEFAULT_BACKUP_KEEP_WEEKLY, "int", minimum=0)
    age_recipients: tuple[str, ...] = _opt(DEFAULT_BACKUP_AGE_RECIPIENTS, "recipients")


@dataclass(frozen=True, slots=True)
class WatchdogConfig:
    """The memory-growth watchdog: RSS limits as sizes or shares of the memory memd may use."""

    sample_seconds: float = _opt(DEFAULT_WATCHDOG_SAMPLE_SECONDS, "number", strict_min=True)
    soft_limit: float | int = _opt(DEFAULT_WATCHDOG_SOFT_LIMIT, "memlimit")
    hard_limit: float | int = _opt(DEFAULT_WATCHDOG_HARD_LIMIT, "memlimit")


@dataclass(frozen=True, slots=True)
class MemoryConfig:
    """Agent memories (MEM.*): how big one may be and how much of its history is kept."""

    max_value_bytes: int = _opt(DEFAULT_MEMORY_MAX_VALUE_BYTES, "size", minimum=2)
    history_versions: int = _opt(DEFAULT_MEMORY_HISTORY_VERSIONS, "int", minimum=0)
    history_max_age_seconds: float = _opt(DEFAULT_MEMORY_HISTORY_MAX_AGE_SECONDS, "number")
    vector_max_bytes: int = _opt(DEFAULT_MEMORY_VECTOR_MAX_BYTES, "size")
    access: tuple[NamespaceRule, ...] = _opt((), "rules")


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """The read cache of stored rows: what a read of a key no longer buffered costs (0 bytes: off)."""

    max_bytes: int = _opt(DEFAULT_CACHE_MAX_BYTES, "size")


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """Prometheus metrics for node_exporter's textfile collector (memd opens no network port)."""

    textfile: str = _opt(DEFAULT_METRICS_TEXTFILE, "path")
    schedule: str = _opt(DEFAULT_METRICS_SCHEDULE, "schedule")


@dataclass(frozen=True, slots=True)
class Config:
    """The whole effective configuration; after :func:`load`, paths are concrete."""

    server: ServerConfig = field(default_factory=ServerConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    flush: FlushConfig = field(default_factory=FlushConfig)
    backpressure: BackpressureConfig = field(default_factory=BackpressureConfig)
    log: LogConfig = field(default_factory=LogConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    compaction: CompactionConfig = field(default_factory=CompactionConfig)
    backup: BackupConfig = field(default_factory=BackupConfig)
    watchdog: WatchdogConfig = field(default_factory=WatchdogConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)


_SECTION_TYPES: dict[str, Any] = {s.name: s.default_factory for s in dataclasses.fields(Config)}
_SECTIONS: dict[str, dict[str, _Kind]] = {
    name: {f.name: f.metadata["kind"] for f in dataclasses.fields(cls)}
    for name, cls in _SECTION_TYPES.items()
}
RELOADABLE: frozenset[str] = frozenset(
    [f"flush.{k}" for k in _SECTIONS["flush"]]
    + [f"backpressure.{k}" for k in _SECTIONS["backpressure"]]
    + [f"memory.{k}" for k in _SECTIONS["memory"]]
    + [f"compaction.{k}" for k in _SECTIONS["compaction"]]
    + [f"backup.{k}" for k in _SECTIONS["backup"]]
    + [f"watchdog.{k}" for k in _SECTIONS["watchdog"]]
    + [f"cache.{k}" for k in _SECTIONS["cache"]]
    + [f"metrics.{k}" for k in _SECTIONS["metrics"]]
    + ["log.level", "storage.fsync", "server.allow_uids", "server.allow_gids", "server.password"]
    + [f"server.{k}" for k in ("max_clients", "max_bulk_bytes", "max_args",
                                "max_inline_bytes", "max_pending_bytes", "pubsub_output_hard_bytes",
                                "pubsub_output_soft_bytes", "pubsub_output_soft_seconds")]
)


def _first(env: Mapping[str, str], name: str, *, absolute: bool = False) -> str:
    """First entry of a (systemd: colon-separated) directory variable, or ""."""
    value = env.get(name, "").split(":")[0]
    return "" if absolute and not os.path.isabs(value) else value  # XDG: relative is invalid


def _user_socket_path(env: Mapping[str, str]) -> str:
    runtime = _first(env, "XDG_RUNTIME_DIR", absolute=True)
    if runtime:
        return os.path.join(runtime, "memd", "memd.sock")
    return f"/tmp/memd-{os.getuid()}/memd.sock"


def default_socket_path(env: Mapping[str, str] = os.environ) -> str:
    """The daemon's socket when none is configured: systemd's ``$RUNTIME_DIRECTORY``, else per user."""
    systemd = _first(env, "RUNTIME_DIRECTORY")
    return os.path.join(systemd, "memd.sock") if systemd else _user_socket_path(env)


def default_data_dir(env: Mapping[str, str] = os.environ) -> str:
    """The data directory when none is configured: systemd's ``$STATE_DIRECTORY``, else per user (XDG)."""
    for name, absolute in (("STATE_DIRECTORY", False), ("XDG_DATA_HOME", True)):
        base = _first(env, name, absolute=absolute)
        if base:
            return base if name == "STATE_DIRECTORY" else os.path.join(base, "memd")
    home = env.get("HOME") or os.path.expanduser("~")
    return os.path.join(home, ".local", "share", "memd")


def client_socket_path(env: Mapping[str, str] = os.environ,
                       system_socket: str = SYSTEM_SOCKET_PATH) -> str:
    """Where clients look: ``$MEMD_SOCKET``, the system daemon's socket, the user's.

    ``$RUNTIME_DIRECTORY`` is deliberately ignored: in a client it belongs to
    the client's own unit, not to memd.
    """
    if env.get("MEMD_SOCKET"):
        return env["MEMD_SOCKET"]
    return system_socket if os.path.exists(system_socket) else _user_socket_path(env)


def _unknown(path: str, key: str, known: list[str], what: str) -> ConfigError:
    """An unknown name, with the nearest known one: most unknown keys are typos."""
    hint = [m for k in (key, key.rsplit(".", 1)[-1]) for m in difflib.get_close_matches(k, known, n=1)]
    did = f"did you mean {hint[0]}? " if hint else ""
    return ConfigError(path, key, f"unknown {what}; {did}known: {', '.join(known)}")


def _read(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(path, "<file>", f"cannot read the file: {exc.strerror}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(path, "<syntax>", str(exc)) from exc


def _resolve_paths(values: dict[str, dict[str, Any]], origin: dict[str, str],
                   fpath: str, env: Mapping[str, str]) -> None:
    """Make the paths absolute in place; a relative one in a file is relative to that file.

    The daemon's working directory is an accident of how it was started; the
    config file's location is what the operator looked at when writing it.
    """
    for dotted, default in (("server.socket", default_socket_path),
                            ("storage.data_dir", default_data_dir),
                            ("backup.dir", lambda _: os.path.join(values["storage"]["data_dir"], "backups")),
                            ("metrics.textfile", lambda _: "")):
        section, key = dotted.split(".")
        where = origin.get(dotted, fpath)
        p = os.path.expanduser(values[section].get(key, "")) or default(env)
        if not p:
            continue  # an optional file left empty: off
        if where != FLAGS:
            p = os.path.join(os.path.dirname(os.path.abspath(fpath)), p)
        values[section][key] = p = os.path.abspath(p)
        if key == "socket" and len(os.fsencode(p)) > MAX_SOCKET_PATH_BYTES:
            raise ConfigError(where, dotted, f"must be at most {MAX_SOCKET_PATH_BYTES} bytes, "
                              f"the unix socket path limit (got {len(os.fsencode(p))}: {p})")


def load(path: str | os.PathLike[str] | None = None,
         overrides: Mapping[str, object] | None = None, *,
         env: Mapping[str, str] = os.environ) -> Config:
    """Read ``path`` (None: defaults only), apply ``overrides``, validate, resolve paths.

    Overrides are dotted keys from command-line flags and beat the file. A
    string override for a numeric or list key is read as a TOML value, so a
    generic ``key=value`` flag works (``"100"``, ``"[1001, 1002]"``). Paths:
    see :func:`_resolve_paths`; relative flag paths are relative to the
    current directory. Empty paths take the per-user/systemd defaults from
    ``env`` now, so the result is concrete.
    """
    fpath = os.fspath(path) if path is not None else "<defaults>"
    raw = _read(fpath) if path is not None else {}
    values: dict[str, dict[str, Any]] = {s: {} for s in _SECTIONS}
    origin: dict[str, str] = {}
    for section, table in raw.items():
        if section not in _SECTIONS:
            raise _unknown(fpath, section, list(_SECTIONS), "section")
        if not isinstance(table, dict):
            raise ConfigError(fpath, section, f"must be a table [{section}] (got {_show(table)})")
        for key, value in table.items():
            if key not in _SECTIONS[section]:
                raise _unknown(fpath, f"{section}.{key}", list(_SECTIONS[section]), f"key in [{section}]")
            values[section][key] = _SECTIONS[section][key].parse(value, fpath, f"{section}.{key}")
            origin[f"{section}.{key}"] = fpath
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        if section not in _SECTIONS or key not in _SECTIONS[section]:
            known = [f"{s}.{k}" for s in _SECTIONS for k in _SECTIONS[s]]
            raise _unknown(FLAGS, dotted, known, "key")
        kind = _SECTIONS[section][key]
        if isinstance(value, str) and kind.name in ("int", "number", "ids", "recipients"):
            try:
                value = tomllib.loads(f"v = {value}")["v"]
            except tomllib.TOMLDecodeError:
                pass  # keep the string; parse() reports it with the allowed values
        values[section][key] = kind.parse(value, FLAGS, dotted)
        origin[dotted] = FLAGS
    _resolve_paths(values, origin, fpath, env)
    config = Config(**{s: _SECTION_TYPES[s](**v) for s, v in values.items()})
    wd = config.watchdog
    if type(wd.soft_limit) is type(wd.hard_limit) and wd.soft_limit >= wd.hard_limit:
        where = FLAGS if {"watchdog.soft_limit", "watchdog.hard_limit"} & {k for k, o in origin.items()
                                                                          if o == FLAGS} else fpath
        raise ConfigError(where, "watchdog.soft_limit", f"must be below watchdog.hard_limit "
                          f"({_Kind('memlimit').text(wd.hard_limit)}) (got {_Kind('memlimit').text(wd.soft_limit)})")
    if config.backpressure.buffer_max_bytes < config.flush.max_bytes:
        flagged = {k for k, o in origin.items() if o == FLAGS}
        where = FLAGS if flagged & {"backpressure.buffer_max_bytes", "flush.max_bytes"} else fpath
        raise ConfigError(where, "backpressure.buffer_max_bytes",
                          f"must be at least flush.max_bytes ({config.flush.max_bytes} bytes), or "
                          f"writers would block before a flush is due (got {config.backpressure.buffer_max_bytes})")
    return config


def _flat(config: Config) -> dict[str, tuple[_Kind, Any]]:
    return {f"{s}.{k}": (kind, getattr(getattr(config, s), k))
            for s, keys in _SECTIONS.items() for k, kind in keys.items()}


def to_dict(config: Config) -> dict[str, str]:
    """Flat ``{"storage.fsync": "everysec", ...}`` as strings, for ``CONFIG GET``."""
    return {key: kind.text(value) for key, (kind, value) in _flat(config).items()}


def to_toml(config: Config) -> str:
    """The effective configuration as TOML (``memd config show``); load() reads it back.

    A secret that is set (``[server] password``) is never printed: its line is a comment
    saying so, and what is read back has none (the terminal, a pasted bug report and the
    shell's scrollback are not the 0640 config file).
    """
    lines: list[str] = []
    for section, keys in _SECTIONS.items():
        lines.append(f"{chr(10) if lines else ''}[{section}]")
        for k, kind in keys.items():
            value = getattr(getattr(config, section), k)
            if kind.name == "secret" and value:
                lines.append(f"# {k} is set in the config file (memd never prints it)")
            else:
                lines.append(f"{k} = {kind.toml(value)}")
    return "\n".join(lines) + "\n"


def changes(old: Config, new: Config) -> tuple[dict[str, tuple[Any, Any]], dict[str, tuple[Any, Any]]]:
    """Split what differs into (applied live, needs a restart), keyed by dotted key.

    The reloader applies the first and logs the second, so an edited socket
    path is reported rather than half-applied.
    """
    a, b = _flat(old), _flat(new)
    live: dict[str, tuple[Any, Any]] = {}
    restart: dict[str, tuple[Any, Any]] = {}
    for key, (_, before) in a.items():
        after = b[key][1]
        if before != after:
            (live if key in RELOADABLE else restart)[key] = (before, after)
    return live, restart


def in_force(old: Config, new: Config) -> Config:
    """What a reload puts in force: ``new``, except keys that need a restart keep ``old``'s values."""
    sections = {}
    for name in _SECTIONS:
        before, after = getattr(old, name), getattr(new, name)
        kept = {k: getattr(before, k) for k in _SECTIONS[name] if f"{name}.{k}" not in RELOADABLE}
        sections[name] = dataclasses.replace(after, **kept)
    return Config(**sections)
