"""Prometheus text exposition (format 0.0.4) of memd's figures, without opening a port.

memd listens on a Unix socket only, so there is no ``/metrics`` endpoint:
``MEMD.METRICS`` returns this text, and the daemon's ``metrics`` job rewrites
``[metrics] textfile`` for node_exporter's textfile collector.

One source of truth: every figure here is read from INFO's sections
(``memd.commands.server.info_sections``, which already merges the daemon's
providers: maintenance, watchdog, backup age, config reload) plus the two
latency histograms the engine records. This module only *maps* those onto
metric families (the tables below) and renders text; it counts nothing
itself, so INFO and the metrics cannot disagree. It imports nothing from
memd's layers, so both the command layer and the daemon may use it.

Naming follows Prometheus practice: ``memd_`` prefix, base units in the name
(``_seconds``, ``_bytes``), counters end in ``_total``, string states become
a label on a gauge of 1 (``memd_fsync_policy{policy="always"} 1``).
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from memd.histogram import Histogram

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"
Info = Mapping[str, Mapping[str, Any]]

_NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")

# Error prefixes memd replies with, exported at 0 before the first one happens: a counter that
# appears only at its first increment hides that increment from rate() and increase().
KNOWN_ERROR_PREFIXES = ("ERR", "WRONGTYPE", "OOM", "BUSY", "NOPERM", "MISCONF", "EXECABORT", "NOPROTO",
                        "NOAUTH", "WRONGPASS", "NOSCRIPT", "NOTBUSY", "UNKILLABLE", "UNBLOCKED")
# The memory watchdog's states (memd.maintenance.watchdog: OK, SOFT, REFUSING, STUCK); a unit test
# pins them, since importing the watchdog here would tie the command layer to maintenance.
WATCHDOG_STATES = ("ok", "soft", "refusing", "stuck")


# ---- the exposition format --------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Sample:
    """One line: full sample name (``_bucket`` etc. included), labels, value."""

    name: str
    labels: tuple[tuple[str, str], ...]
    value: float


@dataclass(slots=True)
class Family:
    """A metric family: its HELP and TYPE lines and its samples, rendered together."""

    name: str
    type: str
    help: str
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not _valid_name(self.name) or self.type not in (COUNTER, GAUGE, HISTOGRAM):
            raise ValueError(f"bad metric family {self.name!r} of type {self.type!r}")

    def add(self, value: float, suffix: str = "", **labels: str) -> Family:
        """Append a sample named ``name + suffix``; label names are checked, values escaped on render."""
        for key in labels:
            if not _valid_label(key):
                raise ValueError(f"bad label name {key!r}")
        self.samples.append(Sample(self.name + suffix, tuple(labels.items()), value))
        return self


# names come from a fixed set of code constants: check each once, not on every scrape
@functools.lru_cache(maxsize=1024)
def _valid_name(name: str) -> bool:
    return bool(_NAME_RE.match(name))


@functools.lru_cache(maxsize=1024)
def _valid_label(name: str) -> bool:
    return bool(_LABEL_RE.match(name)) and not name.startswith("__")


@functools.lru_cache(maxsize=64)
def _le_values(bounds: tuple[float, ...]) -> tuple[str, ...]:
    """The ``le`` label values of a histogram's buckets, +Inf last (the same few tuples every scrape)."""
    return (*(format_value(b) for b in bounds), "+Inf")


def escape_label_value(value: str) -> str:
    """Backslash, double quote and line feed escaped, as the 0.0.4 format requires in label values."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    """HELP text escapes only backslash and line feed (a quote is literal there)."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """Go's ParseFloat spellings: integers plainly, ``+Inf``/``-Inf``/``NaN``, floats by repr."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _render_sample(sample: Sample) -> str:
    if not sample.labels:
        return f"{sample.name} {format_value(sample.value)}"
    labels = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in sample.labels)
    return f"{sample.name}{{{labels}}} {format_value(sample.value)}"


def render(families: Iterable[Family]) -> str:
    """The exposition text; families without samples are left out (nothing to say yet)."""
    lines: list[str] = []
    for fam in families:
        if not fam.samples:
            continue
        lines.append(f"# HELP {fam.name} {escape_help(fam.help)}")
        lines.append(f"# TYPE {fam.name} {fam.type}")
        lines.extend(_render_sample(s) for s in fam.samples)
    return "\n".join(lines) + "\n" if lines else ""


