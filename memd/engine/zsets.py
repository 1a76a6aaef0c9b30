"""Sorted sets over the layered store.

Each write reads what it needs (metadata, the touched members), then emits a
single OP_UPDATE carrying the key's full new metadata plus only the changed
members (a member's element value is its score).

Reads in score order never sort the whole set: the store reads its score
index (``elems_score``: key, score, member) from the range's first bound, a
page at a time, and each buffer layer its members in order
(:mod:`memd.engine.zorder`); a heap merges them, each stream less the members
a newer layer changed. ``ZRANGEBYSCORE key min max LIMIT 0 10`` on a
1,000,000-member set reads one page of the index: O(log n + offset + count
+ members changed in the buffer). Counts (ZCOUNT, ZRANK) bisect the buffer
and run one ``count(*)`` over the index, so they cost O(log n + buffered
changes) plus SQLite's own walk of the counted range in C (~80 ns a member
measured on the dev box; a big stored set keeps fences, see
``memd.store.zindex``). A lex range over members of one score is an index
range within that score; over mixed scores, ZRANDMEMBER and the set
operations read every member.
"""

from __future__ import annotations

import heapq
import math
import sys
from collections.abc import Iterator
from itertools import islice
from typing import TYPE_CHECKING, Any

from memd.engine.collections import M_COUNT, M_EXPIRES_AT, M_TYPE, Meta
from memd.engine.memtable import DELETED, Entry
from memd.engine.records import OP_DEL, OP_UPDATE, T_SET, T_ZSET
from memd.engine.zorder import Item, after, count_in, inside, key_range, ordered, slice_of
from memd.errors import CommandError, WrongTypeError
from memd.store.base import ZBound

if TYPE_CHECKING:
    from memd.engine.keyspace import Keyspace


LexBound = tuple[bytes | int, bool]  # a ZRANGEBYLEX bound: (member, exclusive), or -1/+1 for "-"/"+"
SHADOW_ROWS_PER_LOOKUP = 5
PAGE_MIN = 16  # store rows per page of a range read: the first page fits what the caller takes ...
PAGE_MAX = 4096  # ... and later pages grow to this
_MISSING: Any = object()


def _unshadowed(items: Iterator[Item], newer: tuple[dict[bytes, Any], ...]) -> Iterator[Item]:
    """``items`` less the members a newer layer changed (that layer has their current state)."""
    return (it for it in items if not any(it[1] in d for d in newer))


