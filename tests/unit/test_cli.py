"""The operator CLI without a daemon: argument parsing, error mapping, config check/show, top and bench maths.

The commands run as subprocesses (``python -m memd``) where exit codes and
stderr matter, so what is checked is what an operator sees.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import hiredis
import pytest
import redis

from memd import bench, cli, top
from memd import config as cfg
from memd.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = {**os.environ, "XDG_RUNTIME_DIR": "/run/user/4242", "XDG_DATA_HOME": "/home/u/.data", "HOME": "/home/u"}
for _name in ("RUNTIME_DIRECTORY", "STATE_DIRECTORY", "MEMD_SOCKET"):
    ENV.pop(_name, None)


def memd(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "memd", *args], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def one_clean_line(run: subprocess.CompletedProcess[str], prefix: str) -> str:
    """The contract for every expected failure: exit 2, exactly one stderr line, no traceback."""
    assert run.returncode == 2, (run.returncode, run.stdout, run.stderr)
    assert "Traceback" not in run.stderr
    assert run.stderr.count("\n") == 1 and run.stderr.startswith(prefix), run.stderr
    return run.stderr


# --- argument parsing --------------------------------------------------------------------------

def parse(*argv: str) -> object:
    return cli.build_parser().parse_args(argv)


def test_new_subcommands_parse_with_defaults() -> None:
    a = parse("bench")
    assert (a.requests, a.clients, a.pipeline, a.value_size, a.keys, a.command_, a.socket) == \
        (100_000, 50, 1, 200, 10_000, "set", None)
    a = parse("bench", "--requests", "5", "--clients", "2", "--pipeline", "16", "--value-size", "10", "--keys",
              "3", "--command", "mem.put", "--socket", "/tmp/s")
    assert (a.requests, a.clients, a.pipeline, a.value_size, a.keys, a.command_, a.socket) == \
        (5, 2, 16, 10, 3, "mem.put", "/tmp/s")
    a = parse("top", "--once", "--interval", "0.25")
    assert a.once and a.interval == 0.25 and a.socket is None
    assert parse("top").interval == 1.0 and not parse("top").once
    a = parse("compact", "--socket", "/tmp/s")
    assert a.socket == "/tmp/s" and a.timeout == 3600.0
    assert parse("config", "check", "f.toml").file == "f.toml"
    a = parse("config", "show", "--config", "c.toml", "--socket", "s", "--data-dir", "d", "--fsync", "always")
    assert (a.config, a.socket, a.data_dir, a.fsync) == ("c.toml", "s", "d", "always")


def test_serve_keeps_its_flags() -> None:
    a = parse("serve", "--config", "c.toml", "--socket", "s", "--data-dir", "d", "--fsync", "no")
    assert (a.config, a.socket, a.data_dir, a.fsync) == ("c.toml", "s", "d", "no")
    assert cli._overrides(a) == {"server.socket": "s", "storage.data_dir": "d", "storage.fsync": "no"}
    assert cli._overrides(parse("serve")) == {}


@pytest.mark.parametrize("argv", [
    ["bench", "--clients", "0"], ["bench", "--requests", "-1"], ["bench", "--pipeline", "x"],
    ["bench", "--command", "del"], ["top", "--interval", "0"], ["config"], ["config", "check"],
    ["config", "show", "--fsync", "sometimes"], ["compact", "--timeout", "0"],
])
def test_bad_arguments_are_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.build_parser().parse_args(argv)
    assert exc.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


# --- error mapping -------------------------------------------------------------------------------

def _conn_error(text: str, cause: OSError | None) -> redis.exceptions.ConnectionError:
    """A ConnectionError shaped like redis-py's: the OSError is its context."""
    try:
        try:
            if cause is not None:
                raise cause
            raise redis.exceptions.ConnectionError(text)
        except OSError:
            raise redis.exceptions.ConnectionError(text) from None
    except redis.exceptions.ConnectionError as exc:
        if cause is not None:
            exc.__context__ = cause
        return exc


