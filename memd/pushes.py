"""Pub/sub output of one connection: pushes in order with its replies, bounded by the output-buffer limit.

A publish hands each subscriber's connection its frame (``push``, the sink of
its :class:`memd.pubsub.Subscriptions`). A frame must never overtake or split a
reply: while the connection runs its own batch the frame joins that batch's
replies where it stands (inside EXEC's array when EXEC published to itself, as
Redis 7.0 writes it); while a reply waits for its fsync (``held``) the frame
waits behind it; otherwise it waits until the end of the event-loop pass
(:meth:`memd.server.Server.schedule_pushes`), so that a pipeline of publishes
costs each subscriber one write. What waits here plus the transport's unsent
bytes is bounded by Redis's ``client-output-buffer-limit pubsub`` (memd's
``server.pubsub_output_*``): past it the client is disconnected, never memd's
memory grown.

:class:`PushOutput` is a mixin of :class:`memd.server.Connection`, which owns
the state it uses (set in ``Connection.__init__``).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio

    from memd.commands import Context
    from memd.pubsub import Subscriptions
    from memd.server import Server

log = logging.getLogger("memd.server")


class PushOutput:
    """push / flush_pushes / release_pushes and the output-limit check of one connection."""

    server: Server
    transport: asyncio.Transport | None
    ctx: Context
    subscriptions: Subscriptions
    closing: bool
    pushes: bytearray  # frames waiting (behind a held reply, or for the end of the loop pass)
    held: bool  # a reply waits for its durability: pushes wait behind it
    push_scheduled: bool
    soft_since: float  # when its output reached the soft limit (0: it is below)
    unsent: int  # the transport's unsent bytes when last looked at
    _out: bytearray | None  # the replies of the batch this connection is running, if it is

    def _write(self, data: bytes | bytearray) -> None:
        raise NotImplementedError

    def push(self, resp2: bytes, resp3: bytes) -> None:
        """A pub/sub frame for this client (its Subscriptions' sink), never ahead of an earlier reply.

        While this connection runs its own batch (it published to itself, or EXEC did) the frame
        joins that batch's replies where it stands, as Redis writes it. Otherwise it waits in
        ``pushes``: behind a held reply until that is released (:meth:`release_pushes`), or until the
        end of this event-loop pass (:meth:`memd.server.Server.schedule_pushes`), so that a publisher's
        pipeline costs each subscriber one write, not one per message.
        """
        if self.closing:
            return
        data = resp3 if self.ctx.protocol == 3 else resp2
        out = self._out
        if out is not None:
            ctx = self.ctx
            if ctx.multi is not None:  # its own EXEC is running: the push goes between EXEC's elements
                ctx.pushed = (ctx.pushed or bytearray()) + data
            else:
                out += data
            return
        pushes = self.pushes
        pushes += data
        if not self.held and not self.push_scheduled:
            self.push_scheduled = True
            self.server.schedule_pushes(self)
        # the full check only near a limit: the transport's backlog only shrinks between our writes,
        # so the one seen at the last write (``unsent``) bounds it from above
        if self.soft_since or len(pushes) + self.unsent >= self.server.pubsub_check_bytes:
            self._check_output_limit()

    def flush_pushes(self) -> None:
        """Write the pushes waiting for the end of the loop pass (unless a held reply came first)."""
        self.push_scheduled = False
        if not self.held and self.pushes:
            data, self.pushes = self.pushes, bytearray()
            self._write(data)
            self._check_output_limit()

    def release_pushes(self) -> None:
        """The held reply is out: the pushes that waited behind it follow it now."""
        self.held = False
        if self.pushes:
            data, self.pushes = self.pushes, bytearray()
            self._write(data)

    def _check_output_limit(self) -> None:
        """Disconnect a subscriber whose unsent output passed Redis's pubsub output-buffer limit.

        What counts is what memd holds for it: pushes waiting here and the transport's unsent
        bytes. At or above the hard limit it goes now; at or above the soft limit it may stay for
        ``pubsub_soft_seconds`` (then goes on its next message), as Redis's
        checkClientOutputBufferLimits. Its buffered output is dropped with it (abort).
        """
        limits = self.server.limits
        transport = self.transport
        self.unsent = transport.get_write_buffer_size() if transport is not None else 0
        used = len(self.pushes) + self.unsent
        hard, soft = limits.pubsub_hard_bytes, limits.pubsub_soft_bytes
        if hard and used >= hard:
            reason = "hard"
        elif soft and used >= soft:
            now = time.monotonic()
            if not self.soft_since:
                self.soft_since = now
                return
            if now - self.soft_since <= limits.pubsub_soft_seconds:
                return
            reason = "soft"
        else:
            self.soft_since = 0.0
            return
        log.warning("client_output_limit id=%d class=pubsub limit=%s used_bytes=%d hard_bytes=%d soft_bytes=%d "
                    "soft_seconds=%g channels=%d patterns=%d action=disconnect", self.ctx.client_id, reason, used,
                    hard, soft, limits.pubsub_soft_seconds, len(self.subscriptions.channels),
                    len(self.subscriptions.patterns))
        self.server.stats_output_limit_disconnects += 1
        self.closing = True
        self.pushes = bytearray()
        self.server.pubsub.drop(self.subscriptions)  # no more fan-out to it while the transport closes
        if transport is not None:
            transport.abort()
