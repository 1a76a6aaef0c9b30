"""Fuzz target: command pipelines through memd's real connection handler over a real engine.

Why in-process: the daemon's per-connection code is ``memd.server.Connection``
(an asyncio Protocol) and its batch loop; driving it through a fake
transport on one event loop runs exactly that code, the real engine (WAL,
buffer, SQLite flushes, MEM.* searches) under it, without a socket's
cost per input, so a million inputs fit in a run. The event loop and the
engine live across inputs (state builds up, as in a daemon); the engine is
closed and reopened on the same data directory every ``restart_every``
inputs, so recovery replays what the fuzzer wrote.

Invariants, each a crash when broken:
- the handler never raises out, and the engine's tasks never die;
- every request gets exactly one well-formed reply (RESP2 or RESP3, checked
  by hiredis), in a bounded time; after QUIT, or a request over a protocol
  limit (answered with one ``-ERR Protocol error``), the connection is
  closed; nothing more arrives;
- a second connection owns ``own:*`` keys of every type and a MEM.*
  memory; every ``check_every`` inputs (and after every restart) it reads
  them back byte for byte as first written;
- no leaked connection (the server's set is exactly the open ones), WATCH
  count or task (none but the engine's own between inputs; none at all once
  the engine is closed).

Expected replies come from the reference parser (the pure-Python engine of
:class:`memd.resp.RequestParser`, which the RESP target checks): what it
parses from the bytes sent is what the server must answer.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from typing import Any

import hiredis

import memd.server as server_mod
from memd.engine.engine import Engine
from memd.errors import ProtocolError
from memd.resp import RequestParser
from memd.server import Connection, Limits, Server
from tests.fake_transport import FakeTransport
from tests.fuzz import grammar
from tests.fuzz.grammar import Source
from tests.fuzz.resp_target import run_parser, to_resp

LIMITS = Limits(max_clients=64, max_bulk_bytes=1 << 16, max_args=256, max_inline_bytes=1024,
                max_pending_bytes=1 << 20)
PENDING_MAX = 1 << 16  # a client whose unfinished frame grows past this reconnects
REPLY_DEADLINE = 30.0  # seconds a request may wait for its reply (a WAITAOF or a flush on a busy box)
_NEED = object()

# The second client's data: written once, read back unchanged throughout.
OWNER_WRITES: tuple[list[bytes], ...] = (
    [b"SET", b"own:str", b"owned \x00\xff value"],
    [b"SET", b"own:num", b"41"],
    [b"HSET", b"own:h", b"a", b"1", b"b", b"2"],
    [b"RPUSH", b"own:l", b"x", b"y", b"z"],
    [b"SADD", b"own:s", b"m1", b"m2"],
    [b"ZADD", b"own:z", b"1.5", b"a", b"-2", b"b"],
    [b"SET", b"own:ttl", b"t", b"EX", b"100000000"],
    [b"MEM.PUT", b"own.ns", b"k", b'{"who":"owner","text":"zebra preferences"}'],
)
OWNER_READS: tuple[list[bytes], ...] = (
    [b"GET", b"own:str"], [b"GET", b"own:num"], [b"HGETALL", b"own:h"], [b"LRANGE", b"own:l", b"0", b"-1"],
    [b"SMEMBERS", b"own:s"], [b"ZRANGE", b"own:z", b"0", b"-1", b"WITHSCORES"], [b"GET", b"own:ttl"],
    [b"TYPE", b"own:h"], [b"MEM.GET", b"own.ns", b"k"], [b"MEM.HISTORY", b"own.ns", b"k"],
    [b"EXISTS", b"own:str", b"own:num", b"own:h", b"own:l", b"own:s", b"own:z", b"own:ttl"],
)
OWNER_TTL = [b"PTTL", b"own:ttl"]


class LoopTransport(FakeTransport):
    """The fake transport, closing as asyncio's does: ``connection_lost`` on the next loop pass."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.loop = loop
        self.protocol: Connection | None = None

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.protocol is not None:
                self.loop.call_soon(self.protocol.connection_lost, None)


