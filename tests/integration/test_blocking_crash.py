"""Blocking pops across a ``kill -9`` of memd under ``fsync = always``: the delivery guarantee.

A pop that serves a parked client is a write: one WAL record, and its reply
is held until that record is fsynced (README, "Blocking commands"). So with
``always``:

- an element a consumer received is popped for good: after the crash and
  the WAL's replay it is not in the list again (never delivered twice);
- an element a producer's push was acknowledged for is either still in the
  list or was popped; the pops whose reply the crash cut off (at most one
  per consumer in flight) are the only elements no one saw: BLPOP delivers
  at most once;
- with BLMOVE nothing is lost even then: the element is in the consumer's
  processing list, where a recovery finds it (the reliable-queue pattern).
  An element is processed twice only if its consumer processed it but its
  acknowledgement (LREM) was not acknowledged before the crash.

Real daemons (their WAL write()s delayed 20 ms, :mod:`tests.integration.slow_fsync`,
so that a kill lands between a record's append and its write and fsync: a
reply sent before its record is durable is caught; checked by sending the
wake-up replies early, which fails the first test), redis-py
clients in threads; each test kills memd with SIGKILL while consumers are
parked and pushes are arriving, then restarts it on the same data directory.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.integration.daemon import NO_AUTOFLUSH, Daemon, short_tmpdir

pytestmark = pytest.mark.timeout(120)

CONSUMERS = 3


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    base = short_tmpdir()
    conf = os.path.join(base, "memd.toml")
    with open(conf, "w") as f:
        f.write(NO_AUTOFLUSH)  # everything after the start is replayed from the WAL
    d = Daemon(fsync="always", config=conf, base=base)
    d.args[d.args.index("memd")] = "tests.integration.slow_fsync"  # a wide append-to-fsync window
    d.start()
    try:
        yield d
    finally:
        d.cleanup()


def connect(d: Daemon, timeout: float | None = 10) -> redis.Redis:
    # no silent retries: a resent push or pop would land twice
    return redis.Redis(unix_socket_path=d.socket, socket_timeout=timeout, retry=Retry(NoBackoff(), 0))


def kill9_and_restart(d: Daemon) -> None:
    assert d.proc is not None
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait(10)
    d.start()


def wait_until(check: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def test_blpop_never_redelivers_what_a_consumer_received(daemon: Daemon) -> None:
    attempted: list[bytes] = []  # pushes sent (the last one may not have been acknowledged)
    acked: list[bytes] = []
    seen: list[bytes] = []
    lock = threading.Lock()

    def consume() -> None:
        r = connect(daemon, timeout=None)  # parked for as long as it takes
        try:
            while True:
                got: Any = r.blpop(["q"], timeout=0)
                with lock:
                    seen.append(got[1])
        except (redis.ConnectionError, redis.TimeoutError):
            return

    def produce(start: int) -> None:
        r = connect(daemon)
        try:
            for i in range(start, start + 100_000):
                item = b"item-%d" % i
                attempted.append(item)
                # staged first, durably: a pop lost in the crash leaves the element here, where a
                # consumer would get it again; so the only way it reaches a consumer is a pop
                # acknowledged after its fsync (the LMOVE and the pop it wakes share that fsync)
                r.rpush("stage", item)
                r.lmove("stage", "q", "LEFT", "RIGHT")
                acked.append(item)
                if i % 3 == 0:
                    time.sleep(0.001)  # let the consumers park again: most pops are wake-ups
        except (redis.ConnectionError, redis.TimeoutError):
            return

    for rounds in range(3):
        threads = [threading.Thread(target=consume) for _ in range(CONSUMERS)]
        for t in threads:
            t.start()
        wait_until(lambda: int(connect(daemon).info("clients")["blocked_clients"]) == CONSUMERS)
        producer = threading.Thread(target=produce, args=(rounds * 100_000,))
        producer.start()
        target = len(seen) + 60
        wait_until(lambda: len(seen) >= target)
        kill9_and_restart(daemon)
        for t in [*threads, producer]:
            t.join(20)
            assert not t.is_alive()

    remaining = connect(daemon).lrange("q", 0, -1) + connect(daemon).lrange("stage", 0, -1)
    assert len(seen) == len(set(seen)), "an element was delivered twice"
    assert not set(seen) & set(remaining), "an element a consumer received came back after the crash"
    assert set(seen) | set(remaining) <= set(attempted)
    missing = set(acked) - set(seen) - set(remaining)
    # only pops whose reply the crash cut off: one per consumer in flight, per crash
    assert len(missing) <= 3 * CONSUMERS, missing


def test_blmove_reliable_queue_with_a_crashing_consumer(daemon: Daemon) -> None:
    jobs = [b"job-%d" % i for i in range(240)]
    r = connect(daemon)
    r.lpush("jobs", *jobs)
    done: list[bytes] = []  # processed (maybe more than once)
    acked: list[bytes] = []  # whose LREM was acknowledged
    lock = threading.Lock()

    def worker(name: str, die_after: int | None, stop_when_empty: bool) -> None:
        c = connect(daemon, timeout=None)
        taken = 0
        try:
            while True:
                wait: Any = 0.5 if stop_when_empty else 0  # (redis-py's stubs say int; Redis takes seconds)
                job: Any = c.blmove("jobs", f"processing:{name}", wait, "RIGHT", "LEFT")
                if job is None:
                    return
                taken += 1
                if die_after is not None and taken == die_after:
                    c.connection_pool.disconnect()  # dies holding the job: it stays in processing:<name>
                    return
                with lock:
                    done.append(job)
                time.sleep(0.002)
                c.lrem(f"processing:{name}", 1, job)
                with lock:
                    acked.append(job)
        except (redis.ConnectionError, redis.TimeoutError):
            return

    threads = [threading.Thread(target=worker, args=(f"w{i}", 10 if i == 0 else None, False))
               for i in range(CONSUMERS)]
    for t in threads:
        t.start()
    wait_until(lambda: len(done) >= 80)
    kill9_and_restart(daemon)
    for t in threads:
        t.join(20)
        assert not t.is_alive()
    with lock:
        unacked_at_crash = set(done) - set(acked)

    # recovery: whatever a consumer held goes back to the queue, then fresh consumers drain it
    r = connect(daemon)
    key: Any
    for key in r.keys("processing:*"):  # type: ignore[union-attr]
        while r.lmove(key, "jobs", "LEFT", "RIGHT") is not None:
            pass
    threads = [threading.Thread(target=worker, args=(f"v{i}", None, True)) for i in range(CONSUMERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
        assert not t.is_alive()

    assert set(done) == set(jobs), f"lost: {sorted(set(jobs) - set(done))[:10]}"
    twice = {job for job in done if done.count(job) > 1}
    assert twice <= unacked_at_crash, "a job whose acknowledgement was acknowledged ran again"
    assert r.llen("jobs") == 0 and not r.keys("processing:*")
