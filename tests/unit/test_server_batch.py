"""The server's batch loop in-process: a real engine, a fake transport, exact replies and WAL records.

A run of plain ``SET key value`` in one read is applied as one MSET (one WAL
record). These tests pin down that nothing else changes: replies, their
order, reads of the run's keys, transactions, WATCH, refusals and failed
durability.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

import memd.server as server_mod
from memd.engine.engine import Engine
from memd.errors import DurabilityError
from memd.server import Connection, Server
from tests.fake_transport import FakeTransport

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


def cmd(*args: bytes | str) -> bytes:
    parts = [a.encode() if isinstance(a, str) else a for a in args]
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%b\r\n" % (len(p), p) for p in parts)


class Client:
    def __init__(self, server: Server) -> None:
        self.transport = FakeTransport()
        self.conn = Connection(server)
        self.conn.connection_made(self.transport)  # type: ignore[arg-type]

    async def send(self, payload: bytes, replies: bytes) -> None:
        """Feed ``payload`` in one read; wait until exactly ``replies`` arrived."""
        self.transport.data.clear()
        self.conn.data_received(payload)
        with anyio.fail_after(5):
            while len(self.transport.data) < len(replies):
                await anyio.sleep(0.001)
        assert bytes(self.transport.data) == replies


@pytest.fixture
async def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Server]:
    monkeypatch.setattr(server_mod, "peer_credentials", lambda sock: (1, os.geteuid(), os.getegid(), []))
    async with Engine(str(tmp_path), fsync="everysec") as engine:
        yield Server(engine, str(tmp_path / "unused.sock"))


async def test_a_run_of_plain_sets_is_one_wal_record(server: Server) -> None:
    c = Client(server)
    lsn = server.engine.last_lsn
    await c.send(b"".join(cmd("SET" if i % 2 else "set", f"k{i}", f"v{i}") for i in range(16)), b"+OK\r\n" * 16)
    assert server.engine.last_lsn == lsn + 1
    assert server.stats_commands == 16 and server.stats_writes == 16
    await c.send(cmd("MGET", "k0", "k15"), b"*2\r\n$2\r\nv0\r\n$3\r\nv15\r\n")


async def test_commands_between_sets_see_the_sets_before_them(server: Server) -> None:
    c = Client(server)
    lsn = server.engine.last_lsn
    await c.send(cmd("SET", "a", "1") + cmd("SET", "a", "2") + cmd("GET", "a") + cmd("INCR", "a")
                 + cmd("SET", "b", "x") + cmd("SET", "a", "7", "NX") + cmd("GET", "a") + cmd("SeT", "a", "9"),
                 b"+OK\r\n+OK\r\n$1\r\n2\r\n:3\r\n+OK\r\n$-1\r\n$1\r\n3\r\n+OK\r\n")
    # records: the run (a=1, a=2), INCR, the run (b), SET NX wrote nothing, the run (a=9)
    assert server.engine.last_lsn == lsn + 4
    await c.send(cmd("MGET", "a", "b"), b"*2\r\n$1\r\n9\r\n$1\r\nx\r\n")


async def test_sets_inside_multi_are_queued(server: Server) -> None:
    c = Client(server)
    lsn = server.engine.last_lsn
    await c.send(cmd("MULTI") + cmd("SET", "a", "1") + cmd("SET", "b", "2") + cmd("EXEC"),
                 b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n+OK\r\n+OK\r\n")
    assert server.engine.last_lsn == lsn + 1


async def test_a_pipelined_set_breaks_another_clients_watch(server: Server) -> None:
    watcher, writer = Client(server), Client(server)
    await watcher.send(cmd("WATCH", "w"), b"+OK\r\n")
    await writer.send(cmd("SET", "w", "1") + cmd("SET", "x", "1"), b"+OK\r\n+OK\r\n")
    await watcher.send(cmd("MULTI") + cmd("SET", "w", "2") + cmd("EXEC"), b"+OK\r\n+QUEUED\r\n*-1\r\n")


async def test_refused_writes_are_answered_by_the_refusal(server: Server) -> None:
    c = Client(server)
    server.engine.write_refusal = "memory watchdog: RSS over the limit"
    lsn = server.engine.last_lsn
    refusal = b"-OOM memory watchdog: RSS over the limit\r\n"
    await c.send(cmd("SET", "a", "1") + cmd("SET", "b", "2") + cmd("GET", "a"), refusal * 2 + b"$-1\r\n")
    assert server.engine.last_lsn == lsn
    server.engine.write_refusal = None
    await c.send(cmd("SET", "a", "1") + cmd("GET", "a"), b"+OK\r\n$1\r\n1\r\n")


async def test_a_failed_ack_turns_every_set_of_the_run_into_the_error(server: Server,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    c = Client(server)
    engine = server.engine

    def fail(lsn: int) -> bool:
        raise DurabilityError("WAL write failed: No space left on device")

    monkeypatch.setattr(engine, "durable_now", fail)
    monkeypatch.setattr(engine, "is_durable", lambda lsn: False)
    err = b"-MISCONF WAL write failed: No space left on device\r\n"  # (DurabilityError's prefix, as Redis)
    await c.send(cmd("SET", "a", "1") + cmd("GET", "nothing") + cmd("SET", "b", "2") + cmd("SET", "c", "3"),
                 err + b"$-1\r\n" + err + err)


async def test_sets_over_the_buffer_cap_wait_for_admission(server: Server) -> None:
    c = Client(server)
    engine = server.engine
    await c.send(cmd("SET", "fill", "x" * 1000), b"+OK\r\n")
    engine.buffer_max_bytes = 100  # over the cap now: the next SETs go through admit(), which flushes
    lsn = engine.last_lsn
    await c.send(cmd("SET", "a", "1") + cmd("SET", "b", "2"), b"+OK\r\n+OK\r\n")
    assert engine.store.flushed_lsn >= lsn  # the flush ran before they were admitted
    await c.send(cmd("MGET", "fill", "a", "b"), b"*3\r\n$1000\r\n" + b"x" * 1000 + b"\r\n$1\r\n1\r\n$1\r\n2\r\n")


async def test_a_long_run_checks_the_buffer_cap_again_every_mib(server: Server) -> None:
    """Megabytes of SETs in one read (they pile up while a batch waits) do not skip admission."""
    c = Client(server)
    engine = server.engine
    engine.buffer_max_bytes = 512 * 1024
    lsn = engine.last_lsn
    big = "x" * (600 * 1024)
    # SETs 1-2 pass 1 MiB: applied as one run; the buffer is then over its cap, so SET 3 waits for a flush
    await c.send(cmd("SET", "a", big) + cmd("SET", "b", big) + cmd("SET", "c", big), b"+OK\r\n" * 3)
    assert engine.last_lsn == lsn + 2 and engine.store.flushed_lsn == lsn + 1
    assert server.stats_commands == 3


async def test_flush_max_records_counts_each_write_of_a_run(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_mod, "peer_credentials", lambda sock: (1, os.geteuid(), os.getegid(), []))
    async with Engine(str(tmp_path), fsync="everysec", flush_max_records=10, flush_max_age=3600) as engine:
        c = Client(Server(engine, str(tmp_path / "unused.sock")))
        await c.send(b"".join(cmd("SET", f"k{i}", "v") for i in range(9)), b"+OK\r\n" * 9)
        assert engine.active.records == 1 and engine.active.writes == 9
        # 9 writes: under flush_max_records, so no flush was asked for, started or done
        assert not engine._flush_wanted.is_set() and engine.flush_started is None and engine.flush_count == 0
        with anyio.fail_after(5):
            await c.send(b"".join(cmd("SET", f"k{i}", "v") for i in range(9, 12)), b"+OK\r\n" * 3)
            while engine.store.flushed_lsn < 2:  # 12 writes in 2 records: due
                await anyio.sleep(0.005)


async def test_a_command_that_raises_after_a_group_ack_costs_only_its_own_connection(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in one command, run when the group ack resumes its connection, must not strand the
    other connections released by the same ack: they get their replies; the failing one gets
    -ERR internal error and is closed."""
    from memd.commands import COMMANDS, Command

    def boom(ctx: object, args: list[bytes]) -> None:
        raise RuntimeError("a bug")
    monkeypatch.setitem(COMMANDS, b"boom", Command("boom", boom, -1, False, False, False))  # type: ignore[arg-type]
    monkeypatch.setattr(server_mod, "peer_credentials", lambda sock: (1, os.geteuid(), os.getegid(), []))
    async with Engine(str(tmp_path), fsync="always") as engine:
        server = Server(engine, str(tmp_path / "unused.sock"))
        a, b = Client(server), Client(server)
        a.conn.data_received(cmd("SET", "a", "1"))  # waits for the fsync: A is busy
        assert a.conn.busy
        a.conn.data_received(cmd("BOOM"))  # buffered until A's ack
        b.conn.data_received(cmd("SET", "b", "2"))  # in the same group ack, after A
        with anyio.fail_after(5):
            while b"+OK\r\n" not in bytes(b.transport.data) or not a.conn.closing:
                await anyio.sleep(0.001)
        assert bytes(b.transport.data) == b"+OK\r\n"
        assert bytes(a.transport.data).startswith(b"+OK\r\n-ERR internal error: a bug")


