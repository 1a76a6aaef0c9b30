"""Clients parked by blocking commands (BLPOP, BLMOVE, BZPOPMIN...), and their service.

Redis's model (``blocked.c``), which this follows:

- A blocking command that finds every key empty parks its client on those
  keys, in one FIFO queue per ``(database, key)``. The connection then runs
  none of its later (pipelined) commands until it is unblocked.
- A write that leaves a waited-on key holding a list or a sorted set marks
  the key *ready*. The engine does the marking in ``Engine.apply``
  (``wake_keys`` / ``ready_keys``), so every write counts whatever ran it:
  a command, a whole MULTI/EXEC, a script, a served BLMOVE.
- After each command (so after EXEC, after a script) the server calls
  :meth:`Blocking.serve_ready`, Redis's ``handleClientsBlockedOnKeys``: for
  each ready key in the order it became ready, the clients waiting on it
  are served first-come first-served, each with the key's type checked
  again (a client waiting for a list skips a key that is now a sorted set
  and stays parked), until the key is empty. Each pop is its own
  ``engine.apply``: one WAL record, and the server holds the reply until
  that record has the durability of the fsync policy, like any write. A
  served BLMOVE may make its destination ready: it is served in a later
  round of the same call.
- Stream readers (XREAD / XREADGROUP BLOCK) on a ready key are each asked in
  turn, whatever the key holds; each serves itself or stays parked (see
  :mod:`memd.commands.streamblocking`): every XREAD reader gets a new entry,
  the consumers of one group compete for it.
- A timeout is a timer per parked client (``loop.call_later``), not a
  periodic scan; CLIENT UNBLOCK and a disconnect unpark too.

The registry is keyed by ``(ctx.db, key)``; the engine's marks are keys
only, and a ready key is looked at in every database where someone waits
on it (the type and emptiness checks reject the databases it did not
change). The engine knows nothing of connections: this module sits in the
server's layer and reaches a parked connection through :class:`Parked`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Protocol

from memd.commands import Context
from memd.commands.blocking import STAY, Block
from memd.engine.engine import Engine
from memd.engine.collections import M_TYPE
from memd.engine.records import T_STREAM
from memd.errors import CommandError, MemdError
from memd.resp import NullArray

UNBLOCKED_ERROR = "client unblocked via CLIENT UNBLOCK"


class Parked(Protocol):
    """The connection side of a parked client."""

    ctx: Context

    def wake(self, reply: Any, wrote: bool, quiet: bool) -> None:
        """Send ``reply`` (after its durability when ``wrote``), then go on with the pipeline."""


@dataclass(eq=False, slots=True)
class Waiter:
    """One parked client."""

    conn: Parked
    block: Block
    quiet: bool  # CLIENT REPLY OFF/SKIP was in force for the blocking command: no reply
    slots: list[tuple[int, bytes]] = field(default_factory=list)  # its (db, key) queues
    timer: asyncio.TimerHandle | None = None


class Blocking:
    """The parked clients of one server."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.queues: dict[tuple[int, bytes], dict[int, Waiter]] = {}  # insertion order = FIFO
        self.dbs: dict[bytes, set[int]] = {}  # key -> databases with a queue for it
        self.waiters: dict[int, Waiter] = {}  # by client id
        # the engine marks writes to these keys; the registry owns the dict, the engine reads it
        self.wake = engine.wake_keys

    def __len__(self) -> int:
        return len(self.waiters)

    def park(self, conn: Parked, block: Block, quiet: bool) -> Waiter:
        """Queue ``conn`` on each of the block's keys (at the tail) and arm its timeout."""
        ctx = conn.ctx
        waiter = Waiter(conn, block, quiet)
        db = ctx.db
        for key in block.keys:
            slot = (db, key)
            queue = self.queues.get(slot)
            if queue is None:
                queue = self.queues[slot] = {}
                dbs = self.dbs.setdefault(key, set())
                dbs.add(db)
                self.wake[key] = len(dbs)
            queue[ctx.client_id] = waiter
            waiter.slots.append(slot)
        if block.timeout > 0:
            waiter.timer = asyncio.get_running_loop().call_later(block.timeout, self._timed_out, waiter)
        self.waiters[ctx.client_id] = waiter
        ctx.blocked = True
        return waiter

    def forget(self, conn: Parked) -> None:
        """The client is gone (disconnect): out of every queue, its timer cancelled, no reply."""
        waiter = self.waiters.get(conn.ctx.client_id)
        if waiter is not None and waiter.conn is conn:
            self._unpark(waiter)

    def _unpark(self, waiter: Waiter) -> None:
        ctx = waiter.conn.ctx
        del self.waiters[ctx.client_id]
        ctx.blocked = False
        if waiter.timer is not None:
            waiter.timer.cancel()
        for slot in waiter.slots:
            queue = self.queues[slot]
            del queue[ctx.client_id]
            if not queue:
                del self.queues[slot]
                db, key = slot
                dbs = self.dbs[key]
                dbs.discard(db)
                if dbs:
                    self.wake[key] = len(dbs)
                else:
                    del self.dbs[key]
                    del self.wake[key]
                    self.engine.ready_keys.pop(key, None)

    def _finish(self, waiter: Waiter, reply: Any, wrote: bool) -> None:
        self._unpark(waiter)
        waiter.conn.wake(reply, wrote, waiter.quiet)

    def _timed_out(self, waiter: Waiter) -> None:
        if self.waiters.get(waiter.conn.ctx.client_id) is waiter:
            self._finish(waiter, NullArray, False)

    def unblock(self, client_id: int, error: bool) -> bool:
        """CLIENT UNBLOCK: answer the client its timeout reply, or the UNBLOCKED error."""
        waiter = self.waiters.get(client_id)
        if waiter is None:
            return False
        self._finish(waiter, CommandError(UNBLOCKED_ERROR, prefix="UNBLOCKED") if error else NullArray, False)
        return True

    # ---- serving ready keys ----------------------------------------------------------------

    def serve_ready(self) -> None:
        """Serve the clients waiting on the keys writes made ready, until no key is ready.

        Rounds as Redis's: the keys ready now, in order; a key made ready while they are
        served (a BLMOVE's destination) waits for the next round.
        """
        engine = self.engine
        while engine.ready_keys:
            ready = list(engine.ready_keys)
            engine.ready_keys.clear()
            for key in ready:
                for db in sorted(self.dbs.get(key, ())):
                    self._serve_key(db, key)

    def _serve_key(self, db: int, key: bytes) -> None:
        queue = self.queues.get((db, key))
        if not queue:
            return
        engine = self.engine
        empty = False  # the key has nothing to pop: the remaining pop waiters stay parked
        for waiter in list(queue.values()):
            if self.waiters.get(waiter.conn.ctx.client_id) is not waiter:
                continue  # served or gone meanwhile
            ctx = waiter.conn.ctx
            block = waiter.block
            if block.type != T_STREAM:
                if empty:
                    continue
                meta = ctx.keyspace.peek(key)
                if meta is None:
                    empty = True  # (empty lists and sorted sets do not exist; stream readers are still asked)
                    continue
                if meta[M_TYPE] != block.type:
                    continue  # waits for the other type: stays parked
            before = engine.last_lsn
            try:
                reply = block.serve(ctx, key)
            except (CommandError, MemdError) as exc:  # WRONGTYPE destination; the WAL refusing a write
                reply = exc if isinstance(exc, CommandError) else CommandError(str(exc))
            if reply is STAY:
                continue  # a stream reader with nothing new for it
            self._finish(waiter, reply, engine.last_lsn != before)