@pytest.mark.parametrize(("exc", "expected"), [
    (_conn_error("Error 2 connecting to /s. No such file or directory.", FileNotFoundError(errno.ENOENT, "x")),
     "no daemon answers on /s: no such socket"),
    (_conn_error("Error 111 connecting to /s. Connection refused.", None), "no daemon answers on /s: connection "
     "refused"),
    (_conn_error("Error 13 connecting to /s. Permission denied.", PermissionError(errno.EACCES, "x")),
     "permission denied on /s"),
    (_conn_error("Error 13 connecting to /s. Permission denied.", None), "permission denied on /s"),
    (_conn_error("Error 20 connecting to /s. Not a directory.", None), "no daemon answers on /s: a component"),
    (_conn_error("Error AF_UNIX path too long connecting to /s.", None), "bad socket path /s"),
    (_conn_error("Connection closed by server.", None), "lost the connection to /s"),
    (redis.exceptions.TimeoutError("Timeout reading from socket"), "no reply from /s in time"),
    (redis.exceptions.ResponseError("unknown command 'MEMD.COMPACT'"), "the daemon replied with an error: "
     "unknown command"),
    (redis.exceptions.NoPermissionError("this user (uid 7) may not use memd"), "the daemon replied with an error"),
    (ConfigError("/etc/memd/memd.toml", "storage.fsync", "must be one of ..."), "/etc/memd/memd.toml: "
     "storage.fsync: must be one of"),
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "/nope"), "No such file or directory: /nope"),
])
def test_expected_failures_become_one_sentence(exc: BaseException, expected: str) -> None:
    message = cli.describe_error(exc, "/s")
    assert message is not None and message.startswith(expected), message


def test_bugs_keep_their_traceback() -> None:
    assert cli.describe_error(ZeroDivisionError("x"), "/s") is None
    assert cli.describe_error(KeyError("x")) is None


@pytest.mark.parametrize("command", [["info"], ["compact"], ["top", "--once", "--interval", "0.1"],
                                     ["bench", "--requests", "10"], ["backup"]])
def test_no_daemon_is_one_line(command: list[str]) -> None:
    err = one_clean_line(memd(*command, "--socket", "/tmp/nonexistent.sock"), f"memd {command[0]}: ")
    assert "no daemon answers on /tmp/nonexistent.sock" in err


def test_not_a_socket_and_bad_paths_are_one_line(tmp_path: Path) -> None:
    plain = tmp_path / "file"
    plain.write_text("")
    err = one_clean_line(memd("compact", "--socket", str(plain)), "memd compact: ")
    assert "connection refused" in err
    err = one_clean_line(memd("top", "--once", "--socket", str(plain / "below")), "memd top: ")
    assert "not a directory" in err
    err = one_clean_line(memd("bench", "--socket", "/tmp/" + "x" * 200), "memd bench: ")
    assert "bad socket path" in err