class Client:
    """One connection and a RESP reader over what the server wrote to it."""

    def __init__(self, server: Server, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = LoopTransport(loop)
        self.conn = Connection(server)
        self.transport.protocol = self.conn
        self.conn.connection_made(self.transport)  # type: ignore[arg-type]
        self.reader = hiredis.Reader(notEnoughData=_NEED)
        self.read = 0
        self.replies: list[Any] = []
        # The reference parse of what this client sent: a partial frame at the end of one input is
        # completed by the next one's bytes, in the server's parser and here alike.
        self.ref = RequestParser(LIMITS.max_bulk_bytes, LIMITS.max_args, LIMITS.max_inline_bytes, accelerate=False)
        self.pending = b""  # bytes sent since the reference last held nothing (for the key-prefix check)

    def expect(self, stream: bytes) -> tuple[list[list[bytes]], str | None]:
        """The commands the server must answer for ``stream``, and the protocol error it ends with."""
        self.ref.feed(stream)
        cmds: list[list[bytes]] = []
        try:
            while got := self.ref.commands():
                cmds += got
        except ProtocolError as exc:
            return cmds, str(exc)
        self.pending = self.pending + stream if self.ref.buffered_bytes else b""
        return cmds, None

    def take_replies(self) -> None:
        data = self.transport.data
        if self.read < len(data):
            self.reader.feed(bytes(data[self.read:]))
            self.read = len(data)
        while True:
            try:
                reply = self.reader.gets()
            except hiredis.ProtocolError as exc:
                raise AssertionError(f"malformed reply bytes: {exc}; stream tail {bytes(data[-200:])!r}") from None
            if reply is _NEED:
                return
            self.replies.append(reply)

    async def wait_replies(self, count: int, what: str) -> list[Any]:
        """Wait until ``count`` replies came; then a few loop passes to see that no more come."""
        deadline = time.monotonic() + REPLY_DEADLINE
        spins = 0
        while True:
            self.take_replies()
            if len(self.replies) >= count:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: {len(self.replies)} of {count} replies after {REPLY_DEADLINE} s "
                                     f"(busy={self.conn.busy}, closed={self.transport.closed})")
            spins += 1
            await asyncio.sleep(0 if spins < 50 else 0.001)
        await asyncio.sleep(0)  # a reply sent twice would be written on this pass at the latest
        await asyncio.sleep(0)
        self.take_replies()
        if len(self.replies) != count:
            raise AssertionError(f"{what}: {len(self.replies)} replies to {count} requests: "
                                 f"{self.replies[count:][:5]!r}")
        if self.reader.has_data():
            raise AssertionError(f"{what}: a partial reply follows the last one: {bytes(self.transport.data[-200:])!r}")
        got, self.replies = self.replies, []
        return got