# ---- runs of MEM.PUT (a command's run handler, see memd.commands.batched) ----------------------

def mem_put(ns: str, key: str, value: str, *opts: str) -> bytes:
    return cmd("MEM.PUT", ns, key, value, *opts)


async def test_a_run_of_mem_puts_is_one_wal_record_and_answers_each_put(server: Server) -> None:
    c = Client(server)
    lsn = server.engine.last_lsn
    await c.send(b"".join(mem_put("u.1", f"k{i % 3}", f'{{"i":{i}}}') for i in range(7)),
                 b":1\r\n:1\r\n:1\r\n:2\r\n:2\r\n:2\r\n:3\r\n")
    assert server.engine.last_lsn == lsn + 1
    assert server.stats_commands == 7 and server.stats_writes == 7
    item = server.engine.memories.get("u.1", "k0")
    assert item is not None and (item.value, item.version) == ('{"i":6}', 3)


async def test_bad_puts_in_a_run_get_their_own_error_and_write_nothing(server: Server) -> None:
    c = Client(server)
    payload = [mem_put("u.1", "a", '{"x":1}'), mem_put("u.1", "b", "[1]"), mem_put("u..1", "c", "{}"),
               mem_put("u.1", "d", "{}", "TTL", "-1"), mem_put("u.1", "e", "{}", "BOGUS"),
               mem_put("u.1", "f", "{}", "VECTOR", "v", b"\0\0\0\0"), cmd("MEM.PUT", "u.1", "g"),
               mem_put("u.1", "a", '{"x":2}')]
    alone = Client(server)
    # what the same commands answer one read at a time (no run): the reference, on other keys
    want = b""
    for frame in payload:
        alone.transport.data.clear()
        alone.conn.data_received(frame.replace(b"u.1", b"w.1").replace(b"u..1", b"w..1"))
        with anyio.fail_after(5):
            while not alone.transport.data.endswith(b"\r\n"):
                await anyio.sleep(0.001)
        want += bytes(alone.transport.data)
    want = want.replace(b"w.1", b"u.1").replace(b"w..1", b"u..1")  # (same lengths: the bulk headers hold)
    assert [line[:1] for line in want.split(b"\r\n")[:-1]] == [b":"] + [b"-"] * 6 + [b":"], want
    await c.send(b"".join(payload), want)
    mem = server.engine.memories
    assert [mem.get("u.1", k) is not None for k in "abcdefg"] == [True] + [False] * 6
    assert mem.get("u.1", "a").version == 2  # type: ignore[union-attr]


