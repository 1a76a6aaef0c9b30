"""The RESP server on a Unix socket: connections, batching, limits, access.

Why an ``asyncio.Protocol`` and not anyio byte streams for connections: the
stream layer costs ~3.5 µs of server CPU per small request here, a Protocol
~0.65 µs (tiny frames over a Unix socket, 16 connections x 64 requests in
flight: ~250,000 req/s through asyncio streams, ~1.3-1.5 M req/s through a
Protocol), and the SET target (0.4x Redis at -P 16) leaves
~3 µs per request in total. anyio still owns the structure:
the daemon's task group, signals, cancellation and shutdown.

Per connection, each ``data_received`` parses *every* complete command
buffered, runs them back to back (each is synchronous and atomic), then
reaches the durability the writes among them need — under ``everysec`` one
write() for the whole batch, under ``always`` one shared group-commit fsync —
and sends all replies with one ``transport.write``. Replies stay in request
order: while a batch waits (fsync, backpressure, WAITAOF), later bytes are
only buffered, and reading pauses when that buffer passes its limit.

Access: the socket file is created inside a 0700 directory or
under a tight umask and then given its mode and group; then each peer's
SO_PEERCRED uid/gid and SO_PEERGROUPS supplementary groups are checked
against the allow lists; others get ``-NOPERM`` and are closed.
"""

from __future__ import annotations

import array
import asyncio
import fcntl
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from memd.blocking import Blocking, Waiter
from memd.commands import COMMANDS, NO_REPLY, Context, Deferred, load_all
from memd.commands.blocking import Block
from memd.commands.connection import execute, release_watches
from memd.commands.scripting import allowed_while_busy, busy_error
from memd.commands.serverview import InfoProvider, JobRunner
from memd.config import NamespaceRule
from memd.engine.engine import Engine
from memd.errors import CommandError, DurabilityError, MemdError, OverloadError, ProtocolError
from memd.pubsub import PubSub, Subscriptions
from memd.pushes import PushOutput
from memd.readrun import READ_COMMANDS, serve_reads
from memd.resp import Frames, ReplyEncoder, RequestParser

log = logging.getLogger("memd.server")

SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)
# A run of plain SETs (see Connection._run_ok) is applied and the buffer's cap checked again at
# least this often: commands that piled up while a batch waited can be megabytes of SETs.
RUN_MAX_BYTES = 1 << 20
# commands not flagged write that may write all the same: admitted like writes when the buffer is full
_MAY_WRITE = frozenset({b"exec", b"eval", b"evalsha"})
_MAY_REPLICATE = frozenset({"publish", "spublish"})  # not writes, but CLIENT PAUSE WRITE holds them (Redis 7.0)
_PAUSED_AS_WRITE = _MAY_REPLICATE | {"eval", "evalsha"}  # ... and scripts that may write


@dataclass(frozen=True, slots=True)
class Limits:
    max_clients: int = 10000
    max_bulk_bytes: int = 512 * 1024 * 1024
    max_args: int = 1024 * 1024
    max_inline_bytes: int = 64 * 1024
    max_pending_bytes: int = 64 * 1024 * 1024
    # Redis's client-output-buffer-limit pubsub (32mb 8mb 60): a subscriber whose unsent output reaches
    # the hard limit, or stays at or above the soft one for longer than the seconds, is disconnected
    pubsub_hard_bytes: int = 32 * 1024 * 1024
    pubsub_soft_bytes: int = 8 * 1024 * 1024
    pubsub_soft_seconds: float = 60.0


@dataclass(frozen=True, slots=True)
class Access:
    """Who may talk to the daemon (besides root, which always may)."""

    uids: frozenset[int]
    gids: frozenset[int]

    @classmethod
    def default(cls, extra_uids: tuple[int, ...] = (), extra_gids: tuple[int, ...] = (),
                group: int | None = None) -> Access:
        gids = {os.getegid(), *extra_gids}
        if group is not None:
            gids.add(group)
        return cls(frozenset({os.geteuid(), 0, *extra_uids}), frozenset(gids))

    def allows(self, uid: int, gid: int, groups: list[int]) -> bool:
        return uid in self.uids or gid in self.gids or any(g in self.gids for g in groups)


def peer_credentials(sock: socket.socket) -> tuple[int, int, int, list[int]]:
    """(pid, uid, gid, supplementary gids) of the peer, from the kernel."""
    pid, uid, gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    groups: list[int] = []
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 4 * 256)
        groups = list(array.array("I", raw))
    except OSError:
        pass
    return pid, uid, gid, groups


