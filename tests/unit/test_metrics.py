"""memd.metrics and memd.histogram: the exposition format, the INFO mapping, the textfile.

Every rendering is checked twice: by :func:`check_exposition`, a strict
reader of the 0.0.4 line format written here (HELP then TYPE once per
family, sample names and label syntax, counters ending in ``_total``, no
duplicate series, histogram buckets cumulative with ``+Inf`` == ``_count``),
and by prometheus_client's own parser, the reference reading of the format.
"""

from __future__ import annotations

import math
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from memd import config as cfg, metrics
from memd.commands import COMMANDS, Context, load_all
from memd.commands.server import metrics_text
from memd.engine.engine import FLUSH_BUCKETS, Engine
from memd.engine.wal import FSYNC_BUCKETS
from memd.errors import CommandError
from memd.histogram import Histogram, latency_buckets
from memd.maintenance import watchdog
from memd.resp import Verbatim

# ---- a strict reader of the text format 0.0.4 ---------------------------------------------

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_HELP_RE = re.compile(rf"# HELP ({_NAME}) ((?:[^\\\n]|\\[\\n])*)\Z")
_TYPE_RE = re.compile(rf"# TYPE ({_NAME}) (counter|gauge|histogram|summary|untyped)\Z")
_SAMPLE_NAME_RE = re.compile(_NAME)
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')
_VALUE_RE = re.compile(r"(?:[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)|[+-]Inf|NaN)\Z")
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


@dataclass
class Parsed:
    """One family as read back: type, HELP (unescaped), samples (name, labels, value)."""

    type: str
    help: str
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)

    def value(self, **labels: str) -> float:
        found = [v for name, lab, v in self.samples if lab == labels and not name.endswith(("_sum", "_count"))]
        assert len(found) == 1, (labels, self.samples)
        return found[0]


def _unescape(text: str) -> str:
    return re.sub(r'\\[\\"n]', lambda m: _UNESCAPE[m.group(0)], text)


def _parse_sample(line: str) -> tuple[str, dict[str, str], float]:
    m = _SAMPLE_NAME_RE.match(line)
    assert m, f"bad sample line {line!r}"
    name, pos, labels = m.group(0), m.end(), {}
    if line[pos:pos + 1] == "{":
        pos += 1
        while line[pos] != "}":
            lm = _LABEL_RE.match(line, pos)
            assert lm, f"bad label at {pos} in {line!r}"
            assert lm.group(1) not in labels and not lm.group(1).startswith("__"), line
            labels[lm.group(1)] = _unescape(lm.group(2))
            pos = lm.end()
            if line[pos] == ",":
                pos += 1
        pos += 1
    assert line[pos:pos + 1] == " ", f"one space before the value: {line!r}"
    value = line[pos + 1:]
    assert _VALUE_RE.match(value), f"bad value (or a timestamp) in {line!r}"
    return name, labels, float(value)