def histogram_family(name: str, help_text: str, hist: Histogram) -> Family:
    """Cumulative ``_bucket{le}`` samples ending at ``+Inf`` (== ``_count``), then ``_sum`` and ``_count``."""
    fam = Family(name, HISTOGRAM, help_text)
    for le, (_, n) in zip(_le_values(hist.bounds), hist.cumulative(), strict=True):
        fam.add(n, "_bucket", le=le)
    return fam.add(hist.sum, "_sum").add(hist.count, "_count")


# ---- from INFO's figures to families -------------------------------------------------------

def _number(value: Any) -> float | None:
    """INFO fields are ints, floats or strings; "" means "not known yet" and gives no sample."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return value
    try:
        return float(value) if value != "" else None
    except (TypeError, ValueError):
        return None


def _failing(value: Any) -> float:
    """An error text field ("" when healthy) as 0/1, which an alert rule can test."""
    return 1 if value else 0


def _age(value: Any) -> float | None:
    """INFO says -1 for "no backup yet"; +Inf makes ``age > threshold`` alerts fire for that too."""
    n = _number(value)
    return math.inf if n is not None and n < 0 else n


def _iso_seconds(text: Any) -> float | None:
    """INFO maintenance's ``2025-01-02T03:04:05Z`` as Unix seconds ("" = never ran)."""
    if not text:
        return None
    return datetime.strptime(str(text), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def _ms(value: Any) -> float | None:
    n = _number(value)
    return None if n is None else n / 1000


@dataclass(frozen=True, slots=True)
class FromInfo:
    """One INFO field -> one unlabelled sample (or a labelled one of a shared family)."""

    section: str
    field: str
    name: str
    type: str
    help: str
    convert: Callable[[Any], float | None] = _number
    labels: tuple[tuple[str, str], ...] = ()


_P = "persistence"
FIELDS: tuple[FromInfo, ...] = (
    FromInfo("server", "uptime_in_seconds", "memd_uptime_seconds", GAUGE, "Seconds since the daemon started."),
    FromInfo("stats", "total_commands_processed", "memd_commands_processed_total", COUNTER,
             "Commands processed: each one of a pipeline counts, and MULTI, each queued command and EXEC."),
    FromInfo("stats", "memd_write_commands", "memd_write_commands_total", COUNTER,
             "Write commands that logged a WAL record (EXEC counts once)."),
    FromInfo(_P, "memd_wal_records", "memd_wal_records_total", COUNTER,
             "WAL records appended since the start (a MULTI/EXEC transaction is one record)."),
    FromInfo(_P, "memd_flush_count", "memd_flushes_total", COUNTER, "Flushes of the buffer to SQLite."),
    FromInfo(_P, "memd_fsync_count", "memd_fsyncs_total", COUNTER,
             "WAL sync passes (write + fdatasync; one per group commit)."),
    FromInfo("stats", "total_connections_received", "memd_connections_received_total", COUNTER,
             "Client connections accepted."),
    FromInfo(_P, "memd_flush_failures", "memd_errors_total", COUNTER,
             "Internal failures by kind: flush (retried, the WAL keeps every write), wal_write (a failed "
             "WAL write: writes are refused until a retry succeeds).", labels=(("kind", "flush"),)),
    FromInfo(_P, "memd_wal_write_failures", "memd_errors_total", COUNTER, "", labels=(("kind", "wal_write"),)),
    FromInfo("clients", "connected_clients", "memd_connected_clients", GAUGE, "Clients connected now."),
    FromInfo("clients", "maxclients", "memd_max_clients", GAUGE,
             "server.max_clients: connections beyond it are refused."),
    FromInfo("memory", "used_memory_rss", "memd_resident_memory_bytes", GAUGE, "Resident set size of the daemon."),
    FromInfo(_P, "memd_buffer_bytes", "memd_buffer_bytes", GAUGE,
             "Key and value bytes buffered in memory, not yet flushed to SQLite."),
    FromInfo(_P, "memd_readcache_bytes", "memd_readcache_bytes", GAUGE,
             "What the read cache of stored rows holds, as Python objects cost (cache.max_bytes bounds it)."),
    FromInfo(_P, "memd_readcache_entries", "memd_readcache_entries", GAUGE, "Rows in the read cache."),
    FromInfo(_P, "memd_readcache_hits", "memd_readcache_hits_total", COUNTER,
             "Reads of stored rows the read cache answered."),
    FromInfo(_P, "memd_readcache_misses", "memd_readcache_misses_total", COUNTER,
             "Reads of stored rows the read cache did not hold (the store answered)."),
    FromInfo(_P, "memd_readcache_evictions", "memd_readcache_evictions_total", COUNTER,
             "Rows the read cache let go to stay within its bound."),
    FromInfo(_P, "memd_buffer_keys", "memd_buffer_keys", GAUGE, "Keys with unflushed changes in the buffer."),
    FromInfo(_P, "memd_buffer_records", "memd_buffer_records", GAUGE, "WAL records in the buffer, not yet flushed."),
    FromInfo(_P, "memd_wal_bytes", "memd_wal_bytes", GAUGE, "Bytes in the WAL's segments (written or pending)."),
    FromInfo(_P, "memd_wal_segments", "memd_wal_segments", GAUGE, "WAL segment files not yet deleted by a flush."),
    FromInfo(_P, "memd_last_lsn", "memd_last_lsn", GAUGE, "LSN of the newest WAL record."),
    FromInfo(_P, "memd_synced_lsn", "memd_synced_lsn", GAUGE, "Highest LSN covered by an fsync."),
    FromInfo(_P, "memd_flushed_lsn", "memd_flushed_lsn", GAUGE,
             "Highest LSN committed to SQLite; last minus flushed is the flush lag in records."),
    FromInfo(_P, "memd_flush_error", "memd_flush_failing", GAUGE,
             "1 while the last flush failed (INFO memd_flush_error says why).", _failing),
    FromInfo(_P, "memd_wal_error", "memd_wal_failing", GAUGE,
             "1 while the WAL refuses writes (INFO memd_wal_error says why).", _failing),
    FromInfo(_P, "memd_recovered_records", "memd_recovered_records", GAUGE, "WAL records replayed at the last start."),
    FromInfo(_P, "memd_recovery_seconds", "memd_recovery_duration_seconds", GAUGE,
             "How long the last start's recovery took."),
    FromInfo(_P, "memd_last_flush_ms", "memd_last_flush_duration_seconds", GAUGE, "Duration of the latest flush.", _ms),
    FromInfo(_P, "memd_last_backup_age_seconds", "memd_last_backup_age_seconds", GAUGE,
             "Age of the newest verified backup; +Inf when there is none.", _age),
    FromInfo("server", "memd_config_reloads", "memd_config_reloads_total", COUNTER, "Config reloads applied."),
    FromInfo("server", "memd_config_last_reload_ok", "memd_config_last_reload_success", GAUGE,
             "0 when the last config reload was refused: the file on disk is not the config in force."),
    FromInfo("memory", "memd_watchdog_soft_limit_bytes", "memd_watchdog_soft_limit_bytes", GAUGE,
             "RSS above which the watchdog flushes early and drops caches."),
    FromInfo("memory", "memd_watchdog_hard_limit_bytes", "memd_watchdog_hard_limit_bytes", GAUGE,
             "RSS above which the watchdog refuses writes."),
    FromInfo("memory", "memd_watchdog_episodes", "memd_watchdog_episodes_total", COUNTER,
             "Times RSS went over the watchdog's soft limit."),
    FromInfo("memory", "memd_watchdog_refusals", "memd_watchdog_refusals_total", COUNTER,
             "Times the watchdog started refusing writes."),
)

# INFO's string states, as a gauge of 1 carrying the state in a label
STATES: tuple[tuple[str, str, str, str, str], ...] = (
    ("server", "memd_version", "memd_build_info", "version", "memd's version (the value is always 1)."),
    (_P, "memd_fsync_policy", "memd_fsync_policy", "policy", "storage.fsync in force (the value is always 1)."),
)

HISTOGRAMS: dict[str, tuple[str, str]] = {
    "fsync": ("memd_fsync_duration_seconds",
              "WAL sync passes: write() of pending records and fdatasync, one per group commit."),
    "flush": ("memd_flush_duration_seconds", "Flushes of a frozen buffer to SQLite, one transaction each."),
    "loop_lag": ("memd_loop_lag_seconds", "How late the event loop ran a 50 ms timer: every client waited as "
                 "long (a stall of the loop)."),
}

_MAINTENANCE: tuple[tuple[str, str, str, str, Callable[[Any], float | None]], ...] = (
    ("runs", "memd_maintenance_runs_total", COUNTER, "Maintenance job runs, scheduled or on request.", _number),
    ("failures", "memd_maintenance_failures_total", COUNTER, "Maintenance job runs that failed.", _number),
    ("running", "memd_maintenance_running", GAUGE, "1 while the job runs.", _number),
    ("last_ok", "memd_maintenance_last_success", GAUGE, "1 if the job's last run succeeded, 0 if it failed.",
     _number),
    ("last_seconds", "memd_maintenance_last_duration_seconds", GAUGE, "Duration of the job's last run.", _number),
    ("last_run", "memd_maintenance_last_run_timestamp_seconds", GAUGE, "Unix time the job's last run started.",
     _iso_seconds),
)


def _families_from_fields(info: Info) -> list[Family]:
    """The table-driven part: :data:`FIELDS` (several may share a labelled family) and :data:`STATES`."""
    families: dict[str, Family] = {}
    for spec in FIELDS:
        fam = families.get(spec.name)
        if fam is None:
            fam = families[spec.name] = Family(spec.name, spec.type, spec.help)
        raw = info.get(spec.section, {}).get(spec.field)
        value = None if raw is None else spec.convert(raw)
        if value is not None:
            fam.add(value, **dict(spec.labels))
    for section, key, name, label, help_text in STATES:
        fam = families[name] = Family(name, GAUGE, help_text)
        raw = info.get(section, {}).get(key)
        if raw is not None:
            fam.add(1, **{label: str(raw)})
    return list(families.values())


def _watchdog_family(info: Info) -> Family:
    """Every known state with 0 and the current one with 1, so a state change is a value change."""
    fam = Family("memd_watchdog_state", GAUGE, "The memory watchdog's state (1 for the current one): ok, soft "
                 "(flushing early), refusing (writes get -OOM), stuck (refusing and nothing left to flush).")
    state = info.get("memory", {}).get("memd_watchdog_state")
    if state is None:
        return fam
    for name in (*WATCHDOG_STATES, *([str(state)] if state not in WATCHDOG_STATES else [])):
        fam.add(1 if name == state else 0, state=name)
    return fam


def _error_reply_family(info: Info) -> Family:
    """INFO errorstats (``errorstat_ERR:count=3``, as Redis writes it) by RESP error prefix."""
    counts = dict.fromkeys(KNOWN_ERROR_PREFIXES, 0)
    for key, raw in info.get("errorstats", {}).items():
        if key.startswith("errorstat_") and str(raw).startswith("count="):
            counts[key[len("errorstat_"):]] = int(str(raw).split(",")[0][len("count="):])
    fam = Family("memd_error_replies_total", COUNTER,
                 "Error replies sent, by RESP error prefix (ERR, WRONGTYPE, OOM...).")
    for prefix, n in counts.items():
        fam.add(n, prefix=prefix)
    return fam


def _maintenance_families(info: Info) -> list[Family]:
    """Per-job figures of INFO maintenance (``<job>_runs`` ...), with the job as a label."""
    fields = info.get("maintenance", {})
    jobs = [k[: -len("_schedule")] for k in fields if k.endswith("_schedule")]
    out = []
    for suffix, name, kind, help_text, convert in _MAINTENANCE:
        fam = Family(name, kind, help_text)
        for job in jobs:
            value = convert(fields.get(f"{job}_{suffix}", ""))
            if value is not None:
                fam.add(value, job=job)
        out.append(fam)
    return out


def collect(info: Info, histograms: Mapping[str, Histogram] | None = None) -> list[Family]:
    """Every family, from INFO's sections and the engine's histograms (keys of :data:`HISTOGRAMS`)."""
    families = _families_from_fields(info)
    families += [_watchdog_family(info), _error_reply_family(info), *_maintenance_families(info)]
    for key, hist in (histograms or {}).items():
        name, help_text = HISTOGRAMS[key]
        families.append(histogram_family(name, help_text, hist))
    return families


# ---- the textfile ------------------------------------------------------------------------

def write_textfile(path: str, text: str) -> None:
    """Replace ``path`` with ``text`` so that no reader ever sees half of it.

    The temporary file is in the same directory (a rename is atomic only
    within one file system) and does not end in ``.prom``, so the collector
    never reads it; it is fsynced before the rename, so after a crash the
    name holds the old or the new text, never a prefix; and it is made 0644
    because node_exporter runs as another user. The directory is not
    fsynced: losing the newest rename in a power cut costs one stale scrape.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode())
            f.flush()
            os.fchmod(f.fileno(), 0o644)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


__all__ = ["CONTENT_TYPE", "Family", "collect", "escape_help", "escape_label_value", "format_value",
           "histogram_family", "render", "write_textfile"]
