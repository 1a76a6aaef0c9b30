"""The read cache in a real daemon: reads never go back in time while flushes run, and a ``kill -9`` under
``fsync = always`` loses no acknowledged write.

Writers overwrite keys (strings and small hashes) with increasing version numbers, each key owned
by one writer, so every key has at most one write in flight. Readers check, while small flushes
run every few hundred writes and the cache (a small one: it evicts all the time) is filled by
them and by reads, that a read never returns a version older than one already acknowledged. Then
memd is killed with SIGKILL and restarted on the same data directory: every key holds its last
acknowledged version, or the one in flight.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Iterator

import pytest
import redis

from tests.integration.daemon import Daemon, short_tmpdir

pytestmark = pytest.mark.timeout(120)

WRITERS, READERS, KEYS = 3, 2, 400
CONFIG = """\
[flush]
max_records = 300
max_age_seconds = 0.2
[cache]
max_bytes = "128KiB"
"""


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    base = short_tmpdir()
    conf = os.path.join(base, "memd.toml")
    with open(conf, "w") as f:
        f.write(CONFIG)
    d = Daemon(fsync="always", config=conf, base=base)
    d.start()
    try:
        yield d
    finally:
        d.cleanup()


def _key(w: int, i: int) -> str:
    return f"w{w}:{'h' if i % 3 == 0 else 's'}{i}"


def _read(r: redis.Redis, key: str) -> int:
    if ":h" in key:
        v = r.hget(key, "version")
    else:
        v = r.get(key)
    return 0 if v is None else int(v)


def test_reads_stay_fresh_and_acked_writes_survive_a_kill(daemon: Daemon) -> None:
    acked = [[0] * KEYS for _ in range(WRITERS)]
    inflight = [[0] * KEYS for _ in range(WRITERS)]
    stop = threading.Event()
    errors: list[str] = []
    reads = [0]

    def writer(w: int) -> None:
        r = redis.Redis(unix_socket_path=daemon.socket)
        rng = random.Random(w)
        try:
            while not stop.is_set():
                i = rng.randrange(KEYS)
                version = acked[w][i] + 1
                inflight[w][i] = version
                key = _key(w, i)
                if ":h" in key:
                    r.hset(key, mapping={"version": version, "pad": "x" * rng.randrange(40)})
                else:
                    r.set(key, version)
                acked[w][i] = version
        except redis.ConnectionError:
            pass  # the kill
        except Exception as exc:  # noqa: BLE001 - reported by the test below
            errors.append(f"writer {w}: {exc!r}")

    def reader(n: int) -> None:
        r = redis.Redis(unix_socket_path=daemon.socket)
        rng = random.Random(100 + n)
        try:
            while not stop.is_set():
                w, i = rng.randrange(WRITERS), rng.randrange(KEYS)
                floor = acked[w][i]
                got = _read(r, _key(w, i))
                reads[0] += 1
                if got < floor:
                    errors.append(f"read of {_key(w, i)} went back in time: {got} < acknowledged {floor}")
        except redis.ConnectionError:
            pass
        except Exception as exc:  # noqa: BLE001
            errors.append(f"reader {n}: {exc!r}")

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    threads += [threading.Thread(target=reader, args=(n,)) for n in range(READERS)]
    for t in threads:
        t.start()
    try:
        # at least 4 s of load, and on until flushes, hits and evictions have all happened (a slow box
        # needs longer); the asserts below then say which did not, if the deadline passed
        started = time.monotonic()
        probe = redis.Redis(unix_socket_path=daemon.socket)
        while True:
            time.sleep(0.2)
            info = probe.info("persistence")
            done = info["memd_flush_count"] >= 3 and info["memd_readcache_hits"] > 100 \
                and info["memd_readcache_evictions"] > 0
            if time.monotonic() - started >= 60 or done and time.monotonic() - started >= 4.0:
                break
        assert info["memd_flush_count"] >= 3 and info["memd_readcache_hits"] > 100, info
        assert info["memd_readcache_evictions"] > 0, {k: v for k, v in info.items() if "readcache" in k}
        daemon.stop(signal.SIGKILL)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert not errors, errors[:10]
    assert reads[0] > 500
    daemon.start()
    r = redis.Redis(unix_socket_path=daemon.socket)
    lost = []
    for w in range(WRITERS):
        for i in range(KEYS):
            got = _read(r, _key(w, i))
            if got not in (acked[w][i], inflight[w][i]):
                lost.append((_key(w, i), got, acked[w][i], inflight[w][i]))
    assert not lost, lost[:10]
    assert sum(map(sum, acked)) > 300  # (writes were acknowledged before the kill)
