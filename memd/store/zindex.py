"""The SQLite store's sorted-set reads in score order: the ``elems_score`` index and fences.

``elems_score (db, key, score, sub)`` (partial: the rows that have a score) holds every
stored sorted set in Redis's order, so a range ``[lo, hi)`` of (score, member) bounds
(see :data:`memd.store.base.ZBound`) is one index seek and a walk of what it returns.
Counts walk what they count, in C (~80 ns a member on the dev box); a big set's
*fences* (:meth:`ZsetIndex._fences`) cut that to at most one fence's worth.
"""

from __future__ import annotations

import bisect
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from memd.engine.records import T_ZSET
from memd.store.base import KeyRow, ZBound

if TYPE_CHECKING:
    import sqlite3

ZSET_FENCE = 1024  # members between two fences of a big zset (see ZsetIndex._fences)
ZSET_FENCE_MIN = 8 * ZSET_FENCE  # a stored zset this big gets fences
ZSET_FENCE_KEYS = 64  # zsets whose fences are kept (the oldest built goes first)
ZSET_SCORES_BATCH = 500  # members per statement of zset_scores (SQLite allows 32,766 parameters)

Fences = tuple[list[tuple[float, bytes]], int]  # a zset's every ZSET_FENCE-th (score, member), and its size


class ZsetIndex:
    """Sorted-set reads of :class:`memd.store.sqlite.SqliteStore` (on its reader, the event loop's)."""

    if TYPE_CHECKING:  # provided by SqliteStore
        _zfences: dict[tuple[int, bytes], tuple[Any, Fences]]  # (db, key) -> (flushed LSN they hold for, fences)

        @property
        def reader(self) -> sqlite3.Connection: ...

        def snapshot(self) -> AbstractContextManager[None]: ...

        def get_key(self, db: int, key: bytes) -> KeyRow | None: ...

    def zset_range(self, db: int, key: bytes, lo: ZBound, hi: ZBound, rev: bool, limit: int, offset: int = 0
                   ) -> list[tuple[float, bytes]]:
        if offset >= ZSET_FENCE and not rev:
            with self.snapshot():
                fences = self._fences(db, key)
                if fences is not None:  # jump to the last fence before the offset's rank
                    rank = (0 if lo is None else self._below(db, key, fences, lo)) + offset
                    j = rank // ZSET_FENCE - 1
                    if 0 <= j < len(fences[0]):
                        lo, offset = _after(fences[0][j]), rank - (j + 1) * ZSET_FENCE
                return self._zset_range(db, key, lo, hi, rev, limit, offset)
        return self._zset_range(db, key, lo, hi, rev, limit, offset)

    def _zset_range(self, db: int, key: bytes, lo: ZBound, hi: ZBound, rev: bool, limit: int, offset: int
                    ) -> list[tuple[float, bytes]]:
        where, params = _zset_where(db, key, lo, hi)
        order = "score DESC, sub DESC" if rev else "score, sub"
        return self.reader.execute(
            f"SELECT score, sub FROM elems WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?",
            (*params, limit, offset)).fetchall()

    def zset_count(self, db: int, key: bytes, lo: ZBound, hi: ZBound) -> int:
        with self.snapshot():
            fences = self._fences(db, key)
            if fences is None:
                return self._zset_count(db, key, lo, hi)
            return max(0, self._below(db, key, fences, hi) - (0 if lo is None else self._below(db, key, fences, lo)))

    def _zset_count(self, db: int, key: bytes, lo: ZBound, hi: ZBound) -> int:
        where, params = _zset_where(db, key, lo, hi)
        return int(self.reader.execute(f"SELECT count(*) FROM elems WHERE {where}", params).fetchone()[0])

    def _below(self, db: int, key: bytes, fences: Fences, bound: ZBound) -> int:
        """How many members sort below ``bound`` as an upper bound (None: all of them): whole
        fences, then SQLite counts at most one fence's worth."""
        if bound is None:
            return fences[1]
        i = bisect.bisect_left(fences[0], bound)
        start = _after(fences[0][i - 1]) if i else None
        return i * ZSET_FENCE + self._zset_count(db, key, start, bound)

    def _fences(self, db: int, key: bytes) -> Fences | None:
        """Every ZSET_FENCE-th member of a big stored zset (and how many it has), for counts and
        ranks in O(log n + ZSET_FENCE) instead of a walk of the counted range; None for a small set.

        Built with one seek per fence (SQLite steps ZSET_FENCE index entries in C for each), and
        valid for one state of the store: the flushed LSN read inside the caller's snapshot tags
        it, so the next flush (of any key) makes the next count rebuild it. A set read often
        between flushes pays one walk per flush instead of one per count.
        """
        lsn = self.reader.execute("SELECT value FROM meta WHERE name = 'flushed_lsn'").fetchone()[0]
        cached = self._zfences.get((db, key))
        if cached is not None and cached[0] == lsn:
            return cached[1]
        row = self.get_key(db, key)
        if row is None or row[0] != T_ZSET or row[3] < ZSET_FENCE_MIN:
            return None
        marks: list[tuple[float, bytes]] = []
        lo: ZBound = None
        while True:
            found = self._zset_range(db, key, lo, None, False, 1, ZSET_FENCE - 1)
            if not found:
                break
            marks.append(found[0])
            lo = _after(found[0])
        fences = (marks, row[3])
        if len(self._zfences) >= ZSET_FENCE_KEYS:
            self._zfences.pop(next(iter(self._zfences)))
        self._zfences[(db, key)] = (lsn, fences)
        return fences

    def zset_scores(self, db: int, key: bytes, members: list[bytes]) -> dict[bytes, float]:
        found: dict[bytes, float] = {}
        for i in range(0, len(members), ZSET_SCORES_BATCH):
            batch = members[i:i + ZSET_SCORES_BATCH]
            found.update(self.reader.execute(
                f"SELECT sub, score FROM elems WHERE db = ? AND key = ? AND sub IN ({','.join('?' * len(batch))})",
                (db, key, *batch)).fetchall())
        return found

    def zset_page(self, db: int, key: bytes, after: bytes | None, limit: int) -> list[tuple[bytes, float]]:
        if after is None:
            cur = self.reader.execute("SELECT sub, score FROM elems WHERE db = ? AND key = ? ORDER BY sub LIMIT ?",
                                      (db, key, limit))
        else:
            cur = self.reader.execute(
                "SELECT sub, score FROM elems WHERE db = ? AND key = ? AND sub > ? ORDER BY sub LIMIT ?",
                (db, key, after, limit))
        return cur.fetchall()


