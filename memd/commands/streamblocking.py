"""XREAD BLOCK and XREADGROUP BLOCK: what a stream reader that found nothing waits for (Redis 7.0,
``t_stream.c`` ``xreadCommand``, ``blocked.c`` ``serveClientsBlockedOnStreamKey``).

The handlers (:mod:`memd.commands.streams`, :mod:`memd.commands.streamgroups`) serve what is
there at once; only when nothing could be served and BLOCK was given do they call
:func:`block_read` or :func:`block_group`, which return a
:class:`~memd.commands.blocking.Block` the server parks the client with (:mod:`memd.blocking`).

How a parked stream reader differs from a blocking pop, as in Redis:

- It is not served first-come first-served until the key is empty. Whenever its key is
  signalled (an entry added, a group destroyed, the key created, overwritten or deleted),
  every reader on it is looked at in the order they blocked: each XREAD reader whose id
  is below the stream's last id gets the entries after its id (so all of them get the
  same new entry); each XREADGROUP ``>`` consumer reads after the group's last id *as it
  is when its turn comes*, so the first one takes the new entries and the next ones find
  none and stay parked: consumers of a group compete.
- An XREAD reader's ids are fixed when it blocks (``$`` is the stream's last id then, 0-0
  for a missing stream); it keeps waiting if its stream is deleted or becomes another type.
- An XREADGROUP consumer is unblocked with an error when its stream is deleted or
  overwritten (``-UNBLOCKED the stream key no longer exists``) or its group destroyed
  (``-NOGROUP``), as Redis 7.0 does.
- A served XREADGROUP writes (the entries pending for the consumer unless NOACK, the
  group's last id, the consumer's seen time): one ``engine.apply``, one WAL record, and
  the server sends the reply once that record has the fsync policy's durability, like a
  served BLPOP. After a crash the delivery is then either in the PEL or not made at all
  (the client never saw the reply): at-least-once, never lost.
- Without COUNT a parked reader is served at most 1,000 entries per stream (Redis's
  ``XREAD_BLOCKED_DEFAULT_COUNT``).
"""

from __future__ import annotations

from typing import Any

from memd.commands import Context
from memd.commands.blocking import STAY, Block
from memd.commands.streams import read_reply
from memd.commands.streaminfo import entries_reply
from memd.engine.collections import M_TYPE
from memd.engine.records import T_STREAM
from memd.engine.streamcodec import MAX_ID, StreamId, format_id, incr_id
from memd.engine.streamgroups import Delivered
from memd.engine.streams import StreamEdit
from memd.errors import CommandError
from memd.resp import NullArray

BLOCKED_DEFAULT_COUNT = 1000
KEY_GONE = "the stream key no longer exists"
GROUP_GONE = "the consumer group this client was blocked on no longer exists"


def timeout_seconds(ms: int) -> float:
    """BLOCK's milliseconds as the parking timer's seconds (0: forever)."""
    return ms / 1000


def delivered_reply(items: list[Delivered]) -> list[Any]:
    """XREADGROUP's entries: an entry deleted since it was delivered (history) has a null body."""
    return [[format_id(sid), NullArray if fields is None else fields] for sid, fields in items]


def block_read(keys: list[bytes], after: list[StreamId], count: int, timeout_ms: int) -> Block:
    """Park an XREAD reader until one of ``keys`` has an entry above its id in ``after``."""
    gt: dict[bytes, StreamId] = {}
    for key, sid in zip(keys, after):
        gt.setdefault(key, sid)  # a key named twice waits for its first id, as Redis's blockForKeys
    limit = count or BLOCKED_DEFAULT_COUNT

    def serve(ctx: Context, key: bytes) -> Any:
        ks = ctx.keyspace
        meta = ks.peek(key)
        if meta is None or meta[M_TYPE] != T_STREAM:
            return STAY  # deleted, or another type: XREAD readers keep waiting
        since = gt[key]
        if ks.stream_state(key).last <= since:
            return STAY
        start = incr_id(since)
        entries = [] if start is None else ks.stream_range(key, start, MAX_ID, limit)
        return read_reply(ctx, [(key, entries_reply(entries))])
    return Block(tuple(gt), T_STREAM, timeout_seconds(timeout_ms), serve)


def block_group(keys: list[bytes], group: bytes, consumer: bytes, count: int, noack: bool,
                timeout_ms: int) -> Block:
    """Park an XREADGROUP ``>`` consumer until one of ``keys`` has an entry its group has not delivered."""
    limit = count or BLOCKED_DEFAULT_COUNT

    def serve(ctx: Context, key: bytes) -> Any:
        ks = ctx.keyspace
        meta = ks.peek(key)
        if meta is None or meta[M_TYPE] != T_STREAM:
            return CommandError(KEY_GONE, "UNBLOCKED")
        edit = StreamEdit(ks, key, meta)
        g = ks.stream_group(edit, group)
        if g is None:
            return CommandError(GROUP_GONE, "NOGROUP")
        if edit.state.last <= g.last:
            return STAY  # another consumer of the group took the new entries first
        now = ks.now_ms()
        g.see(consumer, now)
        items = ks.deliver_new(g, consumer, g.last, limit, noack, now)
        ks.apply_stream_edits([edit])  # one WAL record: the reply waits for its durability
        return read_reply(ctx, [(key, delivered_reply(items))])
    return Block(tuple(dict.fromkeys(keys)), T_STREAM, timeout_seconds(timeout_ms), serve)


__all__ = ["BLOCKED_DEFAULT_COUNT", "block_group", "block_read", "delivered_reply"]
