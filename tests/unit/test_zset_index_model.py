"""Model-based test of sorted sets' ordered reads: the store's score index merged with the buffer.

A hypothesis state machine changes a few sorted sets (ZADD of one member or a
bulk of 70 new ones, so buffer entries grow past ORDER_MIN and keep a
SortedList; ZREM, ZPOPMIN/ZPOPMAX, ZREMRANGEBYSCORE/RANK, a ZUNIONSTORE-like
replace, DEL, a string overwrite), interleaved with flushes, freezes that
leave a frozen layer under the active one, and clean or crash-like restarts
(the WAL replayed). After every step every ordered read (score ranges with
open, closed and infinite bounds, offsets and counts, both directions; ranks;
counts; rank ranges; a whole ZSCAN in small pages) must equal a plain sorted
list of the model; and whenever the buffer holds nothing for a key, the
store's own index (zset_range, zset_count) must hold exactly the model's set.
"""

from __future__ import annotations

import math
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import pytest

from memd.engine.zorder import key_range
from tests.unit.engine_harness import EngineHarness

KEYS = [b"z0", b"z1", b"z2"]
MEMBERS = [b"a", b"b", b"c", b"d", b"", b"e\x00", b"f"]
SCORES = [-math.inf, -2.0, -0.5, 0.0, 1.0, 1.5, 3.0, math.inf]
BOUNDS = [(-math.inf, False), (-2.0, True), (0.0, False), (0.0, True), (1.0, False), (1.5, True), (3.0, False),
          (math.inf, False), (math.inf, True), (-math.inf, True)]

Model = dict[bytes, dict[bytes, float]]
pytestmark = pytest.mark.timeout(300)  # a few hundred steps, each reading every key every way


def ordered(z: dict[bytes, float]) -> list[tuple[bytes, float]]:
    return sorted(z.items(), key=lambda it: (it[1], it[0]))


def in_range(score: float, lo: tuple[float, bool], hi: tuple[float, bool]) -> bool:
    return (score > lo[0] if lo[1] else score >= lo[0]) and (score < hi[0] if hi[1] else score <= hi[0])


