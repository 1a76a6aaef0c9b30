"""``memd top``: a live view of a running daemon, refreshed from ``MEMD.STATS``.

One ``MEMD.STATS`` call per interval (a flat map of every INFO field) is all
it costs the daemon. Rates are derived here from counters between two
samples, because the daemon keeps totals, not rates: writes/s is the growth
of ``memd_last_lsn`` (one LSN per WAL record: a write command, or a whole
MULTI/EXEC), commands/s that of ``total_commands_processed``.

The figures are computed by pure functions (:func:`figures`) so they are
testable without a terminal or a daemon; :func:`run` only samples and draws.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

NA = "—"  # a figure the daemon did not report (an older memd, no watchdog) or that needs two samples


@dataclass(frozen=True, slots=True)
class Sample:
    """One ``MEMD.STATS`` reply and when it was read (monotonic seconds)."""

    stats: Mapping[str, Any]
    at: float


def _num(stats: Mapping[str, Any], key: str) -> float | None:
    """A figure as a number; MEMD.STATS sends non-integers as strings ("0.5")."""
    value = stats.get(key)
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def human_bytes(n: float | None) -> str:
    """Binary units, as the config file writes sizes."""
    if n is None:
        return NA
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def human_age(seconds: float | None) -> str:
    """``-1`` is how INFO says "never"; anything else as the two largest units."""
    if seconds is None:
        return NA
    if seconds < 0:
        return "never"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s // 60 % 60:02d}m"
    return f"{s // 86400}d {s // 3600 % 24:02d}h"


def rate(prev: Sample | None, cur: Sample, key: str) -> float | None:
    """Growth per second of counter ``key`` between two samples; None without a previous one.

    A counter that went down means the daemon restarted between samples: no
    rate rather than a negative one.
    """
    if prev is None or cur.at <= prev.at:
        return None
    before, after = _num(prev.stats, key), _num(cur.stats, key)
    if before is None or after is None or after < before:
        return None
    return (after - before) / (cur.at - prev.at)


def _count(value: float | None) -> str:
    return NA if value is None else f"{value:,.0f}"


def _ms(value: float | None) -> str:
    return NA if value is None else f"{value:.2f} ms"


def _diff(stats: Mapping[str, Any], a: str, b: str) -> float | None:
    x, y = _num(stats, a), _num(stats, b)
    return None if x is None or y is None else max(0.0, x - y)


def _hit_rate(prev: Sample | None, cur: Sample) -> str:
    """The read cache's hits over its lookups between the two samples (since the start without a previous one)."""
    hits, misses = _num(cur.stats, "memd_readcache_hits"), _num(cur.stats, "memd_readcache_misses")
    if hits is None or misses is None:
        return NA
    if prev is not None:
        h0, m0 = _num(prev.stats, "memd_readcache_hits"), _num(prev.stats, "memd_readcache_misses")
        if h0 is not None and m0 is not None and h0 <= hits and m0 <= misses:
            hits, misses = hits - h0, misses - m0
    return NA if hits + misses == 0 else f"{hits / (hits + misses):.1%}"


def _error_suffix(stats: Mapping[str, Any], key: str) -> str:
    text = str(stats.get(key) or "")
    return f"  [bold red]{text}[/]" if text else ""


Row = tuple[str, str, str]  # (area, figure, value); the value may hold rich markup