def _check_family(name: str, fam: Parsed) -> None:
    assert fam.samples, f"{name}: HELP and TYPE without samples"
    allowed = {name} if fam.type != "histogram" else {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    series = [(s, tuple(sorted(lab.items()))) for s, lab, _ in fam.samples]
    assert len(set(series)) == len(series), f"{name}: duplicate series"
    for sample, _, value in fam.samples:
        assert sample in allowed, f"{sample} under # TYPE {name}"
        assert fam.type != "counter" or value >= 0
    if fam.type == "counter":
        assert name.endswith("_total"), name
    if fam.type == "histogram":
        _check_histogram(name, fam)


def _check_histogram(name: str, fam: Parsed) -> None:
    """Buckets in increasing ``le``, cumulative, the last ``+Inf`` and equal to ``_count``."""
    buckets = [(float(lab["le"]), v) for s, lab, v in fam.samples if s.endswith("_bucket")]
    bounds, counts = [b for b, _ in buckets], [c for _, c in buckets]
    assert bounds == sorted(bounds) and len(set(bounds)) == len(bounds), name
    assert counts == sorted(counts), f"{name}: buckets must be cumulative"
    assert bounds[-1] == math.inf
    total = [v for s, _, v in fam.samples if s == f"{name}_count"]
    sums = [v for s, _, v in fam.samples if s == f"{name}_sum"]
    assert len(total) == 1 and len(sums) == 1 and counts[-1] == total[0], name


def check_exposition(text: str) -> dict[str, Parsed]:
    """Read ``text`` strictly; return its families. Also parse it with prometheus_client."""
    assert text.endswith("\n") and "\r" not in text and "\n\n" not in text
    families: dict[str, Parsed] = {}
    current: str | None = None
    lines = text[:-1].split("\n")
    i = 0
    while i < len(lines):
        help_m = _HELP_RE.match(lines[i])
        type_m = _TYPE_RE.match(lines[i + 1]) if help_m and i + 1 < len(lines) else None
        if help_m:
            assert type_m and type_m.group(1) == help_m.group(1), f"HELP then TYPE: {lines[i:i + 2]}"
            current = help_m.group(1)
            assert current not in families, f"{current} declared twice"
            families[current] = Parsed(type_m.group(2), _unescape(help_m.group(2)))
            i += 2
            continue
        assert not lines[i].startswith("#"), f"stray comment {lines[i]!r}"
        assert current is not None, "a sample before any TYPE"
        families[current].samples.append(_parse_sample(lines[i]))
        i += 1
    for name, fam in families.items():
        _check_family(name, fam)
    reference = {f.name: f for f in text_string_to_metric_families(text)}
    assert sum(len(f.samples) for f in reference.values()) == sum(len(f.samples) for f in families.values())
    return families


# ---- the histogram ----------------------------------------------------------------------

def test_latency_buckets_are_1_2_5_per_decade() -> None:
    assert latency_buckets(0.001, 1) == (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
    assert FSYNC_BUCKETS[0] == 0.0001 and FSYNC_BUCKETS[-1] == 10.0
    assert FLUSH_BUCKETS[0] == 0.001 and FLUSH_BUCKETS[-1] == 50.0
    with pytest.raises(ValueError):
        latency_buckets(1, 1)


def test_histogram_le_is_inclusive_and_inf_equals_count() -> None:
    h = Histogram.of((0.1, 1.0), [0.05, 0.1, 0.5, 1.0, 7.0])
    assert h.cumulative() == [(0.1, 2), (1.0, 4), (math.inf, 5)]
    assert h.count == 5 and h.sum == pytest.approx(8.65)


@pytest.mark.parametrize("bounds", [(), (1.0, 1.0), (2.0, 1.0), (1.0, math.inf), (math.nan,)])
def test_histogram_refuses_bad_bounds(bounds: tuple[float, ...]) -> None:
    with pytest.raises(ValueError):
        Histogram(bounds)


@given(st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), max_size=50))
def test_histogram_buckets_count_values_at_or_below_their_bound(values: list[float]) -> None:
    h = Histogram.of(FSYNC_BUCKETS, values)
    for bound, n in h.cumulative():
        assert n == sum(1 for v in values if v <= bound)
    fam = check_exposition(metrics.render([metrics.histogram_family("x_seconds", "x", h)]))["x_seconds"]
    assert [v for s, _, v in fam.samples if s == "x_seconds_count"] == [len(values)]


# ---- the format ---------------------------------------------------------------------------

def test_format_value_spells_what_go_parses() -> None:
    assert [metrics.format_value(v) for v in (3, True, 0.5, math.inf, -math.inf, 1e-7)] == [
        "3", "1", "0.5", "+Inf", "-Inf", "1e-07"]
    assert metrics.format_value(math.nan) == "NaN"


def test_label_values_and_help_are_escaped() -> None:
    fam = metrics.Family("memd_x_total", metrics.COUNTER, 'back\\slash "quoted"\nnext line')
    fam.add(1, prefix='a"b\\c\nd')
    text = metrics.render([fam])
    assert text == ('# HELP memd_x_total back\\\\slash "quoted"\\nnext line\n# TYPE memd_x_total counter\n'
                    'memd_x_total{prefix="a\\"b\\\\c\\nd"} 1\n')
    parsed = check_exposition(text)["memd_x_total"]
    assert parsed.help == 'back\\slash "quoted"\nnext line'
    assert parsed.samples == [("memd_x_total", {"prefix": 'a"b\\c\nd'}, 1.0)]


_TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from(["\\", '"', "\n", "}", ",", "="]))


@given(_TEXT, _TEXT)
def test_any_label_value_and_help_round_trip(value: str, help_text: str) -> None:
    text = metrics.render([metrics.Family("memd_g", metrics.GAUGE, help_text).add(2.5, job=value)])
    assert check_exposition(text)["memd_g"].samples == [("memd_g", {"job": value}, 2.5)]
    reference = next(text_string_to_metric_families(text))
    assert reference.samples[0].labels == {"job": value}


@pytest.mark.parametrize(("name", "kind", "label"), [
    ("9memd", metrics.GAUGE, "ok"), ("memd-x", metrics.GAUGE, "ok"), ("memd_x", "summary", "ok"),
    ("memd_x", metrics.GAUGE, "__reserved"), ("memd_x", metrics.GAUGE, "bad-label")])
def test_names_are_checked(name: str, kind: str, label: str) -> None:
    with pytest.raises(ValueError):
        metrics.Family(name, kind, "h").add(1, **{label: "v"})


def test_families_without_samples_are_left_out() -> None:
    assert metrics.render([metrics.Family("memd_empty", metrics.GAUGE, "nothing yet")]) == ""


# ---- from INFO's figures ---------------------------------------------------------------

INFO: dict[str, dict[str, Any]] = {
    "server": {"memd_version": "0.1.0", "uptime_in_seconds": 12, "memd_config_reloads": 2,
               "memd_config_last_reload_ok": 0, "process_id": 77},
    "clients": {"connected_clients": 3, "maxclients": 10000},
    "memory": {"used_memory_rss": 50_000_000, "memd_watchdog_state": "refusing", "memd_watchdog_episodes": 1,
               "memd_watchdog_refusals": 1, "memd_watchdog_soft_limit_bytes": 100,
               "memd_watchdog_hard_limit_bytes": 200},
    "persistence": {"memd_fsync_policy": "always", "memd_last_lsn": 42, "memd_flushed_lsn": 40, "memd_synced_lsn": 42,
                    "memd_buffer_keys": 2, "memd_buffer_bytes": 300, "memd_buffer_records": 2, "memd_wal_segments": 1,
                    "memd_wal_bytes": 900, "memd_wal_records": 42, "memd_wal_write_failures": 1,
                    "memd_flush_count": 4, "memd_flush_error": "StoreError: disk I/O error", "memd_flush_failures": 3,
                    "memd_fsync_count": 9, "memd_wal_error": "", "memd_last_flush_ms": 2.5,
                    "memd_last_backup_age_seconds": -1},
    "stats": {"total_connections_received": 5, "total_commands_processed": 99, "memd_write_commands": 40},
    "errorstats": {"errorstat_WRONGTYPE": "count=2", "errorstat_CUSTOM": "count=1"},
    "maintenance": {"backup_schedule": "every 6h", "backup_runs": 3, "backup_failures": 1, "backup_running": 0,
                    "backup_last_run": "2024-01-02T03:04:05Z", "backup_last_seconds": 1.5, "backup_last_ok": 1,
                    "compact_schedule": "off", "compact_runs": 0, "compact_failures": 0, "compact_running": 0,
                    "compact_last_run": "", "compact_last_seconds": 0.0, "compact_last_ok": ""},
}


def _collect(info: dict[str, dict[str, Any]] = INFO) -> dict[str, Parsed]:
    hists = {"fsync": Histogram.of(FSYNC_BUCKETS, [0.001, 0.002]), "flush": Histogram.of(FLUSH_BUCKETS, [0.3])}
    return check_exposition(metrics.render(metrics.collect(info, hists)))