class DispatchTarget:
    """The driver's view of this target (see :mod:`benchmarks.fuzz`)."""

    name = "dispatch"
    dictionary: tuple[bytes, ...] = tuple(n for n in grammar.NAMES if len(n) > 2) + grammar.WORDS[:40]

    def __init__(self, check_every: int = 50, restart_every: int = 20_000, fresh_every: int = 5) -> None:
        self.check_every = check_every
        self.restart_every = restart_every
        self.fresh_every = fresh_every  # every Nth restart starts from an empty data directory (bounds disk use)
        self.loop = asyncio.new_event_loop()
        # the fake transport has no socket to ask for peer credentials: this process's own
        server_mod.peer_credentials = lambda sock: (os.getpid(), os.geteuid(), os.getegid(), [])
        shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        self.base = tempfile.mkdtemp(prefix="memd-fuzz-", dir=shm)  # tmpfs: fsync (WAITAOF) costs nothing
        self.generation = 0
        self.counters = {"requests": 0, "replies_checked": 0, "closed_by_quit": 0, "closed_by_protocol_error": 0,
                         "aborted_by_client": 0, "owner_checks": 0, "restarts": 0, "connections_opened": 0,
                         "leaked_connections": 0, "leaked_tasks": 0, "wrong_owner_reads": 0}
        self.inputs = 0
        self.client: Client | None = None
        self.baseline: list[Any] | None = None
        self.seeds = self._seeds()
        self.loop.run_until_complete(self._start(fresh=True))

    # ---- engine lifecycle -------------------------------------------------------------

    @property
    def data_dir(self) -> str:
        return os.path.join(self.base, f"data{self.generation}")

    async def _hold(self, ready: asyncio.Future[Engine], stop: asyncio.Event) -> None:
        async with Engine(self.data_dir, fsync="everysec", flush_max_records=2000) as engine:
            ready.set_result(engine)
            await stop.wait()

    async def _start(self, fresh: bool) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[Engine] = loop.create_future()
        self.stop = asyncio.Event()
        self.holder = loop.create_task(self._hold(ready, self.stop))
        self.engine = await ready
        self.server = Server(self.engine, os.path.join(self.base, "unused.sock"), limits=LIMITS)
        self.owner = self._connect()
        if fresh:
            replies = await self._send(self.owner, OWNER_WRITES, "owner writes")
            if any(isinstance(r, hiredis.ReplyError) for r in replies):
                raise AssertionError(f"the owner's writes failed: {replies!r}")
            self.baseline = None
        await self._check_owner()
        self.engine_tasks = asyncio.all_tasks() - {asyncio.current_task()}

    async def _stop(self) -> None:
        """Close every connection and the engine; nothing may be left running."""
        for conn in list(self.server.connections):
            conn.transport.close()  # type: ignore[union-attr]  # a client going away
        self.client = None
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        if self.server.connections:
            self.counters["leaked_connections"] += len(self.server.connections)
            raise AssertionError(f"{len(self.server.connections)} connections still registered after they closed")
        if self.engine.watching:
            raise AssertionError(f"engine.watching is {self.engine.watching} with no connection open")
        self.stop.set()
        await self.holder  # raises what killed the engine, if anything did
        await self._settle_tasks(set(), "after the engine closed")

    async def _settle_tasks(self, allowed: set[asyncio.Task[Any]], when: str) -> None:
        deadline = time.monotonic() + REPLY_DEADLINE
        while True:
            extra = asyncio.all_tasks() - allowed - {asyncio.current_task()}
            if not extra:
                return
            if time.monotonic() > deadline:
                self.counters["leaked_tasks"] += len(extra)
                raise AssertionError(f"tasks still running {when}: {extra!r}")
            await asyncio.sleep(0.001)

    async def _restart(self) -> None:
        await self._cleanup_fuzz_keys()
        await self._stop()
        self.counters["restarts"] += 1
        fresh = self.counters["restarts"] % self.fresh_every == 0
        if fresh:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.generation += 1
        await self._start(fresh=fresh)

    async def _cleanup_fuzz_keys(self) -> None:
        """Delete the fuzzer's keys (APPEND and RPUSH would otherwise grow them for the whole run)."""
        c = self._connect()
        keys = (await self._send(c, [[b"KEYS", grammar.KEY_PREFIX + b"*"]], "cleanup"))[0]
        step = LIMITS.max_args - 1  # DEL and its keys within the fuzzing limits
        for i in range(0, len(keys), step):
            deleted = (await self._send(c, [[b"DEL", *keys[i:i + step]]], "cleanup"))[0]
            if not isinstance(deleted, int):
                raise AssertionError(f"cleanup: DEL of the fuzzer's keys answered {deleted!r}")
        c.transport.close()

    # ---- connections ------------------------------------------------------------------

    def _connect(self) -> Client:
        self.counters["connections_opened"] += 1
        return Client(self.server, self.loop)

    async def _send(self, client: Client, cmds: tuple[list[bytes], ...] | list[list[bytes]], what: str) -> list[Any]:
        client.conn.data_received(to_resp(list(cmds)))
        return await client.wait_replies(len(cmds), what)

    async def _check_owner(self) -> None:
        replies = await self._send(self.owner, OWNER_READS + (OWNER_TTL,), "owner reads")
        reads, ttl = replies[:-1], replies[-1]
        if self.baseline is None:
            self.baseline = reads
            if reads[-1] != 7 or reads[0] != b"owned \x00\xff value":
                raise AssertionError(f"the owner's keys did not read back after writing them: {reads!r}")
        elif reads != self.baseline:
            self.counters["wrong_owner_reads"] += 1
            diff = [(OWNER_READS[i], a, b) for i, (a, b) in enumerate(zip(self.baseline, reads, strict=True)) if a != b]
            raise AssertionError(f"another client's keys changed under the fuzzer: {diff!r}")
        if not (isinstance(ttl, int) and 0 < ttl <= 100_000_000_000):
            self.counters["wrong_owner_reads"] += 1
            raise AssertionError(f"own:ttl's PTTL is {ttl!r}")
        live = {c for c in self.server.connections}
        expected = {self.owner.conn} | ({self.client.conn} if self.client is not None else set())
        if live != expected:
            self.counters["leaked_connections"] += len(live - expected)
            raise AssertionError(f"the server holds {len(live)} connections, {len(expected)} are open")
        watching = sum(1 for c in live if c.ctx.watched)
        if self.engine.watching != watching:
            raise AssertionError(f"engine.watching is {self.engine.watching}, {watching} connections watch keys")
        self.counters["owner_checks"] += 1

    # ---- one input --------------------------------------------------------------------

    def one(self, data: bytes) -> None:
        self.loop.run_until_complete(self._one(data))
        self.inputs += 1
        if self.holder.done():
            self.holder.result()  # raises what killed the engine
            raise AssertionError("the engine stopped on its own")
        if self.inputs % self.check_every == 0:
            self.loop.run_until_complete(self._check_owner())
        if self.inputs % self.restart_every == 0:
            self.loop.run_until_complete(self._restart())

    def build(self, src: Source) -> tuple[bytes, list[int], bool]:
        """The bytes to send, where reads end, whether the client goes away without reading."""
        flags = src.byte()
        parts: list[bytes] = []
        for _ in range(1 + src.below(8)):
            argv = grammar.build_command(src)
            parts.append(grammar.to_inline(argv, src) if src.below(8) == 0 else grammar.frame(argv))
        if flags & 0x30 == 0x30:
            parts.append(src.raw(64))  # garbage after the commands
        elif flags & 0x30 == 0x20 and flags & 0x40:
            parts.append(grammar.BREACHES[src.below(len(grammar.BREACHES))](
                LIMITS.max_bulk_bytes, LIMITS.max_args, LIMITS.max_inline_bytes))
        stream = b"".join(parts)
        cuts = sorted({src.below(len(stream) + 1) for _ in range(src.below(4))})
        abort = flags & 0x8F == 0x8F
        return stream, cuts, abort

    async def _one(self, data: bytes) -> None:
        src = Source(data)
        if self.client is None or src.below(64) == 0:  # sometimes a new client while the old one's state is live
            if self.client is not None:
                self.client.transport.close()
            self.client = self._connect()
            await asyncio.sleep(0)
        if len(self.client.pending) > PENDING_MAX:  # a frame that never ends: this client gives up
            self.client.transport.close()
            self.client = self._connect()
            await asyncio.sleep(0)
        client = self.client
        stream, cuts, abort = self.build(src)
        trial, _ = run_parser(client.pending + stream, (), LIMITS.max_bulk_bytes, LIMITS.max_args,
                              LIMITS.max_inline_bytes, accelerate=False, drain_each_read=True)
        if not all(grammar.allowed(c) for c in trial):  # bytes outside the grammar spelled a foreign key
            stream, cuts = b"", []
        cmds, error = client.expect(stream)
        quit_at = next((i for i, c in enumerate(cmds) if c[0].lower() == b"quit"), None)
        if quit_at is not None:
            expected, closes = quit_at + 1, "quit"
        elif error is not None:
            expected, closes = len(cmds) + 1, "protocol"
        else:
            expected, closes = len(cmds), ""
        bounds = [0, *cuts, len(stream)]
        for a, b in zip(bounds, bounds[1:], strict=False):
            if b > a and not client.transport.closed:
                client.conn.data_received(stream[a:b])
                await asyncio.sleep(0)
        self.counters["requests"] += len(cmds)
        if abort:  # the client goes away without reading: whatever is in flight must end
            client.transport.close()
            self.client = None
            self.counters["aborted_by_client"] += 1
            deadline = time.monotonic() + REPLY_DEADLINE
            while client.conn.busy:
                if time.monotonic() > deadline:
                    raise AssertionError("a closed connection's batch never finished")
                await asyncio.sleep(0.001)
            await asyncio.sleep(0)
            if client.conn in self.server.connections:
                raise AssertionError("a closed connection is still registered")
            await self._settle_tasks(self.engine_tasks, "after a client went away")
            return
        replies = await client.wait_replies(expected, f"pipeline of {len(cmds)} ({error or 'no error'})")
        self.counters["replies_checked"] += len(replies)
        if closes == "protocol" and not (isinstance(replies[-1], hiredis.ReplyError)
                                         and str(replies[-1]).startswith("ERR Protocol error")):
            raise AssertionError(f"a protocol error ({error}) was answered with {replies[-1]!r}")
        if closes:
            if not client.transport.closed:
                raise AssertionError(f"the connection stayed open after {closes}")
            await asyncio.sleep(0)
            if client.conn in self.server.connections:
                raise AssertionError("a closed connection is still registered")
            self.counters["closed_by_quit" if closes == "quit" else "closed_by_protocol_error"] += 1
            self.client = None
        elif client.transport.closed:
            raise AssertionError(f"the connection was closed after {len(cmds)} requests with no QUIT or error")
        elif client.conn.busy or client.conn.backlog:
            raise AssertionError("the connection is still busy after answering everything")
        await self._settle_tasks(self.engine_tasks, "after the replies")

    # ---- driver interface -------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        return dict(self.counters)

    def finish(self) -> dict[str, int]:
        """Final checks: the owner's keys, then close everything; nothing may leak."""
        self.loop.run_until_complete(self._check_owner())
        self.loop.run_until_complete(self._stop())
        self.loop.close()
        shutil.rmtree(self.base, ignore_errors=True)
        return self.stats()

    @staticmethod
    def _seeds() -> tuple[bytes, ...]:
        return (bytes(range(0, 256, 7)), b"\x00" * 64, bytes(range(255, 0, -3)), b"\x30" + bytes(range(1, 200)),
                b"\x8f" + bytes(range(3, 250, 2)))
