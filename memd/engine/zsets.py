"""Sorted sets over the layered store.

Each write reads what it needs (metadata, the touched members), then emits a
single OP_UPDATE carrying the key's full new metadata plus only the changed
members (a member's element value is its score).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from memd.engine.collections import M_COUNT, M_EXPIRES_AT
from memd.engine.records import T_ZSET
from memd.errors import CommandError

if TYPE_CHECKING:
    from memd.engine.keyspace import Keyspace


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
        items: list[tuple[bytes, Any]] = list(self.elems(key).items())
        items.sort(key=lambda it: (it[1], it[0]))
        return items

    def zrange_by_rank(self: Keyspace, key: bytes, start: int, stop: int, rev: bool = False
                       ) -> list[tuple[bytes, float]]:
        items = self.zitems(key)
        if rev:
            items.reverse()
        a, b = self._bounds(start, stop, len(items))
        return items[a:b]

    def zrange_by_score(self: Keyspace, key: bytes, lo: float, lo_open: bool, hi: float, hi_open: bool,
                        rev: bool = False, offset: int = 0, count: int = -1) -> list[tuple[bytes, float]]:
        def inside(s: float) -> bool:
            return (s > lo if lo_open else s >= lo) and (s < hi if hi_open else s <= hi)
        items = [it for it in self.zitems(key) if inside(it[1])]
        if rev:
            items.reverse()
        if offset < 0:
            return []
        return items[offset:] if count < 0 else items[offset:offset + count]


__all__ = ["ZsetsMixin"]