def test_counters_and_gauges_come_from_info_fields() -> None:
    fams = _collect()
    assert fams["memd_write_commands_total"].value() == 40 and fams["memd_wal_records_total"].value() == 42
    assert fams["memd_flushes_total"].value() == 4 and fams["memd_fsyncs_total"].value() == 9
    assert fams["memd_commands_processed_total"].value() == 99
    assert fams["memd_connections_received_total"].value() == 5
    assert fams["memd_errors_total"].value(kind="flush") == 3 and fams["memd_errors_total"].value(kind="wal_write") == 1
    assert fams["memd_buffer_bytes"].value() == 300 and fams["memd_wal_segments"].value() == 1
    assert (fams["memd_last_lsn"].value(), fams["memd_synced_lsn"].value(), fams["memd_flushed_lsn"].value()) == (
        42, 42, 40)
    assert fams["memd_resident_memory_bytes"].value() == 50_000_000
    assert fams["memd_connected_clients"].value() == 3
    assert fams["memd_flush_failing"].value() == 1 and fams["memd_wal_failing"].value() == 0
    assert fams["memd_last_flush_duration_seconds"].value() == 0.0025
    assert fams["memd_config_last_reload_success"].value() == 0 and fams["memd_config_reloads_total"].value() == 2
    assert fams["memd_build_info"].value(version="0.1.0") == 1
    assert fams["memd_fsync_policy"].value(policy="always") == 1
    assert "process_id" not in str(fams)  # not every INFO field is a metric


def test_no_backup_yet_is_an_infinite_age() -> None:
    assert _collect()["memd_last_backup_age_seconds"].value() == math.inf
    info = {**INFO, "persistence": {"memd_last_backup_age_seconds": 60}}
    assert _collect(info)["memd_last_backup_age_seconds"].value() == 60


def test_error_replies_by_prefix_start_at_zero() -> None:
    fam = _collect()["memd_error_replies_total"]
    assert fam.value(prefix="WRONGTYPE") == 2 and fam.value(prefix="CUSTOM") == 1
    assert all(fam.value(prefix=p) == 0 for p in ("ERR", "OOM", "NOPERM", "MISCONF", "EXECABORT"))


def test_every_error_prefix_memd_uses_is_known() -> None:
    """A prefix missing from the list would appear only at its first error, which rate() cannot see."""
    load_all()
    source = "".join(p.read_text() for p in Path(metrics.__file__).parent.rglob("*.py"))
    used = set(re.findall(r'prefix(?: = |=)"([A-Z]+)"', source))
    assert used and used <= set(metrics.KNOWN_ERROR_PREFIXES)
    assert CommandError("x").prefix in metrics.KNOWN_ERROR_PREFIXES


def test_watchdog_state_is_one_of_all_states() -> None:
    assert metrics.WATCHDOG_STATES == (watchdog.OK, watchdog.SOFT, watchdog.REFUSING, watchdog.STUCK)
    fam = _collect()["memd_watchdog_state"]
    assert {lab["state"]: v for _, lab, v in fam.samples} == {"ok": 0, "soft": 0, "refusing": 1, "stuck": 0}


def test_maintenance_jobs_are_labelled() -> None:
    fams = _collect()
    assert fams["memd_maintenance_runs_total"].value(job="backup") == 3
    assert fams["memd_maintenance_runs_total"].value(job="compact") == 0
    assert fams["memd_maintenance_failures_total"].value(job="backup") == 1
    assert fams["memd_maintenance_last_duration_seconds"].value(job="backup") == 1.5
    assert fams["memd_maintenance_last_run_timestamp_seconds"].value(job="backup") == 1704164645
    # a job that never ran has no last success and no last run time (not a misleading 0)
    assert [lab for _, lab, _ in fams["memd_maintenance_last_success"].samples] == [{"job": "backup"}]
    assert [lab for _, lab, _ in fams["memd_maintenance_last_run_timestamp_seconds"].samples] == [{"job": "backup"}]


def test_histograms_are_rendered_cumulatively() -> None:
    fam = _collect()["memd_fsync_duration_seconds"]
    assert fam.type == "histogram"
    buckets = {lab["le"]: v for s, lab, v in fam.samples if s.endswith("_bucket")}
    assert buckets["0.001"] == 1 and buckets["0.0025"] == 2 and buckets["+Inf"] == 2


def test_missing_sections_give_no_samples() -> None:
    fams = check_exposition(metrics.render(metrics.collect({})))
    assert "memd_flushes_total" not in fams and "memd_watchdog_state" not in fams
    assert fams["memd_error_replies_total"].value(prefix="ERR") == 0  # known prefixes start at 0 anyway


