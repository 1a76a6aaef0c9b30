"""Pub/sub in the server's batch loop: pushes in order with replies held for durability, and the
output-buffer limit of a subscriber that does not read (a real engine, fake transports)."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

import memd.server as server_mod
from memd.engine.engine import Engine
from memd.server import Limits, Server
from tests.unit.test_server_batch import Client, cmd

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

HELLO3 = cmd("HELLO", "3")


class Gate:
    """Durability on demand: replies to writes wait until the test opens the gate."""

    def __init__(self, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
        self.open = asyncio.Event()
        real_wait = engine.wait_durable

        async def wait_durable(lsn: int) -> None:
            await self.open.wait()
            await real_wait(lsn)
        monkeypatch.setattr(engine, "durable_now", lambda lsn: self.open.is_set() and engine.is_durable(lsn))
        monkeypatch.setattr(engine, "wait_durable", wait_durable)


@pytest.fixture
async def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Server]:
    monkeypatch.setattr(server_mod, "peer_credentials", lambda sock: (1, os.geteuid(), os.getegid(), []))
    async with Engine(str(tmp_path), fsync="always") as engine:
        yield Server(engine, str(tmp_path / "unused.sock"))


async def subscriber(server: Server, *channels: str, resp3: bool = True) -> Client:
    c = Client(server)
    if resp3:
        c.conn.data_received(HELLO3)
    c.conn.data_received(cmd("SUBSCRIBE", *channels))
    await anyio.sleep(0)
    c.transport.data.clear()
    return c


def message(channel: bytes, payload: bytes, push: bytes = b">") -> bytes:
    return b"%b3\r\n$7\r\nmessage\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n" % (push, len(channel), channel, len(payload),
                                                                      payload)


async def settle() -> None:
    for _ in range(5):  # the end-of-pass flush of pushes, and any ack
        await anyio.sleep(0.001)


async def test_a_push_waits_behind_a_reply_held_for_its_fsync(server: Server,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A subscriber's SET reply waits for its fsync; a message published meanwhile comes after it,
    whole, never before or inside it."""
    gate = Gate(server.engine, monkeypatch)
    sub = await subscriber(server, "ch")
    pub = Client(server)
    sub.conn.data_received(cmd("SET", "k", "v") + cmd("GET", "k"))
    assert sub.conn.busy and sub.conn.held
    await pub.send(cmd("PUBLISH", "ch", "hello"), b":1\r\n")  # the publisher wrote nothing: answered now
    await settle()
    assert bytes(sub.transport.data) == b""  # the message waits behind the held replies
    gate.open.set()
    with anyio.fail_after(5):
        while not sub.transport.data.endswith(b"hello\r\n"):
            await anyio.sleep(0.001)
    assert bytes(sub.transport.data) == b"+OK\r\n$1\r\nv\r\n" + message(b"ch", b"hello")
    sub.transport.data.clear()
    await pub.send(cmd("PUBLISH", "ch", "later"), b":1\r\n")  # nothing held now: straight out
    await settle()
    assert bytes(sub.transport.data) == message(b"ch", b"later")