class Connection(PushOutput, asyncio.Protocol):
    """One client: parse, run in order, reply in order."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        limits = server.limits
        self.parser = RequestParser(limits.max_bulk_bytes, limits.max_args, limits.max_inline_bytes)
        self.encoder = ReplyEncoder(2)
        self.ctx = Context(engine=server.engine, server=server, may_block=True)
        self.backlog: list[list[bytes]] = []
        self.busy = False
        self.paused = False
        self.closing = False
        self.write_paused = False  # the client is not reading its replies: stop producing more
        # pub/sub output (memd.pushes): frames wait in ``pushes`` behind a reply held for its durability,
        # or until the end of the loop pass; while this connection runs its batch they join ``_out``
        self.subscriptions = self.ctx.subscriptions = Subscriptions(self.push)
        self.pushes = bytearray()
        self.held = False
        self.push_scheduled = False
        self.soft_since = 0.0  # when its output reached the soft limit (0: it is below)
        self.unsent = 0  # the transport's unsent bytes when last looked at (see push)
        self._out: bytearray | None = None
        self.parked: Waiter | None = None  # a blocking command waits: run nothing more until woken
        self.wake_held: list[tuple[bytearray, list[tuple[int, int]], int]] = []  # wake-up replies behind an ack

    # ---- asyncio callbacks ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # (uvloop's is not an asyncio.Transport subclass)
        server = self.server
        sock = transport.get_extra_info("socket")
        try:
            pid, uid, gid, groups = peer_credentials(sock)
        except OSError:
            pid, uid, gid, groups = -1, -1, -1, []
        self.ctx.peer_pid, self.ctx.peer_uid, self.ctx.peer_gid = pid, uid, gid
        self.ctx.peer_groups = tuple(groups)
        if not server.access.allows(uid, gid, groups):
            log.warning("client_refused reason=credentials uid=%d gid=%d pid=%d", uid, gid, pid)
            server.count_error("NOPERM")
            transport.write(b"-NOPERM this user (uid %d) may not use memd: add it to the daemon's group or to "
                            b"server.allow_uids in the config\r\n" % uid)
            self._close()
            return
        if len(server.connections) >= server.limits.max_clients:
            server.count_error("ERR")
            transport.write(b"-ERR max number of clients reached\r\n")
            self._close()
            return
        server.next_id += 1
        self.ctx.client_id = server.next_id
        self.ctx.authenticated = not server.password  # with a password, AUTH first (peer credentials passed)
        self.ctx.fd = sock.fileno() if sock is not None else -1
        self.ctx.created = self.ctx.last_active = time.monotonic()
        server.connections.add(self)
        server.stats_connections += 1
        # replies a client does not read count against its budget too (asyncio calls pause_writing)
        transport.set_write_buffer_limits(high=server.limits.max_pending_bytes)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        release_watches(self.ctx)
        if self.parked is not None:
            self.server.blocking.forget(self)
            self.parked = None
        if self.subscriptions.total:
            self.server.pubsub.drop(self.subscriptions)
        self.pushes = bytearray()
        self.server.connections.discard(self)
        self.server.idle.set()
        # no reference cycle outlives the connection: reference counting frees it, also once the
        # cyclic GC no longer walks it (memd.gcpolicy freezes what lives through young collections)
        self.subscriptions.sink = _closed_sink
        if getattr(self.transport, "_read_ready_cb", None) is not None:
            # asyncio's socket transport keeps a bound method of itself (its read callback), a cycle
            # that outlives the connection; nothing reads any more once the connection is lost
            self.transport._read_ready_cb = None  # type: ignore[union-attr]
        self.transport = None

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.parser.feed(data)
        if self.busy or self.parked is not None:
            if self.parser.buffered_bytes > self.server.limits.max_pending_bytes and not self.paused:
                assert self.transport is not None
                self.transport.pause_reading()
                self.paused = True
            return
        self._run_safely()

    # ---- the batch loop ------------------------------------------------------------------

    def _run_safely(self) -> None:
        """:meth:`_run`, where a bug in a command costs this connection only.

        ``_run`` is also called from the group ack (:meth:`acked`, for every connection whose
        replies one fsync released): an exception escaping there would leave every later
        connection of that ack without its replies. So the failing one gets ``-ERR internal
        error`` and is closed (what its pipeline did is unknown), and the loop goes on.
        """
        try:
            self._run()
        except Exception as exc:  # noqa: BLE001 - never leave other clients hanging on a bug
            log.exception("connection_error id=%d", self.ctx.client_id)
            self._fail(b"-ERR internal error: %b\r\n" % str(exc).encode())
        finally:
            self._out = None

    def _take(self) -> list[list[bytes]] | None:
        if self.backlog:
            cmds, self.backlog = self.backlog, []
            return cmds
        try:
            return self.parser.commands()
        except ProtocolError as exc:
            self._fail(b"-ERR %b\r\n" % str(exc).encode())
            return None

    def _run(self) -> None:
        """Run every complete command; stop when one needs an await (then resume later)."""
        engine = self.server.engine
        while not self.busy and self.parked is None and not self.closing and not self.write_paused:
            cmds = self._take()
            if not cmds:
                break
            ctx = self.ctx
            ctx.last_active = time.monotonic()  # once per batch: CLIENT LIST's idle needs no more
            out = bytearray()
            if self.pushes:  # messages that came before this batch go before its replies
                out, self.pushes = self.pushes, out
            self._out = out
            writes: list[tuple[int, int]] = []  # (start, end) in out of replies to write commands
            lsn_before = engine.last_lsn
            sets: list[tuple[bytes, bytes]] = []  # a run of plain SETs not applied yet (see _run_ok)
            run_bytes = 0
            run_end = 0  # commands before this index were answered by a command's run handler
            runs, run_min = self.server.run_commands, self.server.run_min_argv
            for i, argv in enumerate(cmds):
                if i < run_end:
                    continue
                script = self.server.script
                if script is not None:  # a script runs in its thread and holds the engine
                    if not script.past_limit():  # hold everything until it ends or passes its limit
                        self.backlog = cmds[i:] + self.backlog
                        self._suspend(out, writes, lsn_before, self._wait_script)
                        return
                    if not allowed_while_busy(argv):
                        if ctx.multi is not None:
                            ctx.multi_error = True  # a refused command fails the transaction, as in Redis
                        self.server.count_error("BUSY")
                        self.encoder.protocol = ctx.protocol
                        self.encoder.encode_into(out, busy_error())
                        continue
                if len(argv) == 3 and argv[0].lower() == b"set" and (sets or self._run_ok()):
                    sets.append((argv[1], argv[2]))
                    start = len(out)
                    out += b"+OK\r\n"
                    writes.append((start, start + 5))
                    run_bytes += len(argv[1]) + len(argv[2])
                    if run_bytes >= RUN_MAX_BYTES:  # the next SET checks the buffer's cap again
                        self._apply_sets(sets)
                        sets, run_bytes = [], 0
                    continue
                if sets:
                    self._apply_sets(sets)  # before anything else runs: it may read those keys
                    sets, run_bytes = [], 0
                if argv[0].lower() in READ_COMMANDS and self._read_ok():  # a run of GET / MGET (memd.readrun)
                    run_end = self._read_run(cmds, i, out)
                    if run_end > i:
                        continue
                if len(argv) >= run_min and argv[0].lower() in runs and self._run_ok():
                    run_end = self._run_of(cmds, i, out, writes)
                    if run_end > i:
                        continue
                if engine.over_capacity() and self._is_write(argv):
                    self.backlog = cmds[i:] + self.backlog
                    self._suspend(out, writes, lsn_before, self._admit)
                    return
                if self.server.pause_until and self._paused_for(argv):  # CLIENT PAUSE: wait, then go on
                    self.backlog = cmds[i:] + self.backlog
                    self._suspend(out, writes, lsn_before, self._wait_unpause)
                    return
                before = engine.last_lsn
                reply = execute(self.ctx, argv)
                self.server.stats_commands += 1
                wrote = engine.last_lsn != before
                if engine.ready_keys:  # the command made a key some client waits on ready: serve them now
                    self.server.blocking.serve_ready()
                if isinstance(reply, Block):
                    self.backlog = cmds[i + 1:] + self.backlog
                    self._park(reply)
                    self._send(out, writes, lsn_before)  # what came before it is answered meanwhile
                    return
                if isinstance(reply, Deferred):
                    self.backlog = cmds[i + 1:] + self.backlog
                    self._suspend(out, writes, lsn_before, reply.fn)
                    return
                if isinstance(reply, CommandError):
                    self.server.count_error(reply.prefix)
                if ctx.reply != "on" or reply is NO_REPLY:  # CLIENT REPLY OFF / SKIP: Redis's flags, in order
                    mode = ctx.reply
                    ctx.reply = "on" if mode == "skip" else "skip" if mode == "skip_next" else mode
                    if reply is NO_REPLY or mode in ("off", "skip") and type(reply) is not Frames:
                        if wrote:
                            self.server.stats_writes += 1
                        if ctx.quit:
                            if self._send(out, writes, lsn_before):
                                self._close()
                            return
                        continue
                start = len(out)
                self.encoder.protocol = self.ctx.protocol  # HELLO 3 is itself answered in RESP3
                self.encoder.encode_into(out, reply)
                if wrote:
                    writes.append((start, len(out)))
                    self.server.stats_writes += 1
                if self.ctx.quit:
                    if self._send(out, writes, lsn_before):
                        self._close()  # (otherwise acked() closes once the replies are out)
                    return
            if sets:
                self._apply_sets(sets)
            if not self._send(out, writes, lsn_before):
                return
        if self.paused and not self.busy and not self.write_paused and self.transport is not None \
                and not self.closing:
            self.paused = False
            self.transport.resume_reading()

    def _subscribed(self) -> bool:
        """Subscriptions.total, inlined (the fast path asks at each run)."""
        subs = self.subscriptions
        return bool(subs.channels or subs.patterns or subs.shard_channels)

    def _run_ok(self) -> bool:
        """Whether a run may start here, on the fast path: plain ``SET key value``s, or the
        calls of a command with a run handler (MEM.PUT, see memd.commands.batched).

        Pipelined clients send runs of plain SETs (redis-benchmark, bulk
        loads). A run skips per-command dispatch and becomes one MSET: one
        WAL record and one memtable pass for the whole run, about half the
        event loop's CPU per SET. Atomicity only grows (the run is all or
        nothing after a crash), and no reply leaves before the run's record
        is durable. Everything that could make one of them answer anything
        but OK is checked here, once: a transaction queues instead, the
        buffer over its cap goes through admission, a RESP2 subscriber is refused, and a write refusal
        (WAL failure, memory watchdog) is answered by the normal path. None
        of that can change before the run is applied: no await comes between.
        """
        ctx = self.ctx
        if ctx.multi is not None or not ctx.authenticated or ctx.reply != "on" or self.server.pause_until \
                or self.server.engine.over_capacity() or ctx.protocol == 2 and self._subscribed():
            return False
        try:
            self.server.engine.check_writable()
        except CommandError:
            return False
        return True

    def _read_ok(self) -> bool:
        """Whether a run of reads may be answered here by memd.readrun: nothing the per-command
        path checks before a GET would answer it otherwise. A transaction queues it, CLIENT REPLY
        OFF / SKIP drops its reply, CLIENT PAUSE ALL holds it (WRITE does not), a RESP2 subscriber
        is refused, an unauthenticated client is refused, a script past its limit gets -BUSY."""
        ctx, server = self.ctx, self.server
        return ctx.multi is None and ctx.authenticated and ctx.reply == "on" and server.script is None \
            and not (server.pause_until and server.pause_all) and not (ctx.protocol == 2 and self._subscribed())

    def _read_run(self, cmds: list[list[bytes]], i: int, out: bytearray) -> int:
        """Answer the run of GET / MGET at ``cmds[i]`` (memd.readrun); return where it ended."""
        ctx = self.ctx
        end, wrongtype, name = serve_reads(ctx.keyspace, ctx.protocol, cmds, i, out, RUN_MAX_BYTES)
        if end > i:
            ctx.last_cmd = name
            self.server.stats_commands += end - i
            if wrongtype:
                self.server.count_error("WRONGTYPE", wrongtype)
        return end

    def _run_of(self, cmds: list[list[bytes]], i: int, out: bytearray, writes: list[tuple[int, int]]) -> int:
        """Answer the run of calls of ``cmds[i]``'s command that starts at ``i`` with its run handler
        (see memd.commands.batched); return where the run ended (``i``: no run here).

        The run stops at another command, a call of the wrong arity (the normal path answers
        it) or RUN_MAX_BYTES of arguments (the next run checks the buffer's cap again). The
        caller has checked what _run_ok checks, which no call in the run can change.
        """
        first = cmds[i][0]
        name = first.lower()
        cmd = COMMANDS[name]
        arity, n = cmd.arity, len(cmds)
        end, size = i, 0
        while end < n and size < RUN_MAX_BYTES:
            argv = cmds[end]
            if argv[0] != first and argv[0].lower() != name:
                break
            k = len(argv)  # (arity_ok, inline: every call of a run)
            if k != arity if arity >= 0 else k < -arity:
                break
            size += sum(map(len, argv))
            end += 1
        if end == i:
            return i
        wake = self.server.engine.wake_keys
        if wake and any(cmds[k][1] in wake for k in range(i, end)):
            return i  # a blocked client waits on one of its keys: one by one, each served after it (XADD)
        assert cmd.run is not None
        self.ctx.last_cmd = name  # (CLIENT LIST's cmd=, as execute() sets it)
        replies = cmd.run(self.ctx, [argv[1:] for argv in cmds[i:end]])
        encoder = self.encoder
        encoder.protocol = self.ctx.protocol
        written = 0
        for reply in replies:
            start = len(out)
            if type(reply) is bytes:  # (a bulk reply, inline: XADD's ids)
                out += b"$%d\r\n%b\r\n" % (len(reply), reply)
            else:
                encoder.encode_into(out, reply)
                if isinstance(reply, CommandError):
                    self.server.count_error(reply.prefix)
                    continue
            writes.append((start, len(out)))
            written += 1
        self.server.stats_writes += written
        self.server.stats_commands += end - i
        return end

    def _apply_sets(self, sets: list[tuple[bytes, bytes]]) -> None:
        self.ctx.keyspace.mset(sets)
        self.ctx.last_cmd = b"set"
        self.server.stats_commands += len(sets)
        self.server.stats_writes += len(sets)

    @staticmethod
    def _is_write(argv: list[bytes]) -> bool:
        name = argv[0].lower()
        cmd = COMMANDS.get(name)
        return cmd is not None and (cmd.write or name in _MAY_WRITE)

    def _send(self, out: bytearray, writes: list[tuple[int, int]], lsn_before: int) -> bool:
        """Send ``out`` now if it holds no write, else queue it for the server's next group ack."""
        lsn = self.server.engine.last_lsn
        self._out = None
        if lsn == lsn_before:
            self._write(out)
            return True
        self.busy = self.held = True
        self.server.queue_ack(Ack(self, out, writes, lsn))
        return False

    def acked(self, data: bytes | bytearray) -> None:
        """The group ack reached this batch: reply, then go on with what arrived meanwhile."""
        self._write(data)
        self.release_pushes()
        self.busy = False
        if self.ctx.quit:
            self._close()
            return
        while self.wake_held and not self.busy:  # a wake-up reply that came while this batch waited
            out, writes, lsn = self.wake_held.pop(0)
            self._deliver(out, writes, lsn)
        if not self.busy:
            self._run_safely()

    # ---- blocking commands (see memd.blocking) ------------------------------------------

    def _park(self, block: Block) -> None:
        """Park this client on the block's keys; its reply (and its next commands) wait for the wake."""
        ctx = self.ctx
        mode = ctx.reply  # CLIENT REPLY OFF / SKIP apply to the reply it will get, as to any other
        if mode != "on":
            ctx.reply = "on" if mode == "skip" else "skip" if mode == "skip_next" else mode
        self.parked = self.server.blocking.park(self, block, quiet=mode in ("off", "skip"))

    def wake(self, reply: Any, wrote: bool, quiet: bool) -> None:
        """Unparked (served, timed out, CLIENT UNBLOCK): reply, after the pop's durability when it
        popped, then run what the client pipelined behind the blocking command.

        Called from inside another connection's command loop (or a timer): the rest of this
        connection's pipeline runs on a later turn of the event loop, never nested in that one.
        """
        self.parked = None
        out = bytearray()
        if self.pushes and not self.busy:  # messages that came while it was parked go before its reply
            out, self.pushes = self.pushes, out
        start = len(out)
        if isinstance(reply, CommandError):
            self.server.count_error(reply.prefix)
        if not quiet:
            self.encoder.protocol = self.ctx.protocol
            self.encoder.encode_into(out, reply)
        writes: list[tuple[int, int]] = []
        if wrote:
            self.server.stats_writes += 1
            writes.append((start, len(out)))
        lsn = self.server.engine.last_lsn
        if self.busy:  # the replies before the blocking command still wait for their ack
            self.wake_held.append((out, writes, lsn))
            return
        self._deliver(out, writes, lsn)
        if not self.busy:
            asyncio.get_running_loop().call_soon(self._run_safely)

    def _deliver(self, out: bytearray, writes: list[tuple[int, int]], lsn: int) -> None:
        """Send ``out`` now, or (``writes`` in it) after ``lsn`` is durable through the group ack."""
        if not writes:
            self._write(out)
            return
        self.busy = self.held = True  # pub/sub pushes wait behind it (memd.pushes)
        self.server.queue_ack(Ack(self, out, writes, lsn))

    def pause_writing(self) -> None:
        """The transport's buffer passed max_pending_bytes: read and run nothing more for now."""
        self.write_paused = True
        if not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if not self.busy:
            self._run_safely()

    def _suspend(self, out: bytearray, writes: list[tuple[int, int]], lsn_before: int,
                 fn: Callable[[], Awaitable[Any]]) -> None:
        """Send what is done (after its durability), then await ``fn`` and resume."""
        self.busy = self.held = True
        self._out = None
        engine = self.server.engine
        lsn = engine.last_lsn

        async def resume() -> None:
            try:
                if lsn != lsn_before:
                    try:
                        await engine.wait_durable(lsn)
                        self._write(out)
                    except DurabilityError as exc:
                        self.server.count_error(exc.prefix, len(writes))
                        self._write(_fail_writes(out, writes, exc))
                else:
                    self._write(out)
                self.release_pushes()  # messages published meanwhile follow; during fn() they go out as they come
                try:
                    reply = await fn()
                except (CommandError, MemdError) as exc:
                    reply = exc if isinstance(exc, CommandError) else CommandError(str(exc))
                if engine.ready_keys:  # what it awaited wrote to a key some client waits on
                    self.server.blocking.serve_ready()
                if isinstance(reply, CommandError):
                    self.server.count_error(reply.prefix)
                if reply is not NO_REPLY:
                    self._write(self.encoder.encode(reply))
            except Exception as exc:  # noqa: BLE001
                log.exception("connection_error id=%d", self.ctx.client_id)
                self._fail(b"-ERR internal error: %b\r\n" % str(exc).encode())
            self.busy = False
            self._run_safely()

        asyncio.get_running_loop().create_task(resume())

    def _paused_for(self, argv: list[bytes]) -> bool:
        """Whether CLIENT PAUSE holds this command now: every command (ALL), or writes (WRITE; EXEC
        when its transaction writes), as Redis 7.0 postpones them. PUBLISH and SPUBLISH count as
        writes there (Redis's may-replicate commands)."""
        server = self.server
        if time.monotonic() >= server.pause_until:
            server.unpause()  # the pause ran out
            return False
        if server.pause_all:
            return True
        name = argv[0].lower()
        if name == b"exec":
            return self.ctx.multi is not None and any(c.write or c.name in _PAUSED_AS_WRITE
                                                      for c, _ in self.ctx.multi)
        cmd = COMMANDS.get(name)
        return cmd is not None and (cmd.write or cmd.name in _PAUSED_AS_WRITE)

    async def _wait_unpause(self) -> Any:
        """Wait for the pause's end (its time, or CLIENT UNPAUSE); the held commands then run."""
        server = self.server
        delay = server.pause_until - time.monotonic()
        if delay > 0:
            try:
                await asyncio.wait_for(server.unpaused.wait(), delay)
            except TimeoutError:
                pass
        return NO_REPLY

    async def _wait_script(self) -> Any:
        """Hold this connection's commands while a script runs: until it ends or passes lua-time-limit
        (then they are answered -BUSY, but SCRIPT KILL)."""
        script = self.server.script
        if script is not None:
            delay = script.deadline - time.monotonic()
            if delay > 0:
                try:
                    await asyncio.wait_for(script.ended.wait(), delay)
                except TimeoutError:
                    pass
        return NO_REPLY

    async def _admit(self) -> Any:
        try:
            await self.server.engine.admit()
        except OverloadError as exc:
            # answer the first waiting write with the error; the rest retry after it
            if self.backlog:
                self.backlog.pop(0)
            return exc
        return NO_REPLY

    def _write(self, data: bytes | bytearray) -> None:
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _fail(self, line: bytes) -> None:
        self.server.count_error(line[1:].split(b" ", 1)[0].decode(errors="replace"))
        self._write(line)
        self._close()

    def _close(self) -> None:
        self.closing = True
        if self.parked is not None:  # at once (CLIENT KILL): a push later in this pass must not pop for it
            self.server.blocking.forget(self)
            self.parked = None
        if self.transport is not None:
            self.transport.close()


def _closed_sink(resp2: bytes, resp3: bytes) -> None:
    """Where a closed connection's pub/sub frames go (nowhere): its Subscriptions no longer points back at it."""


@dataclass(slots=True)
class Ack:
    """A batch's replies, held until the WAL has what its writes need."""

    conn: Connection
    out: bytearray
    writes: list[tuple[int, int]]
    lsn: int


def _fail_writes(out: bytearray, writes: list[tuple[int, int]], exc: Exception) -> bytes:
    """Replace the replies of write commands by the durability error: they were not acknowledged."""
    line = b"-%b %b\r\n" % (getattr(exc, "prefix", "ERR").encode(), str(exc).encode())
    parts, last = [], 0
    for start, end in writes:
        parts += [bytes(out[last:start]), line]
        last = end
    parts.append(bytes(out[last:]))
    return b"".join(parts)


class Server:
    """Owns the listening socket and the set of connections."""

    def __init__(self, engine: Engine, socket_path: str, *, limits: Limits | None = None,
                 access: Access | None = None, socket_mode: int = 0o660, socket_group: int | None = None) -> None:
        load_all()
        self.run_commands = frozenset(name for name, cmd in COMMANDS.items() if cmd.run is not None)
        # the fewest arguments (name included) a call of them has: shorter commands (GET...) skip the lookup
        self.run_min_argv = min((abs(COMMANDS[name].arity) for name in self.run_commands), default=1 << 30)
        self.engine = engine
        self.blocking = Blocking(engine)  # clients parked by BLPOP & co.
        self.socket_path = socket_path
        self.pubsub_check_bytes = 0
        self.limits = limits or Limits()
        self.access = access or Access.default(group=socket_group)
        self.socket_mode = socket_mode
        self.socket_group = socket_group
        self.connections: set[Connection] = set()
        self._acks: list[Ack] = []
        self._ack_scheduled = False
        self.next_id = 0
        self.stats_connections = 0
        self.stats_commands = 0
        self.stats_writes = 0  # write commands that logged a WAL record (INFO memd_write_commands)
        self.stats_errors: dict[str, int] = {}  # error replies by RESP prefix (INFO errorstats)
        self.stats_output_limit_disconnects = 0  # subscribers cut off at their output-buffer limit
        self.pubsub = PubSub()  # channels and patterns: the server's, not the engine's (not durable, not per db)
        self._push_pending: list[PushOutput] = []
        self._push_scheduled = False
        self.idle = asyncio.Event()
        self.shutdown_requested: asyncio.Event | None = None
        self.config_view: Callable[[], dict[str, str]] = dict  # CONFIG GET's source; the daemon sets it
        self.namespace_rules: tuple[NamespaceRule, ...] = ()  # [memory] access; the daemon sets it
        self.maintenance: JobRunner | None = None  # MEMD.COMPACT / MEMD.BACKUP run its jobs; the daemon sets it
        self.info_providers: list[InfoProvider] = []  # extra INFO fields by section
        self.pause_until = 0.0  # CLIENT PAUSE: time.monotonic() it ends at; 0: no pause
        self.pause_all = False  # ... of every command (ALL), else of writes only (WRITE)
        self.unpaused = asyncio.Event()  # set (and replaced) when a pause ends early
        self.script: Any = None  # the script running in its thread (memd.commands.scripting.Running): the gate
        self.lua_time_limit_ms = 5000  # [server] lua_time_limit_ms; CONFIG SET lua-time-limit
        self.password = ""  # [server] password: "" = peer credentials alone admit a client; the daemon sets it
        self._server: asyncio.base_events.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._lock_fd = -1
        self._owns_socket_file = True  # False for a socket systemd passed (memd.socket keeps its file)

    @property
    def limits(self) -> Limits:
        return self._limits

    @limits.setter
    def limits(self, limits: Limits) -> None:
        """(Set at start and on reload.) Also the smallest pub/sub output limit in force, below which
        a push skips the full check (no limit: never)."""
        self._limits = limits
        self.pubsub_check_bytes = min((n for n in (limits.pubsub_hard_bytes, limits.pubsub_soft_bytes) if n),
                                      default=1 << 62)

    def schedule_pushes(self, conn: PushOutput) -> None:
        """Write ``conn``'s pushes once this event-loop pass is over (one write for all of them)."""
        self._push_pending.append(conn)
        if not self._push_scheduled:
            self._push_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_pushes)

    def _flush_pushes(self) -> None:
        self._push_scheduled = False
        pending, self._push_pending = self._push_pending, []
        for conn in pending:
            conn.flush_pushes()

    def count_error(self, prefix: str, n: int = 1) -> None:
        """Count ``n`` error replies with this RESP prefix: INFO errorstats and the metrics read it."""
        if n:
            self.stats_errors[prefix] = self.stats_errors.get(prefix, 0) + n

    def queue_ack(self, ack: Ack) -> None:
        """Collect acks for one event-loop pass, then reach durability once for all of them.

        Under everysec / no this turns 50 connections' WAL write()s into
        one; under always they share one group-commit fsync anyway.
        """
        self._acks.append(ack)
        if not self._ack_scheduled:
            self._ack_scheduled = True
            asyncio.get_running_loop().call_soon(self._commit)

    def _commit(self) -> None:
        self._ack_scheduled = False
        acks, self._acks = self._acks, []
        lsn = max(a.lsn for a in acks)
        try:
            if not self.engine.durable_now(lsn):
                asyncio.get_running_loop().create_task(self._commit_later(acks, lsn))
                return
        except DurabilityError as exc:
            self._settle(acks, exc)
            return
        self._settle(acks, None)

    async def _commit_later(self, acks: list[Ack], lsn: int) -> None:
        try:
            await self.engine.wait_durable(lsn)
        except DurabilityError as exc:
            self._settle(acks, exc)
            return
        except Exception as exc:  # noqa: BLE001 - never leave clients hanging on a bug
            log.exception("ack_failed")
            self._settle(acks, DurabilityError(f"internal error: {exc}"))
            return
        self._settle(acks, None)

    def _settle(self, acks: list[Ack], error: DurabilityError | None) -> None:
        """Reply to each batch: its writes are acknowledged only if they really reached the WAL."""
        for ack in acks:
            if error is None or self.engine.is_durable(ack.lsn):
                ack.conn.acked(ack.out)
            else:
                self.count_error(error.prefix, len(ack.writes))
                ack.conn.acked(_fail_writes(ack.out, ack.writes, error))

    def contexts(self) -> list[Context]:
        return [c.ctx for c in self.connections]

    @property
    def blocked_clients(self) -> int:
        """Clients parked by a blocking command (INFO blocked_clients)."""
        return len(self.blocking)

    def unblock_client(self, client_id: int, error: bool) -> bool:
        """CLIENT UNBLOCK: wake that client if a blocking command parked it."""
        return self.blocking.unblock(client_id, error)

    def _ready_soon(self) -> None:
        """Keys became ready outside a command the connections ran (the engine's on_ready):
        serve their clients on the loop's next turn (a no-op when a command loop did already)."""
        loop = self._loop
        if loop is None:
            return
        if threading.get_ident() == self._loop_thread:
            loop.call_soon(self.blocking.serve_ready)
        else:
            loop.call_soon_threadsafe(self.blocking.serve_ready)

    def kill_client(self, ctx: Context) -> None:
        """CLIENT KILL: close that connection now (what it has not been answered is dropped, as in Redis)."""
        for conn in self.connections:
            if conn.ctx is ctx:
                conn._close()
                return

    def pause(self, milliseconds: int, all_commands: bool) -> None:
        """CLIENT PAUSE: hold every client's commands (or writes) until then; a pause never shortens
        one in force, and ALL outranks WRITE (Redis's pauseClients)."""
        self.pause_until = max(self.pause_until, time.monotonic() + milliseconds / 1000)
        self.pause_all = self.pause_all or all_commands

    def unpause(self) -> None:
        """CLIENT UNPAUSE (or the pause's end): held connections go on."""
        self.pause_until, self.pause_all = 0.0, False
        self.unpaused.set()
        self.unpaused = asyncio.Event()

    def reset_stats(self) -> None:
        """CONFIG RESETSTAT: the counters INFO's stats and errorstats sections report start again from 0."""
        self.stats_connections = self.stats_commands = self.stats_writes = self.stats_output_limit_disconnects = 0
        self.pubsub.messages = 0
        self.stats_errors.clear()

    async def start(self, activated: socket.socket | None = None) -> None:
        """Bind the socket (safely), then accept; or accept on ``activated``, a listening socket from systemd.

        An adopted socket's file belongs to systemd (memd.socket): its mode and
        group come from SocketMode=/SocketGroup=, and close() leaves the file
        in place so that clients keep connecting across restarts. The lock
        next to it still keeps a second daemon off.
        """
        if activated is not None:
            self.socket_path = adopted_socket_path(activated)
            self._owns_socket_file = False
        self._lock_fd = lock_socket(self.socket_path)
        if activated is None:
            sock = bind_unix_socket(self.socket_path, self.socket_mode, self.socket_group)
        else:
            sock = activated
            sock.setblocking(False)
        loop = asyncio.get_running_loop()
        self._loop, self._loop_thread = loop, threading.get_ident()
        self.engine.on_ready = self._ready_soon
        self._server = await loop.create_unix_server(lambda: Connection(self), sock=sock, backlog=1024)
        log.info("listening socket=%s mode=%o activated=%s", self.socket_path, os.stat(self.socket_path).st_mode
                 & 0o7777, "no" if activated is None else "systemd")

    def stop_accepting(self) -> None:
        if self._server is not None:
            self._server.close()

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait (bounded) until no connection has a batch in flight, then close them all."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        script = self.script
        if script is not None and not script.invocation.dirty:
            script.invocation.killed = True  # a running script that wrote nothing is stopped, as SCRIPT KILL
        while any(c.busy for c in self.connections) and loop.time() < deadline:
            self.idle.clear()
            try:
                await asyncio.wait_for(self.idle.wait(), 0.05)
            except TimeoutError:
                pass
        for c in list(self.connections):
            c._close()

    async def close(self) -> None:
        self.stop_accepting()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        try:
            if self._owns_socket_file:
                os.unlink(self.socket_path)
        except FileNotFoundError:
            pass
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1


