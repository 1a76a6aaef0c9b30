"""Streams over the layered store: entries, ranges, trimming (consumer groups: :mod:`memd.engine.streamgroups`).

A stream is a collection whose element rows hold its entries, its counters and its
consumer groups (the layout: :mod:`memd.engine.streamcodec`). Its key's ``count`` is
its number of entries plus one: a stream may be empty and still exist (XDEL of its
last entry, ``XGROUP CREATE ... MKSTREAM``), and a collection's ``count`` of 0 means
gone everywhere else. ``lo`` and ``hi`` are unused (0).

Every write is one :class:`StreamEdit`: the rows a command changes, collected while it
reads (its own reads see them), then ONE OP_UPDATE with the key's new metadata, so a
command is one WAL record and the WAL, flush and store know nothing of streams.

Range reads never load the stream: :meth:`StreamsMixin.stream_walk` merges, lazily and
in sub-key order (either way), the store's ordered rows with each buffer layer's sorted
sub-keys, so ``XRANGE s - + COUNT 10`` on a 1,000,000-entry stream reads about ten
rows of the store plus what the buffer holds of that key.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

from memd.engine.collections import M_COUNT, M_EXPIRES_AT, Meta
from memd.engine.memtable import DELETED
from memd.engine import streamcodec
from memd.engine.records import OP_UPDATE, T_STREAM, Op
from memd.engine.streamorder import StreamOrder
from memd.engine.streamcodec import (
    MIN_ID,
    P_ENTRY,
    P_STATE,
    StreamId,
    StreamState,
    entry_sub,
    id_from,
    pack_fields,
    prefix_end,
    unpack_fields,
)
from memd.errors import CommandError

if TYPE_CHECKING:
    from memd.engine.keyspace import Keyspace

Entry = tuple[StreamId, list[bytes]]  # an entry's id and its fields and values, alternating
_ENTRIES_END = prefix_end(P_ENTRY)
_U64 = 2**64 - 1
_pack_id = streamcodec._ID.pack  # (the codec's id and length layouts, for xadd_auto_into's inline packing)
_pack_len = streamcodec._LEN.pack


class Trim(NamedTuple):
    """MAXLEN / MINID of XADD and XTRIM. ``approx`` (``~``) is honoured as an exact trim capped by
    ``limit`` (0: no cap): Redis may keep more with ``~``, never fewer, and memd keeps exactly the bound."""

    maxlen: int | None
    minid: StreamId | None
    approx: bool
    limit: int


class StreamEdit:
    """One command's changes to one stream; its reads see its own writes."""

    __slots__ = ("ks", "key", "meta", "changes", "length", "_state", "head", "stored_gone", "added", "added_from",
                 "wakes")

    def __init__(self, ks: Keyspace, key: bytes, meta: Meta | None) -> None:
        self.ks = ks
        self.key = key
        self.meta = meta
        self.changes: dict[bytes, bytes | None] = {}
        self.length = 0 if meta is None else meta[M_COUNT] - 1
        self._state: StreamState | None = None if meta is not None else StreamState()
        # trimming's place (see StreamsMixin._trim): stored entries below ``head`` are removed, or all of
        # them once ``stored_gone``; ``added`` are the entries this edit appended, ``added_from`` the
        # first of them not trimmed away
        self.head = P_ENTRY
        self.stored_gone = False
        self.added: list[bytes] = []
        self.added_from = 0
        # whether applying it wakes the key's blocked readers (an entry added, a group destroyed: where Redis
        # signals the key ready); the engine cannot tell those from other stream updates by the op
        self.wakes = False

    @property
    def state(self) -> StreamState:
        if self._state is None:
            raw = self.get(P_STATE)
            self._state = StreamState() if raw is None else StreamState.unpack(raw)
        return self._state

    def get(self, sub: bytes) -> Any:
        if sub in self.changes:
            return self.changes[sub]
        if self.meta is None:
            return None
        return self.ks.elem(self.key, sub)

    def put(self, sub: bytes, value: bytes | None) -> None:
        self.changes[sub] = value

    def touch_state(self) -> None:
        """Mark the counters as changed (written with the op)."""
        self.changes[P_STATE] = b""  # replaced by the packed state in op()

    def op(self) -> Op:
        if P_STATE in self.changes or self.meta is None:
            self.changes[P_STATE] = self.state.pack()
        exp = None if self.meta is None else self.meta[M_EXPIRES_AT]
        return (OP_UPDATE, self.key, T_STREAM, self.meta is None, exp, self.length + 1, 0, 0,
                list(self.changes.items()))

    def apply(self) -> None:
        self.ks._apply([self.op()])  # (the keyspace's apply: in its database)
        if self.wakes:
            self.ks.engine.signal_key(self.key)

    def walk(self, lo: bytes, hi: bytes) -> Generator[tuple[bytes, Any], None, None]:
        """Live rows in ``[lo, hi)`` in sub order as this edit sees them: the stored ones (lazily)
        merged with the changes it has gathered so far (taken when the walk starts)."""
        pending = sorted((sub, 0, v) for sub, v in self.changes.items() if lo <= sub < hi)
        stored = self.ks.stream_walk(self.key, lo, hi) if self.meta is not None else None
        sources: list[Iterator[tuple[bytes, int, Any]]] = [iter(pending)]
        if stored is not None:
            sources.append((sub, 1, v) for sub, v in stored)
        last: bytes | None = None
        try:
            for sub, _, value in heapq.merge(*sources):  # (a sub is unique within a source: never ties on value)
                if sub == last:
                    continue  # the stored row of a sub this edit changed
                last = sub
                if value is not None:
                    yield sub, value
        finally:
            if stored is not None:
                stored.close()