class ZsetIndexVsModel(EngineHarness, RuleBasedStateMachine):
    ENGINE_OPTIONS = {"flush_max_records": 40, "wal_segment_bytes": 4096}

    def __init__(self) -> None:
        super().__init__()
        self.start_engine("memd-zindex-")
        self.model: Model = {}
        self.bulk = 0

    def call(self, fn: Any, *args: Any, **kw: Any) -> Any:
        return self.portal.call(lambda: fn(*args, **kw))

    @property
    def ks(self) -> Any:
        return self.engine.keyspace

    # ---- writes ----

    @rule(key=st.sampled_from(KEYS), pairs=st.lists(st.tuples(st.sampled_from(SCORES), st.sampled_from(MEMBERS)),
                                                     min_size=1, max_size=4))
    def zadd(self, key: bytes, pairs: list[tuple[float, bytes]]) -> None:
        self.call(self.ks.zadd, key, [(score + 0.0, member) for score, member in pairs])
        self.model.setdefault(key, {}).update((member, score + 0.0) for score, member in pairs)

    @rule(key=st.sampled_from(KEYS), base=st.sampled_from(SCORES))
    def zadd_bulk(self, key: bytes, base: float) -> None:
        """70 new members (a big buffer entry: its order is a SortedList), some sharing a score."""
        self.bulk += 1
        pairs = [(base if j % 3 == 0 or math.isinf(base) else base + j / 8, b"n%d-%02d" % (self.bulk, j))
                 for j in range(70)]
        self.call(self.ks.zadd, key, pairs)
        self.model.setdefault(key, {}).update((m, s) for s, m in pairs)

    @rule(key=st.sampled_from(KEYS), member=st.sampled_from(MEMBERS))
    def zrem(self, key: bytes, member: bytes) -> None:
        z = self.model.get(key, {})
        assert self.call(self.ks.zrem, key, [member]) == int(member in z)
        z.pop(member, None)
        self._tidy(key)

    @rule(key=st.sampled_from(KEYS), count=st.sampled_from([1, 2, 5, 40]), top=st.booleans())
    def zpop(self, key: bytes, count: int, top: bool) -> None:
        z = self.model.get(key, {})
        items = ordered(z)
        want = (items[::-1] if top else items)[:count]
        got = self.call(self.ks.zpop, key, count, top)
        assert got == (want if key in self.model else None)
        for member, _ in want:
            del z[member]
        self._tidy(key)

    @rule(key=st.sampled_from(KEYS), lo=st.sampled_from(BOUNDS), hi=st.sampled_from(BOUNDS))
    def zremrange_by_score(self, key: bytes, lo: tuple[float, bool], hi: tuple[float, bool]) -> None:
        z = self.model.get(key, {})
        gone = [m for m, s in z.items() if in_range(s, lo, hi)]
        assert self.call(self.ks.zremrange_by_score, key, lo[0], lo[1], hi[0], hi[1]) == len(gone)
        for m in gone:
            del z[m]
        self._tidy(key)

    @rule(key=st.sampled_from(KEYS), start=st.integers(-8, 8), stop=st.integers(-8, 8))
    def zremrange_by_rank(self, key: bytes, start: int, stop: int) -> None:
        items = ordered(self.model.get(key, {}))
        gone = items[slice(*_rank_slice(start, stop, len(items)))]
        assert self.call(self.ks.zremrange_by_rank, key, start, stop) == len(gone)
        for m, _ in gone:
            del self.model[key][m]
        self._tidy(key)

    @rule(dst=st.sampled_from(KEYS), src=st.sampled_from(KEYS), how=st.sampled_from(["store", "del", "none", "none"]))
    def replace(self, dst: bytes, src: bytes, how: str) -> None:
        """Replace dst by src's members rescored (what ZUNIONSTORE/ZRANGESTORE write), or DEL it
        (rarely: the reads over the store and the buffer need keys that outlive flushes)."""
        if how == "del":
            self.call(self.ks.delete, [dst])
            self.model.pop(dst, None)
        elif how == "store":
            items = [(m, s * 2) for m, s in ordered(self.model.get(src, {}))]
            self.call(self.ks.zstore, dst, items)
            if items:
                self.model[dst] = dict(items)
            else:
                self.model.pop(dst, None)

    def _tidy(self, key: bytes) -> None:
        if key in self.model and not self.model[key]:
            del self.model[key]

    # ---- buffer layers ----

    @rule()
    def flush(self) -> None:
        self.portal.call(self.engine.flush)

    @rule()
    def freeze(self) -> None:
        """Leave a frozen layer under a new active one (the flush loop writes it out later)."""
        def freeze() -> None:
            if self.engine.frozen is None and self.engine.active.records:
                self.engine._freeze()
        self.portal.call(freeze)

    @precondition(lambda self: self.restarts < 3)
    @rule(crash=st.booleans())
    def restart(self, crash: bool) -> None:
        self.reopen(crash)

    # ---- every ordered read against the model ----

    @invariant()
    def ordered_reads(self) -> None:
        def observe() -> list[str]:
            ks = self.ks
            bad: list[str] = []
            for key in KEYS:
                z = self.model.get(key, {})
                items = ordered(z)

                def check(what: str, got: Any, want: Any) -> None:
                    if got != want:
                        bad.append(f"{key!r} {what}: engine {got!r} model {want!r}")

                check("zitems", ks.zitems(key), items)
                check("zcard", ks.zcard(key), len(items))
                for lo in BOUNDS[::4]:
                    for hi in BOUNDS[1::3]:
                        inside = [it for it in items if in_range(it[1], lo, hi)]
                        check(f"count {lo} {hi}", ks.zcount(key, lo[0], lo[1], hi[0], hi[1]), len(inside))
                        for rev, offset, count in ((False, 0, 3), (True, 1, 70)):
                            want = (inside[::-1] if rev else inside)[offset:]
                            want = want if count < 0 else want[:count]
                            check(f"range {lo} {hi} rev={rev} {offset} {count}",
                                  ks.zrange_by_score(key, lo[0], lo[1], hi[0], hi[1], rev, offset, count), want)
                for rank, (member, _) in enumerate(items):
                    if rank % 41 == 0 or member in MEMBERS:
                        check(f"rank {member!r}", ks.zrank(key, member), rank)
                        check(f"revrank {member!r}", ks.zrank(key, member, True), len(items) - 1 - rank)
                check("rank of a missing member", ks.zrank(key, b"nope"), None)
                for start, stop in ((0, 2), (-3, -1), (60, -60)):
                    want = items[slice(*_rank_slice(start, stop, len(items)))]
                    check(f"by rank {start} {stop}", ks.zrange_by_rank(key, start, stop), want)
                    check(f"by rank {start} {stop} rev", ks.zrange_by_rank(key, start, stop, True),
                          items[::-1][slice(*_rank_slice(start, stop, len(items)))])
                scanned: dict[bytes, float] = {}
                after: bytes | None = None
                for _ in range(1000):
                    page, after = ks.zscan(key, after, 17)
                    scanned.update(page)
                    if after is None:
                        break
                check("zscan", scanned, z)
                if not any(key in layer.entries for layer in self.engine.db_layers[0]):
                    store = self.engine.store
                    stored = [(m, s) for s, m in store.zset_range(0, key, None, None, False, -1)]
                    check("store index", stored, items)
                    check("store count", store.zset_count(0, key, None, None), len(items))
                    for lo, hi in ((BOUNDS[2], BOUNDS[6]), (BOUNDS[3], BOUNDS[8])):
                        bounds = key_range(lo[0], lo[1], hi[0], hi[1])
                        if bounds is not None:
                            check(f"store count {lo} {hi}", store.zset_count(0, key, *bounds),
                                  sum(1 for it in items if in_range(it[1], lo, hi)))
            return bad

        bad = self.portal.call(observe)
        assert not bad, "\n".join(bad[:20])


def _rank_slice(start: int, stop: int, n: int) -> tuple[int, int]:
    """Redis's rank rules as a Python slice."""
    if start < 0:
        start = max(0, n + start)
    if stop < 0:
        stop = n + stop
    stop = min(stop, n - 1)
    return (start, stop + 1) if start <= stop else (0, 0)


ZsetIndexVsModel.TestCase.settings = settings(
    max_examples=15, stateful_step_count=20, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestZsetIndexVsModel = ZsetIndexVsModel.TestCase