def _after(item: tuple[float, bytes]) -> tuple[float, bytes]:
    """The lowest bound above a member: its bytes followed by a NUL are the next byte string."""
    return item[0], item[1] + b"\0"


def _zset_where(db: int, key: bytes, lo: ZBound, hi: ZBound) -> tuple[str, tuple[Any, ...]]:
    """The WHERE clause of a sorted-set range ``[lo, hi)`` in (score, member) order.

    Every form names ``score`` with a comparison (``IS NOT NULL`` when unbounded): that is
    what lets SQLite use the partial index ``elems_score``, which only holds rows with a score.
    """
    where = ["db = ? AND key = ?"]
    params: list[Any] = [db, key]
    if lo is None and hi is None:
        where.append("score IS NOT NULL")
    if lo is not None:
        if len(lo) == 1:
            where.append("score >= ?")
            params.append(lo[0])
        else:
            where.append("score >= ? AND (score > ? OR sub >= ?)")
            params += (lo[0], lo[0], lo[1])
    if hi is not None:
        if len(hi) == 1:
            where.append("score < ?")
            params.append(hi[0])
        else:
            where.append("score <= ? AND (score < ? OR sub < ?)")
            params += (hi[0], hi[0], hi[1])
    return " AND ".join(where), tuple(params)