class StreamsMixin:
    """Stream entries: reads and state changes; mixed into :class:`Keyspace`."""

    # ---- reads ------------------------------------------------------------------------------

    def stream_meta(self: Keyspace, key: bytes) -> Meta | None:
        return self.typed_meta(key, T_STREAM)

    def stream_edit(self: Keyspace, key: bytes, meta: Meta | None) -> StreamEdit:
        return StreamEdit(self, key, meta)

    def apply_stream_edits(self: Keyspace, edits: list[StreamEdit]) -> None:
        """The changed streams' ops in ONE apply (one WAL record), in this keyspace's database."""
        ops = [e.op() for e in edits if e.changes]
        if ops:
            self._apply(ops)
            for e in edits:
                if e.wakes:
                    self.engine.signal_key(e.key)

    def _stream_order(self: Keyspace) -> StreamOrder:
        order: StreamOrder | None = getattr(self, "_stream_order_cache", None)
        if order is None:
            order = StreamOrder()
            self._stream_order_cache = order
        return order

    def stream_walk(self: Keyspace, key: bytes, lo: bytes, hi: bytes, rev: bool = False
                    ) -> Generator[tuple[bytes, Any], None, None]:
        """Live ``(sub, value)`` of ``key`` in ``[lo, hi)``, ascending (descending with ``rev``), lazily.

        Each buffer layer holding changes to the key contributes its sub-keys in range
        (kept in order across writes by :class:`~memd.engine.streamorder.StreamOrder`), the store its ordered rows;
        a heap merges them, the newest layer's value winning, deletions dropped.
        """
        sources: list[Iterator[tuple[bytes, int, Any]]] = []
        bottom = False
        rank = 0
        for layer, table in zip(self._layers(), self.engine.layers()):  # (both newest first)
            e = layer.entries.get(key)
            if e is not None:
                if e.elems:
                    overlay = e.elems
                    subs = self._stream_order().get(table, key, e)
                    i, j = bisect.bisect_left(subs, lo), bisect.bisect_left(subs, hi)
                    idx = range(j - 1, i - 1, -1) if rev else range(i, j)
                    sources.append(((subs[n], rank, overlay[subs[n]]) for n in idx))
                    rank += 1
                if e.reset:
                    bottom = True
                    break
            if layer.flushall:
                bottom = True
                break
        stored: Iterator[tuple[bytes, Any]] | None = None
        if not bottom:
            stored = self.engine.store.iter_elems(self.db, key, lo, hi, rev)
            if not sources:  # nothing of the key buffered (a flushed stream): the store's rows as they are
                try:
                    yield from stored
                finally:
                    stored.close()  # type: ignore[attr-defined]
                return
            sources.append(((s, rank, v) for s, v in stored))
        if len(sources) == 1:
            merged: Iterator[tuple[bytes, int, Any]] = sources[0]
        else:
            # equal subs come out in source order (heapq.merge breaks ties by iterable): newest first
            merged = heapq.merge(*sources, key=_sub_of, reverse=rev)
        last: bytes | None = None
        try:
            for sub, _, value in merged:
                if sub == last:
                    continue  # an older layer's (or the store's) state of a sub a newer layer changed
                last = sub
                if value is not DELETED:
                    yield sub, value
        finally:
            if stored is not None:
                stored.close()  # type: ignore[attr-defined]  # (the store's cursor ends its read now)

    def stream_take(self: Keyspace, key: bytes, lo: bytes, hi: bytes, count: int = 0, rev: bool = False
                    ) -> list[tuple[bytes, Any]]:
        """:meth:`stream_walk`'s first ``count`` rows (0: all), its store cursor closed at once."""
        walk = self.stream_walk(key, lo, hi, rev)
        try:
            return list(itertools.islice(walk, count) if count > 0 else walk)
        finally:
            walk.close()

    def stream_range(self: Keyspace, key: bytes, start: StreamId, end: StreamId, count: int = 0,
                     rev: bool = False) -> list[Entry]:
        """Entries with ``start <= id <= end`` in id order (reversed with ``rev``), at most ``count`` (0: all)."""
        if start > end:
            return []
        rows = self.stream_take(key, entry_sub(start), entry_sub(end) + b"\x00", count, rev)
        return [(id_from(sub, 1), unpack_fields(value)) for sub, value in rows]

    def stream_entry(self: Keyspace, key: bytes, sid: StreamId) -> list[bytes] | None:
        raw = self.elem(key, entry_sub(sid))
        return None if raw is None else unpack_fields(raw)

    def stream_edge(self: Keyspace, key: bytes, last: bool) -> Entry | None:
        """The first (or last) entry, None when there is none."""
        rows = self.stream_take(key, P_ENTRY, _ENTRIES_END, 1, last)
        return (id_from(rows[0][0], 1), unpack_fields(rows[0][1])) if rows else None

    def stream_state(self: Keyspace, key: bytes) -> StreamState:
        raw = self.elem(key, P_STATE)
        return StreamState() if raw is None else StreamState.unpack(raw)

    def xlen(self: Keyspace, key: bytes) -> int:
        m = self.stream_meta(key)
        return 0 if m is None else m[M_COUNT] - 1

    # ---- writes ------------------------------------------------------------------------------

    def xadd(self: Keyspace, key: bytes, pairs: list[bytes], want: StreamId | None, seq_given: bool,
             nomkstream: bool, trim: Trim | None) -> StreamId | None:
        """XADD: the new entry's id; None when NOMKSTREAM found no stream."""
        m = self.stream_meta(key)
        if m is None and nomkstream:
            return None
        edit = StreamEdit(self, key, m)
        sid = self.xadd_into(edit, pairs, want, seq_given, trim)
        edit.apply()
        return sid

    def xadd_into(self: Keyspace, edit: StreamEdit, pairs: list[bytes], want: StreamId | None, seq_given: bool,
                  trim: Trim | None) -> StreamId:
        """XADD's change gathered into ``edit`` (not applied): a pipelined run of XADDs shares one edit
        per stream and one WAL record. Raises before changing ``edit`` when the id is refused."""
        state = edit.state
        last = state.last
        if last == (2**64 - 1, 2**64 - 1):
            raise CommandError("The stream has exhausted the last possible ID, unable to add more items")
        if want is None:
            now = self.engine.now_ms()
            sid: StreamId = (now, 0) if now > last[0] else _next(last)
        elif seq_given:
            sid = want
        elif want[0] == last[0]:
            if last[1] == 2**64 - 1:
                raise CommandError("The ID specified in XADD is equal or smaller than the target stream top item")
            sid = (last[0], last[1] + 1)
        else:
            sid = want
        if sid <= last:  # (never on a new stream: its last id is 0-0, and XADD refuses 0-0 first)
            raise CommandError("The ID specified in XADD is equal or smaller than the target stream top item")
        changes = edit.changes
        sub = entry_sub(sid)
        changes[sub] = pack_fields(pairs)
        edit.added.append(sub)
        edit.wakes = True
        edit.length += 1
        state.last = sid
        state.entries_added += 1
        changes[P_STATE] = b""  # (edit.touch_state(), inline: a pipelined run's hot path)
        if trim is not None:
            self._trim(edit, trim)
        return sid

    def xadd_auto_into(self: Keyspace, edit: StreamEdit, pairs: list[bytes]) -> StreamId:
        """``xadd_into(edit, pairs, None, True, None)`` (XADD key * field value...: an id from the clock,
        no trim), without its branches: the form a pipelined run of XADDs is made of."""
        state = edit._state
        if state is None:
            state = edit.state
        last = state.last
        now = self.engine.now_ms()
        if now > last[0]:
            sid: StreamId = (now, 0)
        elif last[1] < _U64:
            sid = (last[0], last[1] + 1)
        elif last[0] < _U64:
            sid = (last[0] + 1, 0)
        else:
            raise CommandError("The stream has exhausted the last possible ID, unable to add more items")
        sub = P_ENTRY + _pack_id(*sid)  # (entry_sub and pack_fields' one-field case, inline)
        if len(pairs) == 2:
            f, v = pairs
            value = _pack_len(len(f)) + f + _pack_len(len(v)) + v
        else:
            value = pack_fields(pairs)
        changes = edit.changes
        changes[sub] = value
        edit.added.append(sub)
        edit.wakes = True
        edit.length += 1
        state.last = sid
        state.entries_added += 1
        changes[P_STATE] = b""  # (edit.touch_state(), inline)
        return sid

    def xtrim(self: Keyspace, key: bytes, trim: Trim) -> int:
        m = self.stream_meta(key)
        if m is None:
            return 0
        edit = StreamEdit(self, key, m)
        removed = self._trim(edit, trim)
        if removed:
            edit.apply()
        return removed

    def _trim(self: Keyspace, edit: StreamEdit, trim: Trim) -> int:
        """Drop entries from the head per ``trim``; how many.

        Trimming only ever removes the oldest entries, so an edit keeps where its last trim
        stopped (``head``) and the entries it added itself, in order (XADD appends): the
        next trim of a pipelined run of ``XADD ... MAXLEN n`` resumes there instead of
        walking again past every entry the run already removed. O(removed) per trim.
        """
        if trim.maxlen is not None:
            excess = edit.length - trim.maxlen
            if excess <= 0:
                return 0
            todo = min(excess, trim.limit) if trim.limit else excess
            hi = _ENTRIES_END
        else:
            assert trim.minid is not None
            todo = trim.limit if trim.limit else -1
            hi = entry_sub(trim.minid)
        doomed: list[bytes] = []
        changes = edit.changes
        if todo and edit.meta is not None and not edit.stored_gone:
            walk = self.stream_walk(edit.key, edit.head, hi)
            try:
                for sub, _ in walk:
                    if len(doomed) == todo:
                        break
                    if changes.get(sub, b"") is not None:  # (not an entry this edit deleted already)
                        doomed.append(sub)
                else:
                    edit.stored_gone = hi == _ENTRIES_END  # every stored entry is now removed
            finally:
                walk.close()
            if doomed:
                edit.head = doomed[-1] + b"\x00"
        added = edit.added
        while len(doomed) != todo and edit.added_from < len(added) and added[edit.added_from] < hi:
            doomed.append(added[edit.added_from])
            edit.added_from += 1
        for sub in doomed:
            changes[sub] = None
        edit.length -= len(doomed)
        return len(doomed)

    def xdel(self: Keyspace, key: bytes, ids: list[StreamId]) -> int:
        m = self.stream_meta(key)
        if m is None:
            return 0
        edit = StreamEdit(self, key, m)
        deleted = 0
        for sid in ids:
            sub = entry_sub(sid)
            if edit.get(sub) is None:
                continue
            edit.put(sub, None)
            edit.length -= 1
            deleted += 1
            if sid > edit.state.max_deleted:
                edit.state.max_deleted = sid
                edit.touch_state()
        if deleted:
            edit.apply()
        return deleted

    def xsetid(self: Keyspace, key: bytes, sid: StreamId, entries_added: int, max_deleted: StreamId) -> None:
        m = self.stream_meta(key)
        if m is None:
            raise CommandError("no such key")
        edit = StreamEdit(self, key, m)
        if edit.length > 0:
            top = self.stream_edge(key, True)
            if top is not None and sid < top[0]:
                raise CommandError("The ID specified in XSETID is smaller than the target stream top item")
            if entries_added != -1 and edit.length > entries_added:
                raise CommandError("The entries_added specified in XSETID is smaller than the target stream length")
        state = edit.state
        state.last = sid
        if entries_added != -1:
            state.entries_added = entries_added
        if max_deleted != MIN_ID:
            state.max_deleted = max_deleted
        edit.touch_state()
        edit.apply()


def _sub_of(item: tuple[bytes, int, Any]) -> bytes:
    return item[0]


def _next(last: StreamId) -> StreamId:
    ms, seq = last
    return (ms + 1, 0) if seq == 2**64 - 1 else (ms, seq + 1)


__all__ = ["Entry", "StreamEdit", "StreamsMixin", "Trim"]
