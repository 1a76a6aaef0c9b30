"""Stream consumer groups: XGROUP, XREADGROUP, XACK, XPENDING, XCLAIM, XAUTOCLAIM and XINFO's reads.

A group is a row (last-delivered id, entries-read), its pending entries list (PEL) one
row per entry (delivery time, delivery count, owning consumer) in id order under the
group's prefix, its consumers one row each (seen time); see :mod:`memd.engine.streamcodec`.
Each command is one :class:`~memd.engine.streams.StreamEdit`: an XREADGROUP that
delivers entries writes their PEL rows and the group's new last id in the same WAL
record as nothing else, so after a crash a delivery the client was told of is pending.

What is counted by walking rows rather than kept as a counter: a consumer's pending
entries (XPENDING's summary, XINFO, DELCONSUMER walk the group's PEL) and a group's
consumers. Those walks are O(PEL) / O(consumers) of one group, which stay small in the
way groups are used; the entries themselves are never walked for them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, NamedTuple

from memd.engine.streamcodec import (
    INVALID_ENTRIES_READ,
    MAX_ID,
    MIN_ID,
    P_GROUP,
    StreamId,
    StreamState,
    consumer_prefix,
    group_sub,
    id_from,
    incr_id,
    pack_consumer,
    pack_group,
    pack_nack,
    pel_prefix,
    pel_sub,
    prefix_end,
    unpack_consumer,
    unpack_group,
    unpack_nack,
)
from memd.engine.streams import StreamEdit

if TYPE_CHECKING:
    from memd.engine.keyspace import Keyspace

Delivered = tuple[StreamId, list[bytes] | None]  # an entry handed out (None: deleted since, history only)


class Nack(NamedTuple):
    """A pending entry: its id, owner, delivery time (ms) and count."""

    id: StreamId
    consumer: bytes
    time: int
    times: int  # deliveries so far


class GroupInfo(NamedTuple):
    name: bytes
    last: StreamId
    entries_read: int


class Group:
    """One group of one stream being read or written through a :class:`StreamEdit`."""

    def __init__(self, edit: StreamEdit, name: bytes, last: StreamId, entries_read: int) -> None:
        self.edit = edit
        self.name = name
        self.last = last
        self.entries_read = entries_read

    def save(self) -> None:
        self.edit.put(group_sub(self.name), pack_group(self.last, self.entries_read))

    def nack(self, sid: StreamId) -> Nack | None:
        raw = self.edit.get(pel_sub(self.name, sid))
        if raw is None:
            return None
        t, n, consumer = unpack_nack(raw)
        return Nack(sid, consumer, t, n)

    def put_nack(self, sid: StreamId, consumer: bytes, time: int, count: int) -> None:
        self.edit.put(pel_sub(self.name, sid), pack_nack(time, count, consumer))

    def drop_nack(self, sid: StreamId) -> None:
        self.edit.put(pel_sub(self.name, sid), None)

    def pel(self, start: StreamId = MIN_ID, end: StreamId = MAX_ID) -> Iterator[Nack]:
        """The PEL in ``[start, end]`` in id order, as the edit sees it when the walk starts."""
        if start > end:
            return
        prefix = pel_prefix(self.name)
        walk = self.edit.walk(pel_sub(self.name, start), pel_sub(self.name, end) + b"\x00")
        try:
            n = len(prefix)
            for sub, raw in walk:
                t, times, consumer = unpack_nack(raw)
                yield Nack(id_from(sub, n), consumer, t, times)
        finally:
            walk.close()

    def consumers(self) -> list[tuple[bytes, int]]:
        """(name, seen time) of every consumer, by name."""
        prefix = consumer_prefix(self.name)
        return [(sub[len(prefix):], unpack_consumer(raw)) for sub, raw in self.edit.walk(prefix, prefix_end(prefix))]

    def consumer(self, name: bytes) -> int | None:
        raw = self.edit.get(consumer_prefix(self.name) + name)
        return None if raw is None else unpack_consumer(raw)

    def see(self, name: bytes, now: int) -> bool:
        """Create ``name`` or refresh its seen time; True when it was created."""
        sub = consumer_prefix(self.name) + name
        created = self.edit.get(sub) is None
        self.edit.put(sub, pack_consumer(now))
        return created


class StreamGroupsMixin:
    """Consumer groups' reads and state changes; mixed into :class:`Keyspace`."""

    def stream_group(self: Keyspace, edit: StreamEdit, name: bytes) -> Group | None:
        raw = edit.get(group_sub(name))
        if raw is None:
            return None
        last, entries_read = unpack_group(raw)
        return Group(edit, name, last, entries_read)

    def stream_groups(self: Keyspace, key: bytes) -> list[GroupInfo]:
        rows = self.stream_take(key, P_GROUP, prefix_end(P_GROUP))
        return [GroupInfo(sub[1:], *unpack_group(raw)) for sub, raw in rows]

    def new_group(self: Keyspace, edit: StreamEdit, name: bytes, last: StreamId, entries_read: int) -> Group:
        g = Group(edit, name, last, entries_read)
        g.save()
        return g

    def destroy_group(self: Keyspace, g: Group) -> None:
        edit = g.edit
        edit.wakes = True  # its blocked consumers get NOGROUP
        edit.put(group_sub(g.name), None)
        for n in list(g.pel()):
            g.drop_nack(n.id)
        for name, _ in g.consumers():
            edit.put(consumer_prefix(g.name) + name, None)

    def delete_consumer(self: Keyspace, g: Group, name: bytes) -> int:
        """Remove a consumer and its pending entries; how many it had."""
        owned = [n.id for n in g.pel() if n.consumer == name]
        for sid in owned:
            g.drop_nack(sid)
        g.edit.put(consumer_prefix(g.name) + name, None)
        return len(owned)

    # ---- reading through a group ------------------------------------------------------------

    def deliver_new(self: Keyspace, g: Group, consumer: bytes, after: StreamId, count: int, noack: bool,
                    now: int) -> list[Delivered]:
        """XREADGROUP ``>``: entries after ``after``, now pending for ``consumer`` (unless NOACK)."""
        start = incr_id(after)
        if start is None:
            return []
        edit = g.edit
        entries = self.stream_range(edit.key, start, MAX_ID, count)
        if not entries:
            return []
        state = edit.state
        first = self.stream_edge(edit.key, False)
        first_id = MIN_ID if first is None else first[0]
        for sid, _ in entries:
            if sid > g.last:
                if g.entries_read != INVALID_ENTRIES_READ and not _has_tombstones(state, edit.length, first_id,
                                                                                 sid):
                    g.entries_read += 1
                elif state.entries_added:
                    g.entries_read = estimate_read(state, edit.length, first_id, sid)
                g.last = sid
            if not noack:
                g.put_nack(sid, consumer, now, 1)  # a pending entry owned by another consumer moves here
        g.save()
        return [(sid, fields) for sid, fields in entries]

    def deliver_history(self: Keyspace, g: Group, consumer: bytes, after: StreamId, count: int, now: int
                        ) -> list[Delivered]:
        """XREADGROUP with an id: ``consumer``'s own pending entries after ``after``, delivered again."""
        start = incr_id(after)
        if start is None:
            return []
        out: list[Delivered] = []
        for n in g.pel(start):
            if count and len(out) >= count:
                break
            if n.consumer != consumer:
                continue
            fields = self.stream_entry(g.edit.key, n.id)
            if fields is not None:
                g.put_nack(n.id, consumer, now, n.times + 1)
            out.append((n.id, fields))
        return out

    def group_lag(self: Keyspace, state: StreamState, length: int, first_id: StreamId, g: GroupInfo
                  ) -> int | None:
        """XINFO's lag: entries not yet delivered to the group, None when it cannot be told."""
        if not state.entries_added:
            return 0
        if g.entries_read != INVALID_ENTRIES_READ and not _has_tombstones(state, length, first_id, g.last):
            return state.entries_added - g.entries_read
        read = estimate_read(state, length, first_id, g.last)
        return None if read == INVALID_ENTRIES_READ else state.entries_added - read

    def stream_first_id(self: Keyspace, key: bytes) -> StreamId:
        first = self.stream_edge(key, False)
        return MIN_ID if first is None else first[0]


def _has_tombstones(state: StreamState, length: int, first_id: StreamId, start: StreamId) -> bool:
    """Redis's ``streamRangeHasTombstones(s, start, NULL)``."""
    if not length or state.max_deleted == MIN_ID:
        return False
    if first_id > state.max_deleted:
        return False
    return start <= state.max_deleted


def estimate_read(state: StreamState, length: int, first_id: StreamId, sid: StreamId) -> int:
    """Redis's ``streamEstimateDistanceFromFirstEverEntry``: entries read up to ``sid``, or -1."""
    if not state.entries_added:
        return 0
    if not length and sid <= state.last:
        return state.entries_added
    if sid == state.last:
        return state.entries_added
    if sid > state.last:
        return INVALID_ENTRIES_READ
    if state.max_deleted == MIN_ID or state.max_deleted < first_id:
        if sid < first_id:
            return state.entries_added - length
        if sid == first_id:
            return state.entries_added - length + 1
    return INVALID_ENTRIES_READ


__all__ = ["Delivered", "Group", "GroupInfo", "Nack", "StreamGroupsMixin", "estimate_read"]