def figures(cur: Sample, prev: Sample | None) -> list[Row]:
    """Every row of the view, from the newest sample and the one before it."""
    s = cur.stats
    watchdog = str(s.get("memd_watchdog_state") or NA)
    colour = {"ok": "green", "soft": "yellow", "refusing": "bold red", "stuck": "bold red"}.get(watchdog, "")
    return [
        ("throughput", "writes/s (WAL records)", _count(rate(prev, cur, "memd_last_lsn"))),
        ("throughput", "commands/s", _count(rate(prev, cur, "total_commands_processed"))),
        ("buffer", "bytes / keys / records", f"{human_bytes(_num(s, 'memd_buffer_bytes'))} / "
                                             f"{_count(_num(s, 'memd_buffer_keys'))} / "
                                             f"{_count(_num(s, 'memd_buffer_records'))}"),
        ("wal", "bytes / segments", f"{human_bytes(_num(s, 'memd_wal_bytes'))} / "
                                    f"{_count(_num(s, 'memd_wal_segments'))}"
                                    + _error_suffix(s, "memd_wal_error")),
        ("wal", "fsync policy / last fsync", f"{s.get('memd_fsync_policy', NA)} / "
                                             f"{_ms(_num(s, 'memd_last_fsync_ms'))}"),
        ("wal", "not fsynced (last - synced LSN)",
         f"{_count(_diff(s, 'memd_last_lsn', 'memd_synced_lsn'))} records"),
        ("flush", "lag (last - flushed LSN)", f"{_count(_diff(s, 'memd_last_lsn', 'memd_flushed_lsn'))} records"),
        ("flush", "last flush / flushes", f"{_ms(_num(s, 'memd_last_flush_ms'))} / "
                                          f"{_count(_num(s, 'memd_flush_count'))}"
                                          + _error_suffix(s, "memd_flush_error")),
        ("memory", "RSS", human_bytes(_num(s, "used_memory_rss"))),
        ("memory", "read cache hit rate / bytes / rows", f"{_hit_rate(prev, cur)} / "
                                                        f"{human_bytes(_num(s, 'memd_readcache_bytes'))} / "
                                                        f"{_count(_num(s, 'memd_readcache_entries'))}"),
        ("memory", "watchdog", f"[{colour}]{watchdog}[/]" if colour else watchdog),
        ("backup", "last backup age", human_age(_num(s, "memd_last_backup_age_seconds"))),
        ("clients", "connected / max", f"{_count(_num(s, 'connected_clients'))} / "
                                       f"{_count(_num(s, 'maxclients'))}"),
    ]


def title(stats: Mapping[str, Any], socket_path: str) -> str:
    """Which daemon this is: version, socket, pid and uptime."""
    return (f"memd {stats.get('memd_version', '?')} on {stats.get('unix_socket') or socket_path} "
            f"(pid {stats.get('process_id', '?')}, up {human_age(_num(stats, 'uptime_in_seconds'))})")


def render(cur: Sample, prev: Sample | None, socket_path: str) -> Table:
    """One frame: the rows of :func:`figures` under a title naming the daemon."""
    table = Table(title=title(cur.stats, socket_path), title_justify="left", expand=False)
    table.add_column("area", style="bold")
    table.add_column("figure")
    table.add_column("value", justify="right")
    area = None
    for row_area, label, value in figures(cur, prev):
        if area is not None and row_area != area:
            table.add_section()
        table.add_row(row_area if row_area != area else "", label, value)
        area = row_area
    return table


Fetch = Callable[[], Mapping[str, Any]]


def _sample(fetch: Fetch) -> Sample:
    return Sample(fetch(), time.monotonic())


def run(fetch: Fetch, socket_path: str, interval: float, once: bool, console: Console | None = None) -> int:
    """Draw until Ctrl-C (exit 0); ``once``: two samples ``interval`` apart, one frame, exit.

    ``once`` takes two samples so its rates are real, not blank. Errors from
    ``fetch`` (the daemon went away) propagate to the CLI's error handling.
    """
    console = console or Console()
    prev = _sample(fetch)
    try:
        if once:
            time.sleep(interval)
            console.print(render(_sample(fetch), prev, socket_path))
            return 0
        with Live(render(prev, None, socket_path), console=console, auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                cur = _sample(fetch)
                live.update(render(cur, prev, socket_path), refresh=True)
                prev = cur
    except KeyboardInterrupt:
        return 0