async def test_a_run_sees_writes_before_it_and_commands_after_it_see_the_run(server: Server) -> None:
    c = Client(server)
    c.conn.data_received(mem_put("u.1", "k", '{"v":0}') + mem_put("u.1", "k", '{"v":1}') + cmd("MEM.GET", "u.1", "k")
                         + cmd("MEM.DEL", "u.1", "k") + mem_put("u.1", "k", '{"v":2}') + cmd("MEM.GET", "u.1", "k"))
    with anyio.fail_after(5):
        while bytes(c.transport.data).count(b"\r\n") < 8:
            await anyio.sleep(0.001)
    lines = bytes(c.transport.data).split(b"\r\n")
    assert lines[:2] == [b":1", b":2"]
    got = json.loads(lines[3])
    assert (got["value"], got["version"]) == ({"v": 1}, 2)
    assert lines[4:6] == [b":1", b":3"]
    got = json.loads(lines[7])
    assert (got["value"], got["version"]) == ({"v": 2}, 3)


async def test_mem_puts_inside_multi_are_queued_not_run(server: Server) -> None:
    c = Client(server)
    await c.send(cmd("MULTI") + mem_put("u.1", "k", "{}") + mem_put("u.1", "k", "{}") + cmd("EXEC"),
                 b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n:1\r\n:2\r\n")


async def test_refused_mem_puts_are_answered_by_the_refusal(server: Server) -> None:
    c = Client(server)
    server.engine.write_refusal = "memd is refusing writes: test"
    try:
        await c.send(mem_put("u.1", "k", "{}") * 2, b"-OOM memd is refusing writes: test\r\n" * 2)
    finally:
        server.engine.write_refusal = None
    assert server.engine.memories.get("u.1", "k") is None
