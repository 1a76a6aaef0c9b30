"""redis-py's PubSub against a real memd daemon: a fan-out, patterns, and a subscriber that never reads.

- one publisher, many subscribers (``get_message`` and ``listen()`` in threads, channel and
  pattern subscriptions, RESP2 and RESP3): every subscriber gets every message, in order;
- PUBLISH inside a redis-py transaction pipeline, and PUBSUB's introspection as redis-py calls it;
- a raw subscriber that never reads is disconnected at ``pubsub_output_hard_bytes`` (one log
  line), while a reading subscriber of the same channel keeps receiving; CONFIG GET
  client-output-buffer-limit shows the configured limit.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import redis

from tests.integration.daemon import Daemon, short_tmpdir
from tests.integration.test_reload import wait_for_reloads, write_config

pytestmark = pytest.mark.timeout(90)

SUBSCRIBERS = 20
LIMITS = ('[server]\npubsub_output_hard_bytes = "2MiB"\npubsub_output_soft_bytes = "1MiB"\n'
          "pubsub_output_soft_seconds = 30\n")
MESSAGES = 200


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    base = short_tmpdir()
    config = os.path.join(base, "conf", "memd.toml")
    os.makedirs(os.path.dirname(config))
    write_config(config, LIMITS)
    d = Daemon(fsync="always", config=config, base=base).start()
    d.conf = config  # type: ignore[attr-defined]
    yield d
    d.cleanup()


def client(d: Daemon, protocol: int = 2) -> redis.Redis:
    return redis.Redis(unix_socket_path=d.socket, protocol=protocol, socket_timeout=10)


def drain(p: redis.client.PubSub, n: int, deadline: float) -> list[dict[str, object]]:
    """The next ``n`` data messages (subscribe confirmations skipped)."""
    got: list[dict[str, object]] = []
    while len(got) < n and time.monotonic() < deadline:
        m = p.get_message(ignore_subscribe_messages=True, timeout=1.0)
        if m is not None:
            got.append(m)
    return got


@pytest.mark.parametrize("protocol", [2, 3], ids=["resp2", "resp3"])
def test_fan_out_to_many_subscribers(daemon: Daemon, protocol: int) -> None:
    """Half the subscribers by channel, half by pattern; one listens with listen() in a thread."""
    conns = [client(daemon, protocol) for _ in range(SUBSCRIBERS)]
    subs = [c.pubsub() for c in conns]
    for i, p in enumerate(subs):
        if i % 2:
            p.psubscribe("jobs.*")
        else:
            p.subscribe("jobs.done")
        assert p.get_message(timeout=5)["type"] in ("subscribe", "psubscribe")  # type: ignore[index]
    listener = client(daemon, protocol).pubsub()
    listener.subscribe("jobs.done")
    heard: list[bytes] = []

    def listen() -> None:
        for m in listener.listen():
            if m["type"] == "message":
                heard.append(m["data"])
                if len(heard) == MESSAGES:
                    return
    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    publisher = client(daemon, protocol)
    wait_until(lambda: publisher.pubsub_numsub("jobs.done")[0][1] == SUBSCRIBERS // 2 + 1)
    assert publisher.pubsub_numpat() == 1
    pipe = publisher.pipeline(transaction=False)
    for i in range(MESSAGES):
        pipe.publish("jobs.done", f"job-{i}")
    assert pipe.execute() == [SUBSCRIBERS + 1] * MESSAGES
    deadline = time.monotonic() + 30
    expected = [f"job-{i}".encode() for i in range(MESSAGES)]
    for i, p in enumerate(subs):
        got = drain(p, MESSAGES, deadline)
        assert [m["data"] for m in got] == expected, f"subscriber {i} got {len(got)}"
        if i % 2:
            assert {(m["type"], m["pattern"], m["channel"]) for m in got} == {("pmessage", b"jobs.*", b"jobs.done")}
        else:
            assert {(m["type"], m["channel"]) for m in got} == {("message", b"jobs.done")}
    thread.join(30)
    assert heard == expected
    for p in [*subs, listener]:
        p.close()
    for c in conns:
        c.close()
    publisher.close()


def wait_until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``cond()`` until true (the listener thread subscribes on its own schedule)."""
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.01)


