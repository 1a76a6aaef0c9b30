"""The memory watchdog in a real daemon: driven over a small hard limit, it refuses writes, then recovers.

The limits are set just above the daemon's own idle RSS, measured first on a
daemon started with the default (huge) limits: an absolute figure would be
wrong on another Python build or allocator. The flush is set never to run on
its own (age and size thresholds far away), so the write buffer — and RSS —
grows with every big value written until the watchdog refuses writes. The
test then checks that reads are served while writes are refused, that
writes resume once the watchdog's flush has drained the buffer (whether RSS
falls or stays up: the "stuck" case), and that every acknowledged write is
still there. Every wait is a bounded poll.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator

import psutil
import pytest
import redis

from tests.integration.daemon import Daemon, short_tmpdir

pytestmark = pytest.mark.timeout(90)

MiB = 1024 * 1024
VALUE_BYTES = 256 * 1024
SOFT_MARGIN = 24 * MiB  # above idle RSS
HARD_MARGIN = 48 * MiB
MAX_WRITES = 2000  # 500 MiB: far beyond the hard limit; reaching it means the watchdog never acted

CONFIG = """\
[flush]
max_age_seconds = 3600
max_bytes = "1GiB"
max_records = 10000000

[backpressure]
buffer_max_bytes = "2GiB"

[watchdog]
sample_seconds = 0.1
{limits}
"""


def write_config(path: str, limits: str = "") -> None:
    with open(path, "w") as f:
        f.write(CONFIG.format(limits=limits))


def idle_rss(d: Daemon) -> int:
    """RSS once the daemon has answered a few commands and settled (bounded)."""
    assert d.proc is not None
    client = redis.Redis(unix_socket_path=d.socket, socket_timeout=10)
    for _ in range(3):
        client.ping()
        client.set("warm", "up")
        client.get("warm")
        client.delete("warm")
    client.close()
    time.sleep(0.5)
    return int(psutil.Process(d.proc.pid).memory_info().rss)


def events(d: Daemon, name: str) -> list[str]:
    """The daemon's log lines (JSON) whose message starts with the event ``name``."""
    out = []
    for line in d.log().splitlines():
        try:
            msg = json.loads(line).get("msg", "")
        except ValueError:
            continue
        if msg.split(" ", 1)[0] == name:
            out.append(msg)
    return out


@pytest.fixture
def base() -> Iterator[str]:
    path = short_tmpdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def write_until_refused(client: redis.Redis, acked: list[int], filler: bytes) -> str:
    """Write big values (numbered after ``acked``) until one gets -OOM; return its message (bounded)."""
    first = acked[-1] + 1 if acked else 0
    for i in range(first, first + MAX_WRITES):
        try:
            client.set(f"k{i}", b"%08d" % i + filler)
        except redis.exceptions.OutOfMemoryError as exc:
            return str(exc)
        acked.append(i)
    raise AssertionError(f"no -OOM after {MAX_WRITES} writes of {VALUE_BYTES} bytes")


def wait_for_writes(client: redis.Redis, timeout: float = 30.0) -> None:
    """Writes resume once the watchdog's flush drained the buffer (bounded poll)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.set("after", "resumed")
            return
        except redis.exceptions.OutOfMemoryError:
            assert time.monotonic() < deadline, f"writes still refused after {timeout} s"
            time.sleep(0.05)


def test_hard_limit_refuses_writes_keeps_reads_and_recovers(base: str) -> None:
    config = os.path.join(base, "memd.toml")
    write_config(config)
    probe = Daemon(config=config, base=base).start()
    try:
        idle = idle_rss(probe)
    finally:
        probe.stop()
    write_config(config, f"soft_limit = {idle + SOFT_MARGIN}\nhard_limit = {idle + HARD_MARGIN}")
    d = Daemon(config=config, base=base).start()
    client = redis.Redis(unix_socket_path=d.socket, socket_timeout=30)
    try:
        client.set("before", "small")
        filler = os.urandom(VALUE_BYTES)  # incompressible: the WAL's lz4 cannot shrink it, the buffer holds it
        acked: list[int] = []
        for _ in range(3):  # the refusal lasts one flush (~0.5 s here); a probe landing just after it retries
            try:
                refusal = write_until_refused(client, acked, filler)
            except AssertionError as exc:
                pytest.fail(f"{exc} (idle RSS {idle}):\n{d.log()}")
            assert acked, f"the very first write was refused: the hard limit is below idle RSS:\n{d.log()}"
            assert "above watchdog.hard_limit" in refusal and "RSS" in refusal and "reads go on" in refusal, refusal
            # a refused write and reads in one batch: the server runs it in one event-loop step,
            # so the reads were served while writes were refused
            with client.pipeline(transaction=False) as p:
                p.set("probe", "x").get("before").get(f"k{acked[0]}")
                probe_set, before, first = p.execute(raise_on_error=False)
            assert before == b"small" and first == b"%08d" % acked[0] + filler
            wait_for_writes(client)
            if isinstance(probe_set, redis.exceptions.OutOfMemoryError):
                break
        else:
            pytest.fail(f"no read was served inside a refusal window in 3 tries:\n{d.log()}")
        assert client.get("after") == b"resumed"
        assert events(d, "watchdog_refusing_writes") and events(d, "watchdog_writes_resumed"), d.log()
        for i in acked:  # never drop acknowledged data
            assert client.get(f"k{i}") == b"%08d" % i + filler, i
    finally:
        client.close()
        d.stop()