async def test_a_publisher_held_for_its_fsync_does_not_hold_other_subscribers(
        server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """Messages are not durable: a subscriber gets one while the publisher's earlier write still waits."""
    gate = Gate(server.engine, monkeypatch)
    sub = await subscriber(server, "ch", resp3=False)
    pub = Client(server)
    pub.conn.data_received(cmd("SET", "k", "v") + cmd("PUBLISH", "ch", "m"))
    await settle()
    assert bytes(sub.transport.data) == message(b"ch", b"m", b"*")
    assert bytes(pub.transport.data) == b""
    gate.open.set()
    with anyio.fail_after(5):
        while bytes(pub.transport.data) != b"+OK\r\n:1\r\n":
            await anyio.sleep(0.001)


async def test_a_client_publishing_to_itself_gets_the_push_before_the_count(server: Server) -> None:
    sub = await subscriber(server, "me")
    await sub.send(cmd("PUBLISH", "me", "x") + cmd("PING"), message(b"me", b"x") + b":1\r\n+PONG\r\n")


async def test_a_pipeline_of_publishes_reaches_a_subscriber_in_one_write(server: Server) -> None:
    sub = await subscriber(server, "ch")
    writes: list[bytes] = []
    real = sub.transport.write
    sub.transport.write = lambda data: (writes.append(bytes(data)), real(data))  # type: ignore[method-assign]
    pub = Client(server)
    await pub.send(b"".join(cmd("PUBLISH", "ch", f"m{i}") for i in range(20)), b":1\r\n" * 20)
    await settle()
    assert writes == [b"".join(message(b"ch", b"m%d" % i) for i in range(20))]


async def test_a_subscriber_past_the_hard_limit_is_disconnected(server: Server,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    server.limits = Limits(pubsub_hard_bytes=10_000, pubsub_soft_bytes=0, pubsub_soft_seconds=0)
    slow, fast = await subscriber(server, "ch"), await subscriber(server, "ch")
    slow.transport.unsent, slow.transport.stalled = 9_000, True  # it reads nothing: its socket's buffer is full
    pub = Client(server)
    with caplog.at_level(logging.WARNING, logger="memd.server"):
        await pub.send(cmd("PUBLISH", "ch", "x" * 500), b":2\r\n")  # 9,000 + 524 < 10,000
        await settle()
        assert not slow.transport.aborted
        await pub.send(cmd("PUBLISH", "ch", "y" * 500), b":2\r\n")  # counted: it was a subscriber
        await settle()
    assert slow.transport.aborted and not fast.transport.closed
    assert server.stats_output_limit_disconnects == 1
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("client_output_limit")]
    assert len(lines) == 1 and "limit=hard" in lines[0] and "hard_bytes=10000" in lines[0], lines
    await pub.send(cmd("PUBSUB", "NUMSUB", "ch"), b"*2\r\n$2\r\nch\r\n:1\r\n")  # only the fast one is left
    await pub.send(cmd("PUBLISH", "ch", "z"), b":1\r\n")


async def test_a_subscriber_over_the_soft_limit_for_too_long_is_disconnected(server: Server) -> None:
    server.limits = Limits(pubsub_hard_bytes=0, pubsub_soft_bytes=1_000, pubsub_soft_seconds=0.2)
    slow = await subscriber(server, "ch")
    pub = Client(server)
    slow.transport.unsent = 2_000
    await pub.send(cmd("PUBLISH", "ch", "a"), b":1\r\n")  # over the soft limit: the clock starts
    await settle()
    assert not slow.transport.aborted
    slow.transport.unsent = 0  # it caught up: the clock stops
    await pub.send(cmd("PUBLISH", "ch", "b"), b":1\r\n")
    await anyio.sleep(0.3)
    slow.transport.unsent = 2_000
    await pub.send(cmd("PUBLISH", "ch", "c"), b":1\r\n")  # over again, but only just now
    await settle()
    assert not slow.transport.aborted
    await anyio.sleep(0.3)
    await pub.send(cmd("PUBLISH", "ch", "d"), b":1\r\n")  # still over after 0.3 s > 0.2 s
    await settle()
    assert slow.transport.aborted


async def test_a_held_subscriber_is_bounded_too(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pushes queued behind a held reply count against the limit: memd's memory stays bounded."""
    Gate(server.engine, monkeypatch)
    server.limits = Limits(pubsub_hard_bytes=5_000, pubsub_soft_bytes=0)
    sub = await subscriber(server, "ch")
    sub.conn.data_received(cmd("SET", "k", "v"))  # held forever: the gate never opens
    pub = Client(server)
    for _ in range(10):
        pub.conn.data_received(cmd("PUBLISH", "ch", "x" * 1000))
    await settle()
    assert sub.transport.aborted and len(sub.conn.pushes) == 0
    assert server.pubsub.numsub(b"ch") == 0


async def test_pub_sub_writes_nothing_durable(server: Server) -> None:
    """Messages and subscriptions are not data: no WAL record, nothing to replay after a restart."""
    lsn = server.engine.last_lsn
    sub = await subscriber(server, "ch")
    pub = Client(server)
    await pub.send(cmd("PUBLISH", "ch", "m") + cmd("SPUBLISH", "ch", "m"), b":1\r\n:0\r\n")
    await pub.send(cmd("MULTI") + cmd("PUBLISH", "ch", "n") + cmd("EXEC"), b"+OK\r\n+QUEUED\r\n*1\r\n:1\r\n")
    await settle()
    assert bytes(sub.transport.data) == message(b"ch", b"m") + message(b"ch", b"n")
    await sub.send(cmd("UNSUBSCRIBE"), b">3\r\n$11\r\nunsubscribe\r\n$2\r\nch\r\n:0\r\n")
    assert server.engine.last_lsn == lsn


async def test_command_info_and_docs_know_the_pub_sub_commands(server: Server) -> None:
    c = Client(server)
    for name in ("subscribe", "psubscribe", "ssubscribe", "unsubscribe", "punsubscribe", "sunsubscribe",
                 "publish", "spublish", "pubsub"):
        c.transport.data.clear()
        c.conn.data_received(cmd("COMMAND", "INFO", name))
        await settle()
        assert bytes(c.transport.data).startswith(b"*1\r\n*10\r\n$%d\r\n%b\r\n" % (len(name), name.encode()))
    c.transport.data.clear()
    c.conn.data_received(cmd("COMMAND", "DOCS", "pubsub"))
    await settle()
    docs = bytes(c.transport.data)
    for sub in (b"pubsub|channels", b"pubsub|numsub", b"pubsub|numpat", b"pubsub|shardchannels",
                b"pubsub|shardnumsub", b"pubsub|help"):
        assert sub in docs
    c.transport.data.clear()
    c.conn.data_received(cmd("COMMAND", "INFO", "pubsub|numsub"))
    await settle()
    assert bytes(c.transport.data).startswith(b"*1\r\n*10\r\n$13\r\npubsub|numsub\r\n:-2\r\n")


async def test_client_pause_write_holds_publish(server: Server) -> None:
    """Redis 7.0 pauses may-replicate commands under CLIENT PAUSE WRITE: PUBLISH, and EXEC of one."""
    sub = await subscriber(server, "ch")
    pub, admin = Client(server), Client(server)
    await admin.send(cmd("CLIENT", "PAUSE", "200", "WRITE"), b"+OK\r\n")
    pub.conn.data_received(cmd("PUBLISH", "ch", "held") + cmd("PING"))
    await settle()
    assert bytes(pub.transport.data) == b"" and bytes(sub.transport.data) == b""
    await admin.send(cmd("CLIENT", "UNPAUSE"), b"+OK\r\n")
    with anyio.fail_after(5):
        while bytes(pub.transport.data) != b":1\r\n+PONG\r\n":
            await anyio.sleep(0.001)
    await settle()
    assert bytes(sub.transport.data) == message(b"ch", b"held")