def test_publish_in_a_transaction_and_introspection(daemon: Daemon) -> None:
    r = client(daemon)
    p = r.pubsub()
    p.subscribe("tx", "other")
    p.psubscribe("t?")
    assert sorted(r.pubsub_channels()) == [b"other", b"tx"]
    assert r.pubsub_channels("t*") == [b"tx"]
    assert r.pubsub_numsub("tx", "nope") == [(b"tx", 1), (b"nope", 0)]
    pipe = r.pipeline(transaction=True)
    pipe.set("k", "v").publish("tx", "one").publish("tx", "two").incr("n")
    assert pipe.execute() == [True, 2, 2, 1]
    got = [m for m in (p.get_message(timeout=2) for _ in range(7)) if m is not None and "message" in str(m["type"])]
    assert [(m["type"], m["data"]) for m in got] == [("message", b"one"), ("pmessage", b"one"), ("message", b"two"),
                                                     ("pmessage", b"two")]
    info = r.info("stats")
    assert info["pubsub_channels"] >= 2 and info["pubsub_patterns"] >= 1
    listed = r.execute_command("CLIENT", "LIST", "TYPE", "pubsub").decode().splitlines()
    assert len(listed) == 1 and "flags=PU " in listed[0] and "sub=2 psub=1 ssub=0" in listed[0], listed
    assert r.execute_command("CLIENT", "KILL", "TYPE", "pubsub") == 1
    wait_until(lambda: r.pubsub_numsub("tx") == [(b"tx", 0)] and r.pubsub_numpat() == 0)
    p.close()
    r.close()


def test_a_subscriber_that_never_reads_is_disconnected(daemon: Daemon) -> None:
    """2 MiB hard limit: the stalled subscriber goes (logged), memd stays up, a reading one stays."""
    r = client(daemon)
    assert r.config_get("client-output-buffer-limit") == {
        "client-output-buffer-limit": "normal 0 0 0 slave 268435456 67108864 60 pubsub 2097152 1048576 30"}
    stalled = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(daemon.socket)
    stalled.sendall(b"*2\r\n$9\r\nSUBSCRIBE\r\n$4\r\nfire\r\n")
    reader = client(daemon).pubsub()
    reader.subscribe("fire")
    reader.get_message(timeout=5)
    wait_until(lambda: r.pubsub_numsub("fire")[0][1] == 2)
    payload = b"x" * 65536
    received = 0
    cut_at = None
    for i in range(200):  # 12.5 MiB in all, far past the 2 MiB limit plus the kernel's socket buffers
        n = r.publish("fire", payload)
        if n == 1 and cut_at is None:
            cut_at = i
        m = reader.get_message(timeout=5)
        while m is not None and m["type"] != "message":
            m = reader.get_message(timeout=5)
        assert m is not None and m["data"] == payload
        received += 1
    assert cut_at is not None, "the stalled subscriber was never disconnected"
    assert received == 200
    assert r.pubsub_numsub("fire") == [(b"fire", 1)]
    assert int(r.info("stats")["memd_pubsub_output_limit_disconnections"]) == 1
    deadline = time.monotonic() + 5
    while "client_output_limit" not in daemon.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = [line for line in daemon.log().splitlines() if "client_output_limit" in line]
    assert len(lines) == 1 and "limit=hard" in lines[0] and "hard_bytes=2097152" in lines[0], lines
    stalled.settimeout(5)  # what reached its socket before the cut, then the end of the stream
    total = 0
    while chunk := stalled.recv(1 << 20):
        total += len(chunk)
    assert total < 12 * 65536
    assert r.ping()
    reader.close()
    r.close()
    stalled.close()


def test_the_limit_reloads_live(daemon: Daemon) -> None:
    """The pubsub limits are [live] keys: a SIGHUP puts new ones in force, CONFIG GET shows them."""
    r = redis.Redis(unix_socket_path=daemon.socket, decode_responses=True)
    before = int(r.info("server")["memd_config_reloads"])
    conf: str = daemon.conf  # type: ignore[attr-defined]
    write_config(conf, '[server]\npubsub_output_hard_bytes = "64MiB"\npubsub_output_soft_bytes = 0\n', atomic=True)
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGHUP)
    info = wait_for_reloads(r, before + 1)
    assert info["memd_config_last_reload_ok"] == 1
    assert r.config_get("client-output-buffer-limit")["client-output-buffer-limit"].endswith("pubsub 67108864 0 60")
    assert r.config_get("server.pubsub_output_hard_bytes") == {"server.pubsub_output_hard_bytes": str(64 << 20)}
    write_config(conf, LIMITS, atomic=True)
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for_reloads(r, before + 2)
    r.close()