@pytest.fixture
def erring_server() -> Iterator[str]:
    """A stand-in daemon that answers every command with -ERR, to see a real error reply end to end."""
    base = tempfile.mkdtemp(prefix="memd-cli-", dir="/tmp")  # AF_UNIX paths must stay short
    path = os.path.join(base, "err.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(8)
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve_one(conn: socket.socket) -> None:
        reader = hiredis.Reader()
        with conn, contextlib.suppress(OSError):  # the CLI may hang up after its first error reply
            while data := conn.recv(65536):
                reader.feed(data)
                while (cmd := reader.gets()) is not False:
                    if cmd[0].upper() == b"HELLO":  # the handshake succeeds, as memd's does (redis-py >= 8.2
                        # would otherwise fall back to RESP2 with a warning on stderr)
                        conn.sendall(b"%2\r\n$6\r\nserver\r\n$4\r\nmemd\r\n$5\r\nproto\r\n:3\r\n")
                    else:
                        conn.sendall(b"-ERR unknown command '" + cmd[0] + b"'\r\n")

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=serve_one, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield path
    finally:
        stop.set()
        thread.join(5)
        listener.close()
        os.unlink(path)
        os.rmdir(base)


@pytest.mark.parametrize("command", [["compact"], ["top", "--once", "--interval", "0.1"],
                                     ["bench", "--requests", "5", "--clients", "2"]])
def test_error_reply_is_one_line(erring_server: str, command: list[str]) -> None:
    err = one_clean_line(memd(*command, "--socket", erring_server), f"memd {command[0]}: ")
    assert "the daemon replied with an error: unknown command" in err


# --- config check / show -------------------------------------------------------------------------

def test_config_check_good_file(tmp_path: Path) -> None:
    good = tmp_path / "memd.toml"
    good.write_text('[storage]\nfsync = "always"\n[flush]\nmax_age_seconds = 2\n')
    run = memd("config", "check", str(good))
    assert run.returncode == 0, run.stderr
    assert run.stdout == f"memd config check: {good}: ok\n" and run.stderr == ""


def test_config_check_shipped_file() -> None:
    run = memd("config", "check", os.path.join(ROOT, "config", "memd.toml"))
    assert run.returncode == 0, run.stderr


@pytest.mark.parametrize(("text", "key"), [
    ('[storage]\nfsnyc = "always"\n', "storage.fsnyc"),
    ('[storage]\nfsync = "sometimes"\n', "storage.fsync"),
    ("[flush]\nmax_records = 0\n", "flush.max_records"),
    ("[nope]\n", "nope"),
    ("[storage\n", "<syntax>"),
])
def test_config_check_bad_file_names_file_and_key(tmp_path: Path, text: str, key: str) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    err = one_clean_line(memd("config", "check", str(bad)), "memd config check: ")
    assert f"{bad}: {key}: " in err


def test_config_check_missing_file_is_one_line(tmp_path: Path) -> None:
    err = one_clean_line(memd("config", "check", str(tmp_path / "absent.toml")), "memd config check: ")
    assert str(tmp_path / "absent.toml") in err and "cannot read the file" in err


def _load_in(env: dict[str, str], path: Path, overrides: dict[str, object] | None = None) -> cfg.Config:
    return cfg.load(path, overrides, env=env)


def test_config_show_round_trips_defaults(tmp_path: Path) -> None:
    run = memd("config", "show")
    assert run.returncode == 0, run.stderr
    out = tmp_path / "shown.toml"
    out.write_text(run.stdout)
    assert _load_in(ENV, out) == cfg.load(None, env=ENV)
    assert "[storage]" in run.stdout and 'fsync = "everysec"' in run.stdout


def test_config_show_round_trips_file_and_flags(tmp_path: Path) -> None:
    src = tmp_path / "memd.toml"
    src.write_text('[storage]\nfsync = "always"\ndata_dir = "data"\n[flush]\nmax_bytes = "32MiB"\n'
                   '[memory]\nhistory_versions = 3\n[[memory.access]]\nprefix = "team"\nread_uids = [1001]\n')
    run = memd("config", "show", "--config", str(src), "--fsync", "no", "--socket", str(tmp_path / "m.sock"))
    assert run.returncode == 0, run.stderr
    out = tmp_path / "shown.toml"
    out.write_text(run.stdout)
    shown = _load_in(ENV, out)
    expected = _load_in(ENV, src, {"storage.fsync": "no", "server.socket": str(tmp_path / "m.sock")})
    assert shown == expected
    assert shown.storage.fsync == "no" and shown.storage.data_dir == str(tmp_path / "data")
    assert shown.flush.max_bytes == 32 * 2**20 and shown.memory.history_versions == 3


def test_config_show_never_prints_the_password(tmp_path: Path) -> None:
    src = tmp_path / "memd.toml"
    src.write_text('[server]\npassword = "pw-Zq81-never-shown"\n')
    run = memd("config", "show", "--config", str(src))
    assert run.returncode == 0, run.stderr
    assert "pw-Zq81" not in run.stdout and "# password is set" in run.stdout
    out = tmp_path / "shown.toml"
    out.write_text(run.stdout)
    assert _load_in(ENV, out).server.password == ""  # what is read back holds no secret


def test_config_show_bad_config_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[backup]\nkeep_last = 0\n")
    err = one_clean_line(memd("config", "show", "--config", str(bad)), "memd config show: ")
    assert f"{bad}: backup.keep_last: " in err


def test_config_show_into_a_closed_pipe_is_quiet() -> None:
    proc = subprocess.Popen(f"{sys.executable} -m memd config show | head -1", shell=True, cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=30)
    assert out == "[server]\n" and "Traceback" not in err


# --- compact's rendering ---------------------------------------------------------------------------

def test_format_compaction_resp2_and_resp3_shapes() -> None:
    reply = {b"expired_keys": 3, b"expired_memories": 1, b"tombstones": 0, b"history_pruned": 7,
             b"checkpoint": b"truncate", b"free_pages": 12, b"bytes_before": 98304, b"bytes_after": 49152,
             b"bytes_returned": 49152, b"seconds": 0.25, b"something_new": 5}
    lines = cli.format_compaction(reply)
    assert lines[0] == "memd compact: done in 0.25 s"
    text = "\n".join(lines)
    for label, value in (("expired keys purged", "3"), ("expired memories archived", "1"),
                         ("history versions pruned", "7"), ("SQLite WAL checkpoint", "truncate"),
                         ("something new", "5")):
        assert any(line.split() and label in line and line.endswith(value) for line in lines), (label, text)
    assert "98,304 -> 49,152 bytes (49,152 returned)" in text
    flat = [x for kv in reply.items() for x in kv]
    assert cli.format_compaction(flat) == lines


# --- top: the figures ------------------------------------------------------------------------------

STATS = {"memd_version": "0.1.0", "unix_socket": "/tmp/m.sock", "process_id": 7, "uptime_in_seconds": 3725,
         "memd_last_lsn": 1000, "memd_flushed_lsn": 400, "memd_synced_lsn": 990, "total_commands_processed": 5000,
         "memd_buffer_bytes": 3 * 2**20, "memd_buffer_keys": 120, "memd_buffer_records": 600,
         "memd_wal_bytes": 2048, "memd_wal_segments": 2, "memd_wal_error": "", "memd_fsync_policy": "everysec",
         "memd_last_fsync_ms": "0.42", "memd_last_flush_ms": "12.5", "memd_flush_count": 9, "memd_flush_error": "",
         "used_memory_rss": 50 * 2**20, "memd_watchdog_state": "soft", "memd_last_backup_age_seconds": 4000,
         "connected_clients": 3, "maxclients": 10000}


def _rows(cur: top.Sample, prev: top.Sample | None) -> dict[str, str]:
    return {label: value for _, label, value in top.figures(cur, prev)}


def test_top_rates_and_figures() -> None:
    prev = top.Sample(STATS, 100.0)
    cur = top.Sample({**STATS, "memd_last_lsn": 1500, "total_commands_processed": 6000}, 102.0)
    rows = _rows(cur, prev)
    assert rows["writes/s (WAL records)"] == "250" and rows["commands/s"] == "500"
    assert rows["lag (last - flushed LSN)"] == "1,100 records"
    assert rows["not fsynced (last - synced LSN)"] == "510 records"
    assert rows["bytes / keys / records"] == "3.0 MiB / 120 / 600"
    assert rows["bytes / segments"] == "2.0 KiB / 2"
    assert rows["last flush / flushes"] == "12.50 ms / 9"
    assert rows["RSS"] == "50.0 MiB" and "soft" in rows["watchdog"]
    assert rows["last backup age"] == "1h 06m" and rows["connected / max"] == "3 / 10,000"
    assert "up 1h 02m" in top.title(STATS, "/x") and "/tmp/m.sock" in top.title(STATS, "/x")


def test_top_read_cache_hit_rate_over_the_interval() -> None:
    cache = {"memd_readcache_hits": 900, "memd_readcache_misses": 100, "memd_readcache_bytes": 2 * 2**20,
             "memd_readcache_entries": 5000}
    prev = top.Sample({**STATS, **cache}, 1.0)
    cur = top.Sample({**STATS, **cache, "memd_readcache_hits": 1890, "memd_readcache_misses": 110}, 2.0)
    assert _rows(cur, prev)["read cache hit rate / bytes / rows"] == "99.0% / 2.0 MiB / 5,000"
    assert _rows(prev, None)["read cache hit rate / bytes / rows"] == "90.0% / 2.0 MiB / 5,000"  # since the start
    assert _rows(top.Sample(STATS, 1.0), None)["read cache hit rate / bytes / rows"].startswith(top.NA)


def test_bench_hit_rate_between_two_readings() -> None:
    assert bench.hit_rate((10, 5), (100, 15)) == 0.9
    assert bench.hit_rate(None, (1, 1)) is None and bench.hit_rate((1, 1), (1, 1)) is None


def test_top_without_history_or_fields() -> None:
    rows = _rows(top.Sample({"memd_last_backup_age_seconds": -1}, 1.0), None)
    assert rows["writes/s (WAL records)"] == top.NA and rows["RSS"] == top.NA
    assert rows["last backup age"] == "never"
    restarted = _rows(top.Sample({"memd_last_lsn": 5}, 2.0), top.Sample({"memd_last_lsn": 900}, 1.0))
    assert restarted["writes/s (WAL records)"] == top.NA  # a counter going down: a restart, not a negative rate


def test_top_errors_are_shown() -> None:
    rows = _rows(top.Sample({**STATS, "memd_flush_error": "disk I/O error"}, 1.0), None)
    assert "disk I/O error" in rows["last flush / flushes"]


def test_top_once_renders_one_frame() -> None:
    from rich.console import Console

    samples = iter([STATS, {**STATS, "memd_last_lsn": 1100}])
    console = Console(record=True, width=100, file=open(os.devnull, "w"))  # noqa: SIM115
    try:
        assert top.run(lambda: next(samples), "/tmp/m.sock", 0.01, once=True, console=console) == 0
    finally:
        console.file.close()
    text = console.export_text()
    assert "writes/s (WAL records)" in text and "memd 0.1.0 on /tmp/m.sock" in text


@pytest.mark.parametrize(("n", "text"), [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (None, top.NA)])
def test_human_bytes(n: int | None, text: str) -> None:
    assert top.human_bytes(n) == text


@pytest.mark.parametrize(("s", "text"), [(-1, "never"), (59, "59s"), (61, "1m 01s"), (90061, "1d 01h")])
def test_human_age(s: int, text: str) -> None:
    assert top.human_age(s) == text


# --- bench: the maths ------------------------------------------------------------------------------

def test_percentile_nearest_rank() -> None:
    values = list(range(1, 101))
    assert [bench.percentile(values, p) for p in (50, 90, 99, 100)] == [50, 90, 99, 100]
    assert bench.percentile([7], 99) == 7
    with pytest.raises(ValueError):
        bench.percentile([], 50)


def test_quotas_split_every_request() -> None:
    assert bench.quotas(10, 3) == [4, 3, 3]
    assert bench.quotas(2, 4) == [1, 1, 0, 0]
    assert sum(bench.quotas(100_003, 7)) == 100_003


def test_commands_and_report() -> None:
    import random

    plan = bench.Plan("/tmp/s", requests=4, clients=2, pipeline=2, value_size=50, keys=3, command="mem.put")
    value = bench._mem_value(50)
    assert len(value) == 50
    name, namespace, key, sent = bench.make_command(plan, random.Random(1), value)
    assert (name, namespace, sent) == ("MEM.PUT", "memd-bench", value) and key in ("k0", "k1", "k2")
    result = bench.Result(2.0, [1_000_000, 2_000_000, 3_000_000, 4_000_000])
    lines = bench.report(plan, result)
    assert "throughput: 2 requests/s (4 requests in 2.000 s)" in lines
    assert "latency p50: 2.000 ms" in lines and "latency max: 4.000 ms" in lines
