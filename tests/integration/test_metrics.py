"""Metrics through a real daemon: MEMD.METRICS moves with traffic; the textfile is rewritten atomically.

The daemon is configured by a TOML file as an operator would: a textfile in
its own directory (node_exporter's textfile directory) rewritten every
second, scheduled compaction and backups off so that only the metrics job
runs. The format itself is checked strictly by tests/unit/test_metrics.py;
here each reading is parsed with the same strict reader.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Iterator

import pytest
import redis

from tests.integration.daemon import Daemon, short_tmpdir
from tests.unit.test_metrics import Parsed, check_exposition


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    base = short_tmpdir()
    os.mkdir(os.path.join(base, "textfile"))
    conf = os.path.join(base, "memd.toml")
    with open(conf, "w") as f:
        f.write('[metrics]\ntextfile = "textfile/memd.prom"\nschedule = "every 1s"\n'
                '[compaction]\nschedule = ""\n[backup]\nschedule = ""\n')
    d = Daemon(config=conf, base=base).start()
    yield d
    d.cleanup()


def scrape(client: redis.Redis) -> dict[str, Parsed]:
    text = client.execute_command("MEMD.METRICS")
    return check_exposition(text if isinstance(text, str) else text.decode())


def value(fams: dict[str, Parsed], name: str, **labels: str) -> float:
    return fams[name].value(**labels)


def hist_count(fams: dict[str, Parsed], name: str) -> float:
    return next(v for s, _, v in fams[name].samples if s == f"{name}_count")


def make_errors(c: redis.Redis) -> None:
    """One WRONGTYPE, two ERR (a bad INCR, an unknown command) and one EXECABORT."""
    c.rpush("list", "x")
    for argv in (("SET", "list", "v", "GET"), ("SET", "n", "abc"), ("INCR", "n"), ("NO.SUCH.COMMAND",)):
        try:
            c.execute_command(*argv)
        except redis.ResponseError:
            pass
    with pytest.raises(redis.ResponseError), c.pipeline(transaction=True) as p:  # queued error, then EXECABORT
        p.set("t", "1").execute_command("NO.SUCH.COMMAND").execute()


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


def leftovers(directory: str) -> set[str]:
    """Files besides memd.prom that stay: a temporary file exists for a moment during each rewrite,
    under a new random name each time, so only a name seen twice, 0.3 s apart, is a leftover."""
    seen = set(os.listdir(directory)) - {"memd.prom"}
    time.sleep(0.3)
    return seen & set(os.listdir(directory))


@pytest.mark.parametrize("protocol", [2, 3])
def test_memd_metrics_counters_move_with_writes_errors_and_flushes(daemon: Daemon, protocol: int) -> None:
    c = redis.Redis(unix_socket_path=daemon.socket, protocol=protocol, decode_responses=protocol == 3)
    before = scrape(c)
    for i in range(20):
        c.set(f"k{i}", "v" * 100)
    make_errors(c)
    assert c.execute_command("WAITAOF", 1, 0, 5000) == [1, 0]  # an fsync, whatever the schedule
    c.execute_command("MEMD.FLUSH")
    after = scrape(c)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("memd_write_commands_total") >= 22  # 20 SETs, RPUSH, SET n (the failed ones logged nothing)
    assert delta("memd_wal_records_total") == delta("memd_write_commands_total")  # no transaction ran
    assert delta("memd_commands_processed_total") >= 27
    assert delta("memd_flushes_total") >= 1 and delta("memd_fsyncs_total") >= 1
    assert delta("memd_error_replies_total", prefix="WRONGTYPE") == 1
    assert delta("memd_error_replies_total", prefix="ERR") >= 2  # INCR, unknown command (+ the queued one)
    assert delta("memd_error_replies_total", prefix="EXECABORT") == 1
    assert value(after, "memd_connections_received_total") >= 1 and value(after, "memd_connected_clients") >= 1
    assert value(after, "memd_flushed_lsn") == value(after, "memd_last_lsn")
    assert value(after, "memd_buffer_bytes") == 0 and value(after, "memd_resident_memory_bytes") > 0
    assert value(after, "memd_fsync_policy", policy="everysec") == 1
    assert value(after, "memd_watchdog_state", state="ok") == 1
    assert value(after, "memd_last_backup_age_seconds") == float("inf")  # no backup yet: an age alert fires
    assert hist_count(after, "memd_flush_duration_seconds") == value(after, "memd_flushes_total")
    assert hist_count(after, "memd_fsync_duration_seconds") == value(after, "memd_fsyncs_total")
    # the same figures as INFO, from the same counters
    info = c.info("everything")
    assert info["errorstat_WRONGTYPE"] == {"count": value(after, "memd_error_replies_total", prefix="WRONGTYPE")}
    assert int(info["memd_flush_count"]) == value(after, "memd_flushes_total")


def test_textfile_appears_is_rewritten_and_never_half_written(daemon: Daemon) -> None:
    path = os.path.join(daemon.base, "textfile", "memd.prom")
    deadline = time.monotonic() + 10
    while not os.path.exists(path):
        assert time.monotonic() < deadline, f"no textfile after 10 s:\n{daemon.log()}"
        time.sleep(0.05)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    first = check_exposition(read(path))

    readings: set[str] = set()  # distinct contents: one per rewrite the reader caught
    stop = threading.Event()

    def reader() -> None:  # node_exporter's view: open and read the file whenever it likes
        while not stop.is_set():
            readings.add(read(path))
            time.sleep(0.0005)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    c = redis.Redis(unix_socket_path=daemon.socket)
    try:
        deadline = time.monotonic() + 15
        while True:  # write while the job rewrites the file, until a rewrite shows the writes
            c.set("k", "v")
            fams = check_exposition(read(path))
            if value(fams, "memd_maintenance_runs_total", job="metrics") >= 3 \
                    and value(fams, "memd_write_commands_total") >= 1:
                break
            assert time.monotonic() < deadline, f"the textfile was not rewritten on schedule:\n{daemon.log()}"
            time.sleep(0.1)
    finally:
        stop.set()
        thread.join(5)
    assert value(fams, "memd_maintenance_runs_total", job="metrics") > value(
        first, "memd_maintenance_runs_total", job="metrics")
    assert len(readings) >= 2, "the reader saw no rewrite"
    for text in readings:
        check_exposition(text)  # every reading is a whole exposition: never empty, never cut short
    assert value(fams, "memd_maintenance_last_success", job="metrics") == 1
    assert not leftovers(os.path.dirname(path)), "temporary files must be renamed or removed"
    info = c.info("maintenance")
    assert info["metrics_schedule"] == "every 1s" and info["metrics_failures"] == 0
