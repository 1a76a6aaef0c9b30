"""Model-based test: agent memories (versions, TTL, deletes, history, search) against a plain model.

A hypothesis state machine runs random MEM puts, deletes, TTL refreshes and
MULTI-like batches over a few (namespace, key) pairs, interleaved with
flushes, automatic flushes (tiny ``flush_max_records``), a fake clock
(expiry, history age) and clean or crash-like restarts. After every step,
gets, histories (within retention), no-query searches (order included),
query searches (as sets), a filter search and namespace listings must equal
the model's. History is the subtle part: one memtable can collapse several
versions of a key, and the flush must still archive each with its exact end.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from memd.engine.memories import MemItem, parse_filter
from tests.unit.engine_harness import Clock, EngineHarness

NAMESPACES = ["a", "a.b", "a.bc", "c.d.e"]
KEYS = ["k0", "k1"]
WORDS = ["apple", "banana", "cherry"]
KEEP, MAX_AGE_MS = 3, 6000


@dataclass
class Version:
    value: str
    version: int
    created: int
    updated: int
    expires: int | None
    ttl: int | None


@dataclass
class Slot:
    """The model of one memory: its current state and everything it archived."""

    last_version: int = 0
    current: Version | None = None  # None: never put, or deleted
    history: list[tuple[int, str, int, int, int, bool]] = field(default_factory=list)


class Model:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.slots: dict[tuple[str, str], Slot] = {}

    def now(self) -> int:
        return int(self.clock() * 1000)

    def live(self, ident: tuple[str, str]) -> Version | None:
        cur = self.slots.get(ident, Slot()).current
        if cur is None or (cur.expires is not None and cur.expires <= self.now()):
            return None
        return cur

    def put(self, ident: tuple[str, str], value: str, ttl: int | None) -> int:
        now = self.now()
        slot = self.slots.setdefault(ident, Slot())
        live = self.live(ident)
        cur = slot.current
        if cur is not None:
            ended = now if cur.expires is None else min(cur.expires, now)
            slot.history.append((cur.version, cur.value, cur.created, cur.updated, ended, False))
        slot.last_version += 1
        created = live.created if live is not None else now
        slot.current = Version(value, slot.last_version, created, now, None if ttl is None else now + ttl, ttl)
        return slot.last_version

    def delete(self, ident: tuple[str, str]) -> bool:
        live = self.live(ident)
        if live is None:
            return False
        slot = self.slots[ident]
        slot.history.append((live.version, live.value, live.created, live.updated, self.now(), True))
        slot.current = None
        return True

    def get(self, ident: tuple[str, str], refresh: bool) -> Version | None:
        live = self.live(ident)
        if live is not None and refresh and live.ttl is not None:
            live.expires = self.now() + live.ttl
        return live

    def history(self, ident: tuple[str, str]) -> list[tuple[int, str, int, int, int, bool]]:
        now = self.now()
        since = now - MAX_AGE_MS
        slot = self.slots.get(ident, Slot())
        rows = list(slot.history)
        cur = slot.current
        if cur is not None and cur.expires is not None and cur.expires <= now:  # expired: ended at its expiry
            rows.append((cur.version, cur.value, cur.created, cur.updated, cur.expires, False))
        return [r for r in sorted(rows, reverse=True) if r[4] > since][:KEEP]


def item_tuple(item: MemItem | None) -> tuple[Any, ...] | None:
    if item is None:
        return None
    return (item.ns, item.key, item.value, item.version, item.created_at, item.updated_at, item.expires_at)


def version_tuple(ident: tuple[str, str], v: Version | None) -> tuple[Any, ...] | None:
    if v is None:
        return None
    return (*ident, v.value, v.version, v.created, v.updated, v.expires)


idents = st.tuples(st.sampled_from(NAMESPACES), st.sampled_from(KEYS))
values = st.builds(lambda words, n: json.dumps({"text": " ".join(words), "n": n, "nested": {"w": words[:1]}},
                                               separators=(",", ":")),
                   st.lists(st.sampled_from(WORDS), min_size=1, max_size=3), st.integers(0, 3))
ttls = st.one_of(st.none(), st.sampled_from([500, 2000, 4000]))
ops = st.one_of(
    st.tuples(st.just("put"), idents, values, ttls),
    st.tuples(st.just("del"), idents),
    st.tuples(st.just("get"), idents, st.booleans()),
)


class MemoriesVsModel(EngineHarness, RuleBasedStateMachine):
    ENGINE_OPTIONS = {"flush_max_records": 5, "wal_segment_bytes": 4096}

    def __init__(self) -> None:
        super().__init__()
        self.start_engine("memd-mem-model-")
        self.model = Model(self.clock)

    def opened(self) -> None:
        self.engine.memories.history_versions = KEEP
        self.engine.memories.history_max_age_ms = MAX_AGE_MS

    def _run(self, op: tuple[Any, ...]) -> tuple[Any, Any]:
        mem = self.engine.memories
        if op[0] == "put":
            _, ident, value, ttl = op
            return mem.put(*ident, value, ttl), self.model.put(ident, value, ttl)
        if op[0] == "del":
            return mem.delete(*op[1]), self.model.delete(op[1])
        _, ident, refresh = op
        return item_tuple(mem.get(*ident, refresh_ttl=refresh)), version_tuple(ident, self.model.get(ident, refresh))

    @rule(op=ops)
    def command(self, op: tuple[Any, ...]) -> None:
        got, want = self.portal.call(lambda: self._run(op))
        assert got == want, op

    @rule(batch=st.lists(ops, min_size=2, max_size=5))
    def transaction(self, batch: list[tuple[Any, ...]]) -> None:
        def run() -> list[tuple[Any, Any]]:
            with self.engine.batch():
                return [self._run(op) for op in batch]
        for (got, want), op in zip(self.portal.call(run), batch, strict=True):
            assert got == want, op

    @rule(puts=st.lists(st.tuples(idents, values, ttls), min_size=1, max_size=6))
    def put_run(self, puts: list[tuple[Any, ...]]) -> None:
        """A pipelined run of MEM.PUTs (Memories.put_many): each as if put alone, in turn."""
        got = self.portal.call(lambda: self.engine.memories.put_many(
            [(*ident, value, ttl, ()) for ident, value, ttl in puts]))
        assert got == [self.model.put(ident, value, ttl) for ident, value, ttl in puts]

    @rule()
    def flush(self) -> None:
        self.portal.call(self.engine.flush)

    @rule(ms=st.sampled_from([1, 250, 1000, 3000]))
    def advance_clock(self, ms: int) -> None:
        self.clock.now += ms / 1000

    @precondition(lambda self: self.restarts < 3)
    @rule(crash=st.booleans())
    def restart(self, crash: bool) -> None:
        self.reopen(crash)

    @invariant()
    def same_state(self) -> None:
        mem = self.engine.memories
        model = self.model
        for ident in ((ns, k) for ns in NAMESPACES for k in KEYS):
            got = self.portal.call(lambda: item_tuple(mem.get(*ident)))  # noqa: B023 - called at once
            assert got == version_tuple(ident, model.live(ident)), ident
        self.portal.call(self.engine.flush)  # searches and history read SQLite (commands flush first)
        assert not mem.pending("")
        # the contentless index must have been kept exact (a wrong 'delete' corrupts it silently)
        self.portal.call(self.engine.store.execute, "INSERT INTO mem_fts (mem_fts) VALUES ('integrity-check')")
        live = [(ident, v) for ident in sorted(model.slots) if (v := model.live(ident)) is not None]
        for ident in model.slots:
            got_h = [(h.version, h.value, h.created_at, h.updated_at, h.superseded_at, h.deleted)
                     for h in mem.history(*ident)]
            assert got_h == model.history(ident), ident
        for prefix in ("", "a", "a.b", "c"):
            got_s = [item_tuple(i) for i in self.portal.call(mem.search, prefix, None, [], 100, 0)]
            under = [(i, v) for i, v in live if not prefix or i[0] == prefix or i[0].startswith(prefix + ".")]
            want_s = [version_tuple(i, v) for i, v in sorted(under, key=lambda p: (-p[1].updated, p[0]))]
            assert got_s == want_s, prefix
            got_ns = self.portal.call(mem.namespaces, prefix)
            assert got_ns == sorted({i[0] for i, _ in under}), prefix
        for word in WORDS:
            for prefix in ("", "a", "a.b"):
                got_q = {(i.ns, i.key) for i in self.portal.call(mem.search, prefix, word, [], 100, 0)}
                assert got_q == {i for i, v in live if word in json.loads(v.value)["text"].split()
                                 and (not prefix or i[0] == prefix or i[0].startswith(prefix + "."))}, word
        filtered = self.portal.call(mem.search, "", None, parse_filter({"n": {"$gte": 2}}), 100, 0)
        got_f = {(i.ns, i.key) for i in filtered}
        assert got_f == {i for i, v in live if json.loads(v.value)["n"] >= 2}


TestMemoriesVsModel = MemoriesVsModel.TestCase
TestMemoriesVsModel.settings = settings(max_examples=40, stateful_step_count=25, deadline=None,
                                        suppress_health_check=[HealthCheck.too_slow])
