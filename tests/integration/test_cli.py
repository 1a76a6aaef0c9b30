"""The operator CLI against a real daemon: `memd compact`, `memd top`, `memd bench`, and how they fail.

Every command runs as ``python -m memd`` in a subprocess, so exit codes,
stdout and stderr are what an operator gets.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from memd.client import SyncClient
from tests.integration.daemon import ROOT, Daemon, short_tmpdir

pytestmark = pytest.mark.timeout(120)
ENV = {**os.environ, "COLUMNS": "120"}  # rich's width when stdout is not a terminal


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    d = Daemon(fsync="everysec").start()
    try:
        yield d
    finally:
        d.cleanup()


def memd(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "memd", *args], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def ok(run: subprocess.CompletedProcess[str]) -> str:
    assert run.returncode == 0, (run.returncode, run.stdout, run.stderr)
    assert "Traceback" not in run.stderr
    return run.stdout


def one_clean_line(run: subprocess.CompletedProcess[str], prefix: str) -> str:
    assert run.returncode == 2, (run.returncode, run.stdout, run.stderr)
    assert "Traceback" not in run.stderr
    assert run.stderr.count("\n") == 1 and run.stderr.startswith(prefix), run.stderr
    return run.stderr


# --- memd compact ------------------------------------------------------------------------------

def _compact_figure(out: str, label: str) -> str:
    m = re.search(rf"^\s+{re.escape(label)}\s+(\S.*)$", out, re.MULTILINE)
    assert m, (label, out)
    return m.group(1)


def test_compact_reports_what_it_removed(daemon: Daemon) -> None:
    c = SyncClient(daemon.socket, socket_timeout=30)
    try:
        for i in range(25):
            c.set(f"short:{i}", "x", px=100)
        c.set("kept", "y")
        c.memd_flush()  # compaction skips keys still in the buffer: put them in SQLite first
        time.sleep(0.3)
        out = ok(memd("compact", "--socket", daemon.socket))
        assert out.startswith("memd compact: done in ")
        assert _compact_figure(out, "expired keys purged") == "25"
        assert _compact_figure(out, "expired memories archived") == "0"
        assert _compact_figure(out, "SQLite WAL checkpoint") in ("passive", "truncate", "busy")
        assert re.search(r"database files\s+[\d,]+ -> [\d,]+ bytes \([\d,]+ returned\)", out), out
        assert c.get("kept") == b"y"
        again = ok(memd("compact", "--socket", daemon.socket))
        assert _compact_figure(again, "expired keys purged") == "0"
    finally:
        c.close()


# --- memd top ----------------------------------------------------------------------------------

def _top_value(out: str, label: str) -> str:
    line = next((line for line in out.splitlines() if label in line), None)
    assert line is not None, (label, out)
    return line.rsplit("│", 2)[-2].strip()


def test_top_once_shows_live_figures(daemon: Daemon) -> None:
    stop = threading.Event()

    def write() -> None:
        c = SyncClient(daemon.socket, socket_timeout=30)
        try:
            i = 0
            while not stop.is_set():
                c.set(f"top:{i % 100}", "v" * 50)
                i += 1
                writing.set()
        finally:
            c.close()

    writing = threading.Event()
    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        assert writing.wait(10), "the writer thread never wrote"
        out = ok(memd("top", "--once", "--interval", "0.5", "--socket", daemon.socket))
    finally:
        stop.set()
        writer.join(10)
    assert f"on {daemon.socket}" in out
    assert int(_top_value(out, "writes/s (WAL records)").replace(",", "")) > 0
    assert int(_top_value(out, "commands/s").replace(",", "")) > 0
    assert int(_top_value(out, "connected / max").split(" / ")[0]) >= 2  # top itself and the writer
    assert re.fullmatch(r"[\d.]+ (B|KiB|MiB|GiB)", _top_value(out, "RSS"))
    assert _top_value(out, "last backup age") == "never"
    assert _top_value(out, "watchdog") == "ok"
    assert re.fullmatch(r"[\d,]+ records", _top_value(out, "lag (last - flushed LSN)"))
    for label in ("bytes / keys / records", "bytes / segments", "last flush / flushes"):
        assert _top_value(out, label) != "—", label


def test_top_runs_until_ctrl_c_and_exits_0(daemon: Daemon) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "memd", "top", "--interval", "0.2", "--socket", daemon.socket],
                            cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    c = SyncClient(daemon.socket, socket_timeout=30)
    try:
        # Ctrl-C once top is sampling (its connection is up and its INFO calls come in), not while
        # it is still importing: on a loaded machine that takes more than any fixed sleep
        deadline = time.monotonic() + 60
        while len(c.client_list()) < 2:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "memd top never connected"
            time.sleep(0.05)
        base, mine = c.info("stats")["total_commands_processed"], 0
        while c.info("stats")["total_commands_processed"] - base - (mine := mine + 1) < 3:  # 3 of top's samples
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "memd top connected but does not sample"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        c.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "writes/s" in out


# --- memd bench --------------------------------------------------------------------------------

def parse_bench(out: str) -> dict[str, float]:
    """Throughput and percentiles from `memd bench`'s output, as an operator's script would read them."""
    m = re.search(r"^throughput: ([\d,.]+) requests/s \((\d+) requests in ([\d.]+) s\)$", out, re.MULTILINE)
    assert m, out
    figures = {"throughput": float(m.group(1).replace(",", "")), "requests": float(m.group(2)),
               "seconds": float(m.group(3))}
    for name in ("p50", "p90", "p99", "max"):
        p = re.search(rf"^latency {name}: ([\d.]+) ms$", out, re.MULTILINE)
        assert p, (name, out)
        figures[name] = float(p.group(1))
    return figures


def test_bench_prints_throughput_and_percentiles(daemon: Daemon) -> None:
    out = ok(memd("bench", "--requests", "2000", "--clients", "8", "--keys", "500", "--socket", daemon.socket))
    f = parse_bench(out)
    assert f["requests"] == 2000 and f["throughput"] > 0 and f["seconds"] > 0
    assert abs(f["throughput"] - 2000 / f["seconds"]) / f["throughput"] < 0.05  # rounding of the printed seconds
    assert 0 < f["p50"] <= f["p90"] <= f["p99"] <= f["max"]
    assert "measured at the client" in out and "SET, 2000 requests over 8 connection(s)" in out
    c = SyncClient(daemon.socket, socket_timeout=30)
    try:
        written = list(c.scan_iter(match="memd-bench:*", count=1000))
        assert 0 < len(written) <= 500  # random keys among --keys
    finally:
        c.close()


@pytest.mark.parametrize("extra", [["--command", "get", "--pipeline", "8"], ["--command", "mem.put"],
                                   ["--clients", "1", "--pipeline", "16", "--value-size", "1000"]])
def test_bench_commands_and_pipelines(daemon: Daemon, extra: list[str]) -> None:
    f = parse_bench(ok(memd("bench", "--requests", "600", "--keys", "100", *extra, "--socket", daemon.socket)))
    assert f["requests"] == 600 and 0 < f["p50"] <= f["max"]


def test_bench_error_reply_stops_with_one_line() -> None:
    base = short_tmpdir("memd-cli-")
    config = os.path.join(base, "memd.toml")
    with open(config, "w") as fh:
        fh.write('[memory]\nmax_value_bytes = "1KiB"\n')
    d = Daemon(config=config, base=base).start()
    try:
        err = one_clean_line(memd("bench", "--command", "mem.put", "--value-size", "4096", "--requests", "50",
                                  "--socket", d.socket), "memd bench: ")
        assert "the daemon replied with an error: " in err and "max_value_bytes" in err
    finally:
        d.cleanup()


# --- a daemon that went away -----------------------------------------------------------------

def test_commands_after_the_daemon_died() -> None:
    d = Daemon().start()
    try:
        assert d.proc is not None
        d.proc.send_signal(signal.SIGKILL)  # leaves the socket file behind: a stale socket
        d.proc.wait(10)
        assert os.path.exists(d.socket)
        for command in (["compact"], ["top", "--once", "--interval", "0.1"], ["bench", "--requests", "10"]):
            err = one_clean_line(memd(*command, "--socket", d.socket), f"memd {command[0]}: ")
            assert f"no daemon answers on {d.socket}: connection refused" in err
        os.unlink(d.socket)
        err = one_clean_line(memd("compact", "--socket", d.socket), "memd compact: ")
        assert "no such socket" in err
    finally:
        d.cleanup()


def test_first_start_says_where_things_are_and_how_to_try_it_once() -> None:
    d = Daemon()
    try:
        d.start()
        assert d.stop() == 0
        d.start()
        assert d.stop() == 0
        hints = [line for line in d.log().splitlines() if line.startswith("memd: first start:")]
        assert hints == [f"memd: first start: data in {d.data_dir}, socket {d.socket}; "
                         f"try it: redis-cli -s {d.socket} PING"], d.log()
        d.start()  # and the command it gives works as printed
        out = subprocess.run(hints[0].split("try it: ")[1].split(), capture_output=True, text=True, timeout=10)
        assert out.stdout.strip() == "PONG", out
    finally:
        d.cleanup()
