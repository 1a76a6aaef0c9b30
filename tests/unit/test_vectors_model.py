"""Model-based test: vector indexes and KNN search against a brute-force float64 reference.

A hypothesis state machine declares and drops vector indexes, puts memories
with zero to three vectors (and, sometimes, a vector the index must refuse),
deletes them, refreshes TTLs, moves a fake clock, flushes (also with tiny
automatic flush thresholds), compacts (expired memories purged) and restarts
the engine cleanly or crash-like (WAL replay). KNN searches (with and without
FILTER, on an index's prefix or below it, with LIMIT and OFFSET) must return
what a brute-force scan of the model computes in float64: the same memories
in the same order, scores within 1e-5.

Vectors come from a small palette whose distinct members score at least 1e-3
apart against every query vector, so two memories either tie exactly (the
same palette vector is their best) or are clearly ordered: float32 rounding
cannot reorder them. Ties are broken by (namespace, key), ascending: the
order the implementation gives, which the test pins.

What counts as "held" when an index's DIMS or DISTANCE changes: the vectors
of every memory not deleted, expired ones included until compaction purges
them (the in-memory index keeps them until then), after the buffer is flushed
(MEM.INDEX CREATE flushes the prefix's buffered writes first).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hypothesis import HealthCheck, event, settings
from hypothesis.errors import InvalidArgument
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from memd.config import CompactionConfig
from memd.engine.memories import parse_filter
from memd.maintenance.compaction import run_compaction
from tests.unit.engine_harness import Clock, EngineHarness

INDEX_PREFIXES = ["a", "a.b", "c", ""]
NAMESPACES = ["a", "a.b", "a.bc", "c", "c.d", "e"]
SEARCH_PREFIXES = ["", "a", "a", "a.b", "a.bc", "c", "c", "c.d", "e"]
KEYS = ["k0", "k1", "k2"]
DISTANCES = ("cosine", "ip", "l2")
DIMS = (2, 3)
FILTERS: list[dict[str, Any] | None] = [None, {"n": {"$gte": 2}}, {"tag": "x"}]
TOL = 1e-5


def _score(distance: str, q: np.ndarray, v: np.ndarray) -> float:
    if distance == "cosine":
        return float(v @ q / (np.linalg.norm(v) * np.linalg.norm(q)))
    if distance == "ip":
        return float(v @ q)
    return -float(np.linalg.norm(v - q))


def _palette(dims: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Six vectors and three queries (multiples of 1/4, exact in float32) whose distinct vectors'
    scores differ by more than 1e-3 against each query under each distance."""
    rng = np.random.default_rng(dims)
    while True:
        cand = [rng.integers(-4, 5, dims) / 4 for _ in range(9)]
        if any(not c.any() for c in cand) or len({tuple(c) for c in cand}) < 9:
            continue
        vecs, queries = cand[:6], cand[6:]
        if all(abs(_score(d, q, a) - _score(d, q, b)) > 1e-3
               for d in DISTANCES for q in queries for i, a in enumerate(vecs) for b in vecs[i + 1:]):
            return vecs, queries


PALETTE = {d: _palette(d) for d in DIMS}


def _event(text: str) -> None:
    """hypothesis.event, for --hypothesis-show-statistics: how often each outcome was reached."""
    try:
        event(text)
    except InvalidArgument:  # (a step run by hand, outside a test)
        pass


def blob(v: np.ndarray) -> bytes:
    return struct.pack(f"<{len(v)}f", *v)


def under(ns: str, prefix: str) -> bool:
    return not prefix or ns == prefix or ns.startswith(prefix + ".")


@dataclass
class Slot:
    last_version: int = 0
    value: dict[str, Any] | None = None  # None: never put, deleted, or purged after expiry
    expires: int | None = None
    ttl: int | None = None
    vectors: list[np.ndarray] = field(default_factory=list)


class Model:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.indexes: dict[str, tuple[int, str]] = {}
        self.slots: dict[tuple[str, str], Slot] = {}

    def now(self) -> int:
        return int(self.clock() * 1000)

    def live(self, ident: tuple[str, str]) -> Slot | None:
        s = self.slots.get(ident)
        if s is None or s.value is None or (s.expires is not None and s.expires <= self.now()):
            return None
        return s

    def index_of(self, ns: str) -> str | None:
        return next((p for p in self.indexes if under(ns, p)), None)

    def held(self, prefix: str) -> tuple[int, int]:
        """(vectors, memories) the index on ``prefix`` holds: expired ones until purged."""
        slots = [s for (ns, _), s in self.slots.items() if under(ns, prefix) and s.value is not None and s.vectors]
        return sum(len(s.vectors) for s in slots), len(slots)

    def knn(self, prefix: str, q: np.ndarray, flt: dict[str, Any] | None, limit: int, offset: int
            ) -> list[tuple[tuple[str, str], float]]:
        distance = self.indexes[next(p for p in self.indexes if under(prefix, p))][1]
        scored = []
        for ident in self.slots:
            s = self.live(ident)
            if s is None or not s.vectors or not under(ident[0], prefix):
                continue
            assert s.value is not None
            if flt is not None and not all(_matches(s.value.get(f), cond) for f, cond in flt.items()):
                continue
            scored.append((ident, max(_score(distance, q, v) for v in s.vectors)))
        scored.sort(key=lambda p: (-p[1], p[0]))
        return scored[offset:offset + limit]