# ---- from a real engine -----------------------------------------------------------------

@pytest.mark.anyio
async def test_metrics_of_a_real_engine_move_with_writes_and_flushes(tmp_path: Path) -> None:
    load_all()
    async with Engine(str(tmp_path / "data"), fsync="always", flush_max_age=3600.0) as engine:
        ctx = Context(engine=engine)
        before = check_exposition(metrics_text(ctx))
        for i in range(5):
            engine.keyspace.set(b"k%d" % i, b"v" * 10)
            await engine.wait_durable()
        with engine.batch():
            engine.keyspace.set(b"a", b"1")
            engine.keyspace.set(b"b", b"2")
        mid = check_exposition(metrics_text(ctx))
        assert mid["memd_wal_records_total"].value() == before["memd_wal_records_total"].value() + 6
        assert mid["memd_buffer_keys"].value() == 7 and mid["memd_buffer_bytes"].value() > 0
        await engine.flush()
        after = check_exposition(metrics_text(ctx))
    assert after["memd_flushes_total"].value() == before["memd_flushes_total"].value() + 1
    assert after["memd_buffer_bytes"].value() == 0 and after["memd_flushed_lsn"].value() == 6
    for name, counter in (("memd_fsync_duration_seconds", "memd_fsyncs_total"),
                          ("memd_flush_duration_seconds", "memd_flushes_total")):
        count = [v for s, _, v in after[name].samples if s.endswith("_count")]
        assert count == [after[counter].value()] and count[0] >= 1, name  # one observation per event


@pytest.mark.anyio
async def test_memd_metrics_replies_like_info(tmp_path: Path) -> None:
    load_all()
    async with Engine(str(tmp_path / "data")) as engine:
        handler = COMMANDS[b"memd.metrics"].handler
        resp2 = handler(Context(engine=engine), [])
        resp3 = handler(Context(engine=engine, protocol=3), [])
    assert isinstance(resp2, bytes) and resp2.startswith(b"# HELP memd_")
    assert isinstance(resp3, Verbatim) and resp3.fmt == "txt"
    check_exposition(resp2.decode())


# ---- the textfile -------------------------------------------------------------------------

def test_textfile_is_replaced_whole_and_readable_by_others(tmp_path: Path) -> None:
    path = tmp_path / "memd.prom"
    path.write_text("old\n")
    with open(path) as old_reader:
        metrics.write_textfile(str(path), "new 1\n")
        assert old_reader.read() == "old\n"  # a reader of the old file is never handed a mix
    assert path.read_text() == "new 1\n"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert os.listdir(tmp_path) == ["memd.prom"]  # no temporary file left behind


def test_textfile_failure_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "memd.prom"
    target.mkdir()  # rename onto a directory fails after the temporary file was written
    with pytest.raises(OSError):
        metrics.write_textfile(str(target), "x 1\n")
    assert os.listdir(tmp_path) == ["memd.prom"]
    with pytest.raises(FileNotFoundError):
        metrics.write_textfile(str(tmp_path / "missing" / "memd.prom"), "x 1\n")


# ---- the [metrics] config section ----------------------------------------------------------

def test_metrics_config_defaults_paths_and_errors(tmp_path: Path) -> None:
    from memd.daemon import _metrics_schedule  # noqa: PLC0415 - the daemon's rule for when the job runs

    default = cfg.load(None)
    assert default.metrics == cfg.MetricsConfig("", "every 15s") and _metrics_schedule(default) == ""
    conf = tmp_path / "memd.toml"
    conf.write_text('[metrics]\ntextfile = "prom/memd.prom"\nschedule = "every 1s"\n')
    loaded = cfg.load(conf)
    assert loaded.metrics.textfile == str(tmp_path / "prom" / "memd.prom")  # relative to the config file
    assert _metrics_schedule(loaded) == "every 1s"
    assert {"metrics.textfile", "metrics.schedule"} <= cfg.RELOADABLE
    conf.write_text('[metrics]\nschedule = "sometimes"\n')
    with pytest.raises(cfg.ConfigError) as info:
        cfg.load(conf)
    assert info.value.key == "metrics.schedule"