def lock_socket(path: str) -> int:
    """Hold ``<socket>.lock``: a second daemon on the same path refuses instead of stealing it."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise MemdError(f"another memd is already serving {path}: stop it first, or choose another "
                        "--socket") from None
    return fd


def adopted_socket_path(sock: socket.socket) -> str:
    """The file path a socket-activated listener is bound to (abstract names have no file to protect)."""
    name = sock.getsockname()
    if not isinstance(name, str) or not name:
        raise MemdError(f"the socket systemd passed is not bound to a file path ({name!r}): memd needs the file's "
                        "mode and group as its first access gate; use ListenStream=/run/memd/memd.sock")
    return name


def bind_unix_socket(path: str, mode: int, group: int | None) -> socket.socket:
    """Create the listening socket so that it never exists with looser permissions than ``mode``."""
    if os.path.exists(path):
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(1.0)
            probe.connect(path)
        except OSError:
            os.unlink(path)  # stale: nobody answers (and we hold the lock)
        else:
            raise MemdError(f"a live server already answers on {path}: stop it first")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # born 0600: owner only, until chmod below sets the configured mode
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    # chown only when needed: under systemd, Group= already gave the group, and the unit's
    # SystemCallFilter=~@privileged refuses chown()
    if group is not None and os.stat(path).st_gid != group:
        os.chown(path, -1, group)
    os.chmod(path, mode)
    sock.listen(1024)
    sock.setblocking(False)
    return sock