def _matches(value: Any, cond: Any) -> bool:
    if isinstance(cond, dict):
        return value is not None and value >= cond["$gte"]
    return bool(value == cond)


put_args = st.fixed_dictionaries({
    "ns": st.sampled_from(NAMESPACES), "key": st.sampled_from(KEYS),
    "picks": st.lists(st.integers(0, 5), max_size=3),  # palette vectors; none: a version without vectors
    "ttl": st.one_of(st.none(), st.sampled_from([500, 3000])), "n": st.integers(0, 3), "tag": st.sampled_from("xy"),
    "bad": st.sampled_from([None] * 17 + ["dims", "dup", "zero"]),  # a vector the index must refuse
})


class VectorsVsModel(EngineHarness, RuleBasedStateMachine):
    ENGINE_OPTIONS = {"flush_max_records": 20, "wal_segment_bytes": 4096}

    def __init__(self) -> None:
        super().__init__()
        self.start_engine("memd-vec-model-")
        self.model = Model(self.clock)

    def _flush(self) -> None:
        self.portal.call(self.engine.flush)

    @initialize(da=st.sampled_from(DISTANCES), dc=st.sampled_from(DISTANCES),
                batch=st.lists(put_args, min_size=4, max_size=10))
    def populate(self, da: str, dc: str, batch: list[dict[str, Any]]) -> None:
        """Start with an index on 'a' and one on 'c' and a few memories, so most steps have vectors to work on."""
        self.create("a", 2, da)
        self.create("c", 3, dc)
        self.puts(batch)

    # ---- index changes --------------------------------------------------------------------------

    @rule(prefix=st.sampled_from(INDEX_PREFIXES), dims=st.sampled_from(DIMS), distance=st.sampled_from(DISTANCES))
    def create(self, prefix: str, dims: int, distance: str) -> None:
        mem, model = self.engine.memories, self.model
        old = model.indexes.get(prefix)
        if old is not None and old != (dims, distance) and mem.pending(prefix):
            self._flush()  # as MEM.INDEX CREATE does before a change of DIMS or DISTANCE
        lsn = self.engine.last_lsn
        nests = any(p != prefix and (under(p, prefix) or under(prefix, p)) for p in model.indexes)
        try:
            created = self.portal.call(mem.create_index, prefix, dims, distance, '["$"]')
        except ValueError as exc:
            if old is None or old == (dims, distance) or not model.held(prefix)[0]:
                assert nests and "nests with the index" in str(exc), exc
            else:
                held = model.held(prefix)[0]
                assert str(exc).startswith(f"index {prefix!r} holds {held} vectors of DIMS {old[0]} "
                                           f"DISTANCE {old[1]}; MEM.INDEX DROP it"), exc
            assert self.engine.last_lsn == lsn, "a refused change logs nothing"
            _event("create: refused (" + ("nests" if nests else "vectors held") + ")")
            return
        assert not nests
        _event("create: " + ("new" if old is None else "same" if old == (dims, distance) else "changed"))
        assert created is (old != (dims, distance))
        if not created:
            assert self.engine.last_lsn == lsn, "re-declaring the same index logs nothing"
        assert old is None or old[:2] == (dims, distance) or not model.held(prefix)[0]
        model.indexes[prefix] = (dims, distance)

    @rule(prefix=st.sampled_from(INDEX_PREFIXES))
    def drop(self, prefix: str) -> None:
        dropped = self.portal.call(self.engine.memories.drop_index, prefix)
        assert dropped is (prefix in self.model.indexes)
        if dropped:
            del self.model.indexes[prefix]
            for (ns, _), s in self.model.slots.items():
                if under(ns, prefix):
                    s.vectors = []

    # ---- memories -------------------------------------------------------------------------------

    @rule(batch=st.lists(put_args, min_size=1, max_size=6))
    def puts(self, batch: list[dict[str, Any]]) -> None:
        for args in batch:
            self.put(**args)

    def put(self, ns: str, key: str, picks: list[int], ttl: int | None, n: int, tag: str, bad: str | None) -> None:
        model, mem = self.model, self.engine.memories
        p = model.index_of(ns)
        dims, distance = model.indexes[p] if p is not None else (2, "cosine")
        vecs = [PALETTE[dims][0][i] for i in picks]
        vectors = [(f"p{j}", blob(v)) for j, v in enumerate(vecs)]
        if bad == "dims":
            vectors.append(("bad", blob(PALETTE[5 - dims][0][0])))
        elif bad == "dup" and vectors:
            vectors.append((vectors[0][0], vectors[0][1]))
        elif bad == "zero" and distance == "cosine":
            vectors.append(("zero", blob(np.zeros(dims))))
        else:
            bad = None
        refused = bool(vectors) and (p is None or bad is not None)
        value = {"n": n, "tag": tag}
        lsn = self.engine.last_lsn
        try:
            version = self.portal.call(mem.put, ns, key, json.dumps(value), ttl, tuple(vectors))
        except ValueError:
            _event("put: refused")
            assert refused
            assert self.engine.last_lsn == lsn, "a refused put writes nothing"
            return
        assert not refused
        now = model.now()
        s = model.slots.setdefault((ns, key), Slot())
        s.last_version += 1
        assert version == s.last_version
        s.value, s.ttl, s.expires, s.vectors = value, ttl, None if ttl is None else now + ttl, vecs

    @rule(ns=st.sampled_from(NAMESPACES), key=st.sampled_from(KEYS))
    def delete(self, ns: str, key: str) -> None:
        live = self.model.live((ns, key))
        assert self.portal.call(self.engine.memories.delete, ns, key) is (live is not None)
        if live is not None:
            live.value, live.vectors = None, []

    @rule(ns=st.sampled_from(NAMESPACES), key=st.sampled_from(KEYS), pick=st.integers(0, 20))
    def refresh(self, ns: str, key: str, pick: int) -> None:
        """MEM.GET REFRESHTTL, mostly of a memory that has a TTL to refresh."""
        ttls = sorted(i for i, s in self.model.slots.items() if self.model.live(i) is not None and s.ttl is not None)
        if ttls and pick:
            ns, key = ttls[pick % len(ttls)]
        live = self.model.live((ns, key))
        item = self.portal.call(lambda: self.engine.memories.get(ns, key, refresh_ttl=True))
        assert (item is None) is (live is None)
        if live is not None and live.ttl is not None:
            live.expires = self.model.now() + live.ttl

    @rule(ms=st.sampled_from([1, 400, 1500, 4000]))
    def advance_clock(self, ms: int) -> None:
        self.clock.now += ms / 1000

    @rule()
    def flush(self) -> None:
        self._flush()

    @rule()
    def compact(self) -> None:
        """Expired memories purged (skipped while buffered: flushed first, as a quiet daemon would be)."""
        self._flush()
        self.portal.call(run_compaction, self.engine, CompactionConfig())
        now = self.model.now()
        for s in self.model.slots.values():
            if s.value is not None and s.expires is not None and s.expires <= now:
                s.value, s.vectors = None, []

    @precondition(lambda self: self.restarts < 3)
    @rule(crash=st.booleans())
    def restart(self, crash: bool) -> None:
        self.reopen(crash)

    # ---- searches -------------------------------------------------------------------------------

    @rule(prefix=st.sampled_from(SEARCH_PREFIXES), qi=st.integers(0, 2), fi=st.integers(0, len(FILTERS) - 1),
          limit=st.sampled_from([1, 2, 5, 100]), offset=st.sampled_from([0, 0, 1, 3]))
    def knn(self, prefix: str, qi: int, fi: int, limit: int, offset: int) -> None:
        mem, model = self.engine.memories, self.model
        covering = next((p for p in model.indexes if under(prefix, p)), None)
        dims = model.indexes[covering][0] if covering is not None else 2
        q = PALETTE[dims][1][qi]
        try:
            vector = self.portal.call(mem.query_vector, prefix, blob(q))
        except ValueError as exc:
            assert covering is None and "no vector index covers" in str(exc), exc
            return
        assert covering is not None
        flt = FILTERS[fi]
        conds = parse_filter(flt) if flt is not None else []

        async def search() -> list[Any]:
            if mem.pending(prefix) or mem.index_pending():  # as MEM.SEARCH does: read your writes
                await self.engine.flush()
            return await mem.search(prefix, None, conds, limit, offset, vector=vector)
        got = self.portal.call(search)
        want = model.knn(prefix, q, flt, limit, offset)
        _event(f"knn: {'some' if want else 'no'} results" + (", ties" if len({s for _, s in want}) < len(want) else ""))
        assert [(i.ns, i.key) for i in got] == [ident for ident, _ in want], (prefix, flt, limit, offset)
        for item, (ident, s) in zip(got, want):
            assert item.score is not None and abs(item.score - s) <= TOL, (ident, item.score, s)
            assert item.version == model.slots[ident].last_version

    @rule()
    def sweep(self) -> None:
        """Every search prefix, query and filter at once (the buffer as the steps before left it)."""
        for prefix in sorted(set(SEARCH_PREFIXES)):
            for qi in range(3):
                for fi in range(len(FILTERS)):
                    self.knn(prefix, qi, fi, 100, 0)

    @rule()
    def counts(self) -> None:
        """What the in-memory indexes hold, once flushed, is the model's (MEM.INDEX LIST's counts)."""
        mem = self.engine.memories
        self._flush()
        assert {p: spec[:2] for p, spec in mem.indexes().items()} == self.model.indexes
        for p in self.model.indexes:
            assert mem.index_stats(p)[:2] == self.model.held(p), p


TestVectorsVsModel = VectorsVsModel.TestCase
TestVectorsVsModel.settings = settings(max_examples=25, stateful_step_count=30, deadline=None,
                                       suppress_health_check=[HealthCheck.too_slow])