class ZsetsMixin:
    """Sorted-set commands' reads and state changes; mixed into :class:`Keyspace`."""

    def zadd(self: Keyspace, key: bytes, pairs: list[tuple[float, bytes]], *, nx: bool = False, xx: bool = False,
             gt: bool = False, lt: bool = False, ch: bool = False, incr: bool = False) -> int | float | None:
        """ZADD with Redis's flag rules; returns the count (added, or changed with CH),
        or with INCR the new score (None when a flag prevented it)."""
        m = self.typed_meta(key, T_ZSET)
        count = 0 if m is None else m[M_COUNT]
        changes: dict[bytes, float] = {}
        added = changed = 0
        result: float | None = None
        for score, member in pairs:
            cur = changes.get(member)
            if cur is None and m is not None:
                cur = self.elem(key, member)
            if cur is None:
                if xx:
                    continue
                new = score
            else:
                if nx:
                    continue
                new = cur + score if incr else score
                if math.isnan(new):
                    raise CommandError("resulting score is not a number (NaN)")
                if gt and new <= cur or lt and new >= cur:
                    continue
            if cur is None:
                added += 1
            elif new != cur:
                changed += 1
            changes[member] = float(new)
            result = float(new)
        if changes:
            self.update(key, T_ZSET, m is None, None if m is None else m[M_EXPIRES_AT], count + added, 0, 0,
                        list(changes.items()))
        if incr:
            return result
        return added + changed if ch else added

    def zscore(self: Keyspace, key: bytes, member: bytes) -> float | None:
        return None if self.typed_meta(key, T_ZSET) is None else self.elem(key, member)  # type: ignore[no-any-return]

    def zcard(self: Keyspace, key: bytes) -> int:
        m = self.typed_meta(key, T_ZSET)
        return 0 if m is None else m[M_COUNT]

    def zrem(self: Keyspace, key: bytes, members: list[bytes]) -> int:
        return self._remove(key, T_ZSET, members)

    def zitems(self: Keyspace, key: bytes) -> list[tuple[bytes, float]]:
        """Every (member, score) in Redis order: by score, then member bytes."""
        if self.typed_meta(key, T_ZSET) is None:
            return []
        return self._zread(key, None, None, False, 0, -1)

    # ---- ordered reads: the store's score index merged with each buffer layer's order ----

    def _zlayers(self: Keyspace, key: bytes) -> tuple[list[Entry], bool]:
        """The buffer entries holding member changes of ``key``, newest first, and whether
        nothing below them counts (a reset or FLUSHALL: the store is not read)."""
        entries: list[Entry] = []
        for layer in self._layers():
            e = layer.entries.get(key)
            if e is not None:
                if e.elems:
                    entries.append(e)
                if e.reset:
                    return entries, True
            if layer.flushall:
                return entries, True
        return entries, False

    def _zwalk(self: Keyspace, key: bytes, lo: ZBound, hi: ZBound, rev: bool, want: int) -> Iterator[Item]:
        """Every live (score, member) of ``key`` in ``[lo, hi)`` in order, merged across the layers.

        Each layer yields its own members in order, less those a newer layer changed; the
        store yields pages of its index, less every member a layer changed (the layer's
        value is the current one). ``want`` (how many the caller will take, -1: all) sizes
        the first page. Call inside the store's snapshot: pages must see one state.
        """
        entries, bottom = self._zlayers(key)
        streams: list[Iterator[Item]] = []
        newer: list[dict[bytes, Any]] = []
        for e in entries:
            items = slice_of(ordered(e), lo, hi, rev)
            streams.append(_unshadowed(items, tuple(newer)) if newer else items)
            newer.append(e.elems)  # type: ignore[arg-type]
        if not bottom:
            # a page holds the rows the caller takes, and as many again for those the buffer hides
            first = PAGE_MAX if want < 0 else min(PAGE_MAX, max(PAGE_MIN, 2 * (want + 1)))
            rows = self._zstore_pages(key, lo, hi, rev, first)
            streams.append(_unshadowed(rows, tuple(newer)) if newer else rows)
        if len(streams) == 1:
            return streams[0]
        return heapq.merge(*streams, reverse=rev)

    def _zstore_pages(self: Keyspace, key: bytes, lo: ZBound, hi: ZBound, rev: bool, size: int) -> Iterator[Item]:
        """The store's members in ``[lo, hi)`` in order, read a page at a time (keyset paging)."""
        store = self.engine.store
        while True:
            rows = store.zset_range(self.db, key, lo, hi, rev, size)
            yield from rows
            if len(rows) < size:
                return
            if rev:
                hi = rows[-1]
            else:
                lo = after(rows[-1])
            size = min(PAGE_MAX, size * 4)

    def _zread(self: Keyspace, key: bytes, lo: ZBound, hi: ZBound, rev: bool, offset: int, count: int
               ) -> list[tuple[bytes, float]]:
        """(member, score) of a live zset in ``[lo, hi)``: skip ``offset``, take ``count`` (-1: all)."""
        store = self.engine.store
        with store.snapshot():
            entries, bottom = self._zlayers(key)
            if not entries and not bottom:  # nothing buffered: the store skips the offset in SQL
                rows = store.zset_range(self.db, key, lo, hi, rev, count, offset)
            else:
                stop = None if count < 0 else min(offset + count, sys.maxsize)  # LIMIT's int64s may add past it
                walk = self._zwalk(key, lo, hi, rev, -1 if stop is None else stop)
                rows = list(islice(walk, offset, stop))
        return [(member, score) for score, member in rows]

    def _zcount(self: Keyspace, key: bytes, lo: ZBound, hi: ZBound) -> int:
        """How many members of a live zset are in ``[lo, hi)``: bisections in the buffer, one
        count over the store's index, less what the buffer changed of it."""
        store = self.engine.store
        with store.snapshot():
            entries, bottom = self._zlayers(key)
            total = 0
            shadow: set[bytes] = set()
            for e in entries:
                total += count_in(ordered(e), lo, hi)
                elems = e.elems or {}
                for sub in shadow:  # this layer's members that a newer layer changed do not count
                    v = elems.get(sub)
                    if v is not None and v is not DELETED and inside((v, sub), lo, hi):
                        total -= 1
                shadow.update(elems)
            if not bottom:
                stored_in_range = store.zset_count(self.db, key, lo, hi)
                total += stored_in_range
                # discount what the buffer changed: read the range's rows when that is cheaper than looking
                # each change up (a row read costs ~0.8 us, a lookup ~5 us: 10,000 of each, dev box)
                if shadow and stored_in_range <= SHADOW_ROWS_PER_LOOKUP * len(shadow):
                    rows = store.zset_range(self.db, key, lo, hi, False, stored_in_range)
                    total -= sum(1 for _, sub in rows if sub in shadow)
                elif shadow:
                    stored = store.zset_scores(self.db, key, list(shadow))
                    total -= sum(1 for sub, v in stored.items() if inside((v, sub), lo, hi))
        return total

    def zrange_by_rank(self: Keyspace, key: bytes, start: int, stop: int, rev: bool = False
                       ) -> list[tuple[bytes, float]]:
        m = self.typed_meta(key, T_ZSET)
        if m is None:
            return []
        n = m[M_COUNT]
        a, b = self._bounds(start, stop, n)
        if a >= b:
            return []
        if a > n - b:  # nearer the other end: walk from there
            return self._zread(key, None, None, not rev, n - b, b - a)[::-1]
        return self._zread(key, None, None, rev, a, b - a)

    def zrange_by_score(self: Keyspace, key: bytes, lo: float, lo_open: bool, hi: float, hi_open: bool,
                        rev: bool = False, offset: int = 0, count: int = -1) -> list[tuple[bytes, float]]:
        bounds = key_range(lo, lo_open, hi, hi_open)
        if self.typed_meta(key, T_ZSET) is None or bounds is None or offset < 0 or count == 0:
            return []
        return self._zread(key, bounds[0], bounds[1], rev, offset, count)

    def zcount(self: Keyspace, key: bytes, lo: float, lo_open: bool, hi: float, hi_open: bool) -> int:
        m = self.typed_meta(key, T_ZSET)
        bounds = key_range(lo, lo_open, hi, hi_open)
        if m is None or bounds is None:
            return 0
        if bounds == (None, None):
            return m[M_COUNT]
        return self._zcount(key, *bounds)

    def zrank(self: Keyspace, key: bytes, member: bytes, rev: bool = False) -> int | None:
        """The member's 0-based rank (from the top with ``rev``), None when it is absent."""
        score = self.zscore(key, member)
        if score is None:
            return None
        if rev:
            return self._zcount(key, after((score, member)), None)
        return self._zcount(key, None, (score, member))

    def _lex_bounds(self: Keyspace, key: bytes, lo: LexBound, hi: LexBound) -> tuple[ZBound, ZBound] | None:
        """A lex range as ``[lo, hi)`` bounds when every member has one score (how BYLEX is used:
        then member order is the index's order within that score); None when scores differ
        (Redis's answer then follows its own walk, which the caller replays over every member).
        ``lo``/``hi``: (member, exclusive), or -1/+1 for "-"/"+" (memd.commands.zsets)."""
        first = self._zread(key, None, None, False, 0, 1)
        last = self._zread(key, None, None, True, 0, 1)
        if not first or first[0][1] != last[0][1]:
            return None
        s = first[0][1]
        empty: tuple[ZBound, ZBound] = ((s, b""), (s, b""))
        if lo[0] == 1 or hi[0] == -1:
            return empty  # "+" as the minimum or "-" as the maximum: nothing
        lo_b: ZBound = (s,)
        if isinstance(lo[0], bytes):
            lo_b = after((s, lo[0])) if lo[1] else (s, lo[0])
        hi_b: ZBound = None
        if isinstance(hi[0], bytes):
            hi_b = (s, hi[0]) if hi[1] else after((s, hi[0]))
        return lo_b, hi_b

    def zrange_by_lex(self: Keyspace, key: bytes, lo: LexBound, hi: LexBound, rev: bool = False, offset: int = 0,
                      count: int = -1) -> list[tuple[bytes, float]] | None:
        """ZRANGEBYLEX through the index when every member has one score; None otherwise."""
        if self.typed_meta(key, T_ZSET) is None or offset < 0 or count == 0:
            return []
        bounds = self._lex_bounds(key, lo, hi)
        if bounds is None:
            return None
        if bounds[1] is not None and bounds[0] is not None and bounds[0] >= bounds[1]:
            return []
        return self._zread(key, bounds[0], bounds[1], rev, offset, count)

    def zlexcount(self: Keyspace, key: bytes, lo: LexBound, hi: LexBound) -> int | None:
        """ZLEXCOUNT through the index when every member has one score; None otherwise."""
        if self.typed_meta(key, T_ZSET) is None:
            return 0
        bounds = self._lex_bounds(key, lo, hi)
        if bounds is None:
            return None
        if bounds[1] is not None and bounds[0] is not None and bounds[0] >= bounds[1]:
            return 0
        return self._zcount(key, *bounds)

    # ---- writes over ranges ----------------------------------------------------------

    def _zdrop(self: Keyspace, key: bytes, m: Meta, members: list[bytes]) -> None:
        """Remove members known to be present, in one record (the key goes when it empties)."""
        if members:
            self.update(key, T_ZSET, False, m[M_EXPIRES_AT], m[M_COUNT] - len(members), 0, 0,
                        [(s, None) for s in members])

    def zpop(self: Keyspace, key: bytes, count: int, top: bool) -> list[tuple[bytes, float]] | None:
        """ZPOPMIN / ZPOPMAX: up to ``count`` members from the low (high with ``top``) end;
        None when the key does not exist."""
        m = self.typed_meta(key, T_ZSET)
        if m is None:
            return None
        items = self._zread(key, None, None, top, 0, min(count, m[M_COUNT])) if count > 0 else []
        self._zdrop(key, m, [member for member, _ in items])
        return items

    def zremrange_by_rank(self: Keyspace, key: bytes, start: int, stop: int) -> int:
        items = self.zrange_by_rank(key, start, stop)
        m = self.typed_meta(key, T_ZSET)
        if m is not None:
            self._zdrop(key, m, [member for member, _ in items])
        return len(items)

    def zremrange_by_score(self: Keyspace, key: bytes, lo: float, lo_open: bool, hi: float, hi_open: bool) -> int:
        items = self.zrange_by_score(key, lo, lo_open, hi, hi_open)
        m = self.typed_meta(key, T_ZSET)
        if m is not None:
            self._zdrop(key, m, [member for member, _ in items])
        return len(items)

    def zstore(self: Keyspace, key: bytes, items: list[tuple[bytes, float]]) -> int:
        """Replace ``key`` (any type, any TTL) by a zset of ``items``, or delete it when there
        are none (ZUNIONSTORE, ZRANGESTORE...); returns the new cardinality."""
        if items:
            self._apply([(OP_UPDATE, key, T_ZSET, True, None, len(items), 0, 0, items)])
        elif self.meta(key) is not None:
            self._apply([(OP_DEL, key)])
        return len(items)

    def zsource(self: Keyspace, key: bytes) -> dict[bytes, float] | None:
        """An input of ZUNION / ZINTER / ZDIFF: a zset's scores, or a set's members scored 1 as
        Redis takes them; None when the key does not exist."""
        m = self.meta(key)
        if m is None:
            return None
        if m[M_TYPE] == T_ZSET:
            return self.elems(key)
        if m[M_TYPE] == T_SET:
            return dict.fromkeys(self.elems(key), 1.0)
        raise WrongTypeError()

    def zscan(self: Keyspace, key: bytes, after_member: bytes | None, count: int
              ) -> tuple[list[tuple[bytes, float]], bytes | None]:
        """A page of about ``count`` (member, score) in member byte order after ``after_member``,
        and where to resume (None: done). A member present for the whole scan is returned."""
        if self.typed_meta(key, T_ZSET) is None:
            return [], None
        with self.engine.store.snapshot():
            entries, bottom = self._zlayers(key)
            rows = [] if bottom else self.engine.store.zset_page(self.db, key, after_member, count)
        limit = rows[-1][0] if len(rows) == count else None  # the store has more beyond this member
        stored = dict(rows)
        subs = set(stored)
        for e in entries:
            subs.update(s for s in e.elems or () if (after_member is None or s > after_member)
                        and (limit is None or s <= limit))
        ordered_subs = sorted(subs)
        more = limit is not None
        if len(ordered_subs) > count:
            ordered_subs = ordered_subs[:count]
            more = True
        page = []
        for sub in ordered_subs:
            value = next((e.elems[sub] for e in entries if e.elems and sub in e.elems), _MISSING)
            if value is _MISSING:
                value = stored.get(sub, DELETED)
            if value is not DELETED:
                page.append((sub, value))
        return page, (ordered_subs[-1] if more and ordered_subs else None)


__all__ = ["ZsetsMixin"]
