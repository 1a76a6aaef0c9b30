"""MemdStore, LangGraph's BaseStore on memd, against a real daemon.

- A differential test: seeded random batches of puts (overwrites, deletes),
  gets, filtered searches without query and namespace listings run on
  MemdStore and on LangGraph's InMemoryStore, through ``batch`` and ``abatch``.
- A real StateGraph that writes a memory, survives a daemon restart, and reads it back.
- TTL in minutes (LangGraph) sent as seconds (memd), and ``refresh_ttl``.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any, TypedDict

import pytest
import redis
import pytest_asyncio
from langgraph.config import get_store
from langgraph.graph import END, START, StateGraph
from langgraph.store.base import (
    BaseStore,
    GetOp,
    InvalidNamespaceError,
    Item,
    ListNamespacesOp,
    MatchCondition,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
)
from langgraph.store.memory import InMemoryStore

from memd.client import SyncClient
from memd.integrations.langgraph import MemdStore, fts_query
from tests.integration.daemon import ROOT, Daemon

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    d = Daemon(fsync="everysec").start()
    yield d
    d.cleanup()


@pytest.fixture
def store(daemon: Daemon) -> Iterator[MemdStore]:
    s = MemdStore(daemon.socket)
    yield s
    s.close()


@pytest_asyncio.fixture
async def astore(daemon: Daemon) -> AsyncIterator[MemdStore]:
    s = MemdStore(daemon.socket)
    yield s
    await s.aclose()
    s.close()


# ---- differential: MemdStore vs InMemoryStore ----------------------------------------------

# Labels without characters below '.' (see test_namespaces_sort_label_wise for those).
NAMESPACES = [("a",), ("a", "b"), ("a", "b", "c"), ("a", "c"), ("ab",), ("ab", "c"), ("b", "a"), ("b", "c", "a")]
SEARCH_PREFIXES = [(), ("a",), ("a", "b"), ("ab",), ("b",), ("b", "c")]
PREFIX_PATTERNS = [None, ("a",), ("a", "*"), ("*", "c"), ("b",), ("a", "b"), ("*",)]
SUFFIX_PATTERNS = [None, ("c",), ("a",), ("*", "c"), ("b", "*"), ("a", "b", "c")]
KEYS = ["k0", "k1", "k2"]
# Comparisons only on the always-present integer "n" (InMemoryStore calls float() on the field),
# no booleans (memd compares as JSONB, InMemoryStore as Python), no nested objects (memd compares
# them whole, InMemoryStore key by key).
FILTERS: list[dict[str, Any]] = [
    {"kind": "fact"}, {"kind": {"$eq": "pref"}}, {"kind": {"$ne": "note"}}, {"n": 3}, {"n": {"$gte": 2}},
    {"n": {"$gt": 1, "$lte": 4}}, {"n": {"$lt": 3}}, {"tag": None}, {"tag": "x"}, {"tag": {"$ne": "x"}},
    {"tags": ["x", "y"]}, {"kind": "fact", "n": {"$gte": 1}},
]
ALL = 1000  # the largest MEM.SEARCH LIMIT, more than the data: the whole match set


class Reference(InMemoryStore):
    """InMemoryStore listing only namespaces that hold an item, as memd does.

    InMemoryStore keeps a namespace after its last delete, and even creates
    one on a get of an unknown namespace (its data is a defaultdict).
    """

    def _handle_list_namespaces(self, op: ListNamespacesOp) -> list[tuple[str, ...]]:
        for ns in [ns for ns, items in self._data.items() if not items]:
            del self._data[ns]
        return super()._handle_list_namespaces(op)


def random_value(rng: random.Random) -> dict[str, Any]:
    value: dict[str, Any] = {"kind": rng.choice(["fact", "pref", "note"]), "n": rng.randint(0, 5)}
    if rng.random() < 0.5:
        value["tag"] = rng.choice(["x", "y", None])
    if rng.random() < 0.3:
        value["tags"] = rng.sample(["x", "y", "z"], rng.randint(0, 2))
    if rng.random() < 0.3:
        value["text"] = rng.choice(["I like ramen", "cats are nice", "ünïcode"])
    return value


def random_list_op(rng: random.Random) -> ListNamespacesOp:
    conditions = [MatchCondition(kind, path) for kind, path in
                  [("prefix", rng.choice(PREFIX_PATTERNS)), ("suffix", rng.choice(SUFFIX_PATTERNS))] if path]
    return ListNamespacesOp(tuple(conditions), max_depth=rng.choice([None, None, 1, 2, 3]),
                            limit=rng.choice([1, 2, 3, 100]), offset=rng.choice([0, 0, 1, 2]))


def random_ops(rng: random.Random) -> list[Op]:
    """One op; a paged search comes with its unpaged twin so that the page can be checked against it."""
    ns, key = rng.choice(NAMESPACES), rng.choice(KEYS)
    kind = rng.choices(["put", "delete", "get", "search", "page", "list"], [6, 2, 3, 2, 1, 2])[0]
    if kind == "put":
        return [PutOp(ns, key, random_value(rng))]
    if kind == "delete":
        return [PutOp(ns, key, None)]
    if kind == "get":
        return [GetOp(ns, key)]
    if kind == "list":
        return [random_list_op(rng)]
    search = SearchOp(rng.choice(SEARCH_PREFIXES), filter=rng.choice([None, None, *FILTERS]), limit=ALL)
    if kind == "search":
        return [search]
    return [search._replace(limit=rng.randint(0, 4), offset=rng.randint(0, 4)), search]


def random_batches(seed: int, n: int = 60) -> list[list[Op]]:
    rng = random.Random(seed)
    return [[op for _ in range(rng.choice([1, 1, 2, 4])) for op in random_ops(rng)] for _ in range(n)]


def identity(item: Item) -> tuple[tuple[str, ...], str, str]:
    return item.namespace, item.key, json.dumps(item.value, sort_keys=True)


def check_search(op: SearchOp, got: list[SearchItem], want: list[SearchItem]) -> None:
    """Same items; memd's own order is newest update first; a page the same size as the reference's."""
    assert all(isinstance(i, SearchItem) and i.score is None for i in got)
    updated = [i.updated_at for i in got]
    assert updated == sorted(updated, reverse=True)
    if op.limit == ALL:
        assert sorted(map(identity, got)) == sorted(map(identity, want))
    else:
        assert len(got) == len(want)


def check_batch(ops: list[Op], got: list[Result], want: list[Result]) -> None:
    assert len(got) == len(ops)
    for i, (op, g, w) in enumerate(zip(ops, got, want, strict=True)):
        if isinstance(op, GetOp):
            assert (g and identity(g)) == (w and identity(w)), op
        elif isinstance(op, SearchOp):
            check_search(op, g, w)
            if op.limit != ALL:  # the page is a slice of memd's full, ordered result (the next op)
                assert [identity(x) for x in g] == [identity(x) for x in got[i + 1][op.offset:][:op.limit]]
        elif isinstance(op, ListNamespacesOp):
            assert g == w, op
        else:
            assert g is None and w is None


FINAL = [SearchOp((), limit=ALL), ListNamespacesOp(limit=1000)]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_differential_sync(store: MemdStore, seed: int) -> None:
    reference = Reference()
    for ops in [*random_batches(seed), FINAL]:
        check_batch(ops, store.batch(ops), reference.batch(ops))


@pytest.mark.parametrize("seed", [4, 5, 6])
@pytest.mark.asyncio
async def test_differential_async(astore: MemdStore, seed: int) -> None:
    reference = Reference()
    async with asyncio.timeout(60):
        for ops in [*random_batches(seed), FINAL]:
            check_batch(ops, await astore.abatch(ops), await reference.abatch(ops))


def test_namespaces_sort_label_wise(store: MemdStore) -> None:
    """LangGraph sorts namespaces as tuples; a label with a character below '.' ("user-42")
    must not move its namespace before a shorter label's ("user")."""
    for ns in [("user", "x"), ("user-42",), ("user two",)]:
        store.put(ns, "k", {"v": 1})
    want = sorted([("user", "x"), ("user-42",), ("user two",)])
    assert store.list_namespaces() == want
    assert store.list_namespaces(limit=1, offset=1) == want[1:2]


def test_batch_reads_see_the_state_before_its_puts(daemon: Daemon, store: MemdStore) -> None:
    ns = ("batch",)
    store.put(ns, "k", {"v": 0})
    contradictory = (MatchCondition("prefix", ("a",)), MatchCondition("prefix", ("b",)))
    ops: list[Op] = [PutOp(ns, "k", {"v": 1}), GetOp(ns, "k"), PutOp(ns, "k", {"v": 2}),
                     PutOp(ns, "new", {"v": 3}), SearchOp(ns), ListNamespacesOp(match_conditions=contradictory)]
    results = store.batch(ops)
    assert results[0] is None and results[2] is None and results[3] is None
    assert results[1].value == {"v": 0} and [i.key for i in results[4]] == ["k"]
    assert results[5] == []  # contradictory prefixes: nothing can match
    assert store.get(ns, "k").value == {"v": 2}  # the last put of a key wins
    with SyncClient(daemon.socket) as c:
        assert c.get(ns, "k").version == 2  # the overwritten put never ran


def test_natural_language_query(store: MemdStore) -> None:
    store.put(("users", "1"), "a", {"text": "The user likes spicy ramen"})
    store.put(("users", "1"), "b", {"text": "The user's cat is called Tom"})
    store.put(("users", "2"), "c", {"text": "Ramen preferences: none", "kind": "pref"})
    hits = store.search(("users",), query='What does the user prefer to eat? (ramen "bowls") AND NOT NEAR(')
    assert {h.key for h in hits} == {"a", "b", "c"}  # OR of words: "the"/"user" match b too
    assert all(h.score > 0 for h in hits)
    assert store.search(("users",), query="ramen preference", filter={"kind": "pref"})[0].key == "c"
    assert [h.key for h in store.search(("users", "1"), query="cats")] == ["b"]
    assert fts_query("  ") is None and fts_query('say "hi"') == '"say" OR """hi"""'
    assert len(store.search(("users",), query="   ")) == 3  # no word: no QUERY, every item


def test_invalid_namespace_is_refused_before_sending(store: MemdStore) -> None:
    with pytest.raises(InvalidNamespaceError):
        store.batch([GetOp(("a.b",), "k")])  # would address ("a", "b") on the wire
    with pytest.raises(InvalidNamespaceError):
        store.put(("ok", ""), "k", {})


def test_memd_does_not_import_langgraph() -> None:
    code = "import sys, memd, memd.client; sys.exit(any(m.split('.')[0] == 'langgraph' for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=30).returncode == 0


# ---- a real graph across a daemon restart ------------------------------------------------------

class State(TypedDict):
    user: str
    fact: str
    recalled: str
    found: list[str]


def remember(state: State, *, store: BaseStore) -> dict[str, Any]:
    if state["fact"]:
        store.put(("users", state["user"], "facts"), "favourite", {"text": state["fact"]})
    return {}


def recall(state: State) -> dict[str, Any]:
    store = get_store()
    item = store.get(("users", state["user"], "facts"), "favourite")
    hits = store.search(("users", state["user"]), query="favourite food")
    return {"recalled": item.value["text"] if item else "", "found": [h.value["text"] for h in hits]}


async def aremember(state: State, *, store: BaseStore) -> dict[str, Any]:
    if state["fact"]:
        await store.aput(("users", state["user"], "facts"), "favourite", {"text": state["fact"]})
    return {}


async def arecall(state: State, *, store: BaseStore) -> dict[str, Any]:
    item = await store.aget(("users", state["user"], "facts"), "favourite")
    hits = await store.asearch(("users", state["user"]), query="favourite food")
    return {"recalled": item.value["text"] if item else "", "found": [h.value["text"] for h in hits]}


def build_graph(store: MemdStore, *, asynchronous: bool) -> Any:
    g = StateGraph(State)
    g.add_node("remember", aremember if asynchronous else remember)
    g.add_node("recall", arecall if asynchronous else recall)
    g.add_edge(START, "remember")
    g.add_edge("remember", "recall")
    g.add_edge("recall", END)
    return g.compile(store=store)


def restart(d: Daemon) -> None:
    """Clean shutdown (SIGTERM) and a new process on the same data directory."""
    assert d.stop(signal.SIGTERM, timeout=20) == 0, d.log()
    d.start()


FACT = "my favourite food is ramen"


def test_graph_memory_survives_restart(daemon: Daemon, store: MemdStore) -> None:
    graph = build_graph(store, asynchronous=False)
    first = graph.invoke({"user": "u1", "fact": FACT, "recalled": "", "found": []})
    assert first["recalled"] == FACT and first["found"] == [FACT]
    restart(daemon)
    second = graph.invoke({"user": "u1", "fact": "", "recalled": "", "found": []})  # the store reconnects
    assert second["recalled"] == FACT and second["found"] == [FACT]
    fresh = MemdStore(daemon.socket)  # as a new process would
    try:
        assert build_graph(fresh, asynchronous=False).invoke(
            {"user": "u1", "fact": "", "recalled": "", "found": []})["recalled"] == FACT
    finally:
        fresh.close()


@pytest.mark.asyncio
async def test_async_graph_memory_survives_restart(daemon: Daemon, astore: MemdStore) -> None:
    graph = build_graph(astore, asynchronous=True)
    async with asyncio.timeout(60):
        first = await graph.ainvoke({"user": "u2", "fact": FACT, "recalled": "", "found": []})
        assert first["recalled"] == FACT and first["found"] == [FACT]
        await asyncio.to_thread(restart, daemon)
        second = await graph.ainvoke({"user": "u2", "fact": "", "recalled": "", "found": []})
        assert second["recalled"] == FACT and second["found"] == [FACT]


# ---- TTL: minutes on LangGraph's side, seconds on memd's --------------------------------------

def lifetime(c: SyncClient, ns: tuple[str, ...], key: str) -> timedelta | None:
    """expires_at - updated_at, read without refreshing."""
    m = c.get(ns, key)
    assert m is not None
    return None if m.expires_at is None else m.expires_at - m.updated_at


def close_to(delta: timedelta | None, seconds: float) -> bool:
    return delta is not None and abs(delta.total_seconds() - seconds) < 1


def test_ttl_minutes_become_seconds(daemon: Daemon) -> None:
    ns = ("ttl",)
    store = MemdStore(daemon.socket, ttl={"default_ttl": 2, "refresh_on_read": False})
    try:
        with SyncClient(daemon.socket) as c:
            store.put(ns, "default", {"v": 1})
            store.put(ns, "half", {"v": 1}, ttl=0.5)
            store.put(ns, "forever", {"v": 1}, ttl=None)
            assert close_to(lifetime(c, ns, "default"), 120)
            assert close_to(lifetime(c, ns, "half"), 30)
            assert lifetime(c, ns, "forever") is None

            store.put(ns, "short", {"v": 1}, ttl=0.005)  # 0.3 s
            time.sleep(0.6)
            assert store.get(ns, "short") is None
            assert "short" not in {i.key for i in store.search(ns)}
    finally:
        store.close()


def test_refresh_ttl(daemon: Daemon) -> None:
    ns = ("refresh",)
    lazy = MemdStore(daemon.socket, ttl={"refresh_on_read": False})
    eager = MemdStore(daemon.socket, ttl={"default_ttl": 1})  # refresh_on_read defaults to True
    try:
        with SyncClient(daemon.socket) as c:
            eager.put(ns, "k", {"v": 1})
            put_expiry = c.get(ns, "k").expires_at
            assert close_to(lifetime(c, ns, "k"), 60)
            time.sleep(0.3)
            assert lazy.get(ns, "k") is not None and lazy.search(ns)
            assert c.get(ns, "k").expires_at == put_expiry  # refresh_on_read=False: untouched

            assert lazy.get(ns, "k", refresh_ttl=True) is not None
            by_get = c.get(ns, "k").expires_at
            assert by_get >= put_expiry + timedelta(seconds=0.25)
            time.sleep(0.3)
            assert eager.search(ns)  # the default refresh_on_read
            by_search = c.get(ns, "k").expires_at
            assert by_search >= by_get + timedelta(seconds=0.25)
            time.sleep(0.3)
            assert eager.get(ns, "k") is not None
            assert c.get(ns, "k").expires_at >= by_search + timedelta(seconds=0.25)
            assert c.get(ns, "k").version == 1  # a refresh is not a new version
    finally:
        lazy.close()
        eager.close()


@pytest.mark.asyncio
async def test_ttl_async(daemon: Daemon) -> None:
    ns = ("attl",)
    store = MemdStore(daemon.socket, ttl={"default_ttl": 0.5})
    try:
        async with asyncio.timeout(20):
            await store.aput(ns, "k", {"v": 1})
            await store.aput(ns, "gone", {"v": 1}, ttl=0.005)
            with SyncClient(daemon.socket) as c:
                assert close_to(lifetime(c, ns, "k"), 30)
            await asyncio.sleep(0.6)
            assert await store.aget(ns, "gone") is None
            assert await store.alist_namespaces(prefix=("attl",)) == [ns]
    finally:
        await store.aclose()
        store.close()


# ---- FILTER with NaN and +/-infinity, as InMemoryStore compares them -------------------------

NONFINITE_FILTERS: list[dict[str, Any]] = [
    {"price": {op: v}} for op in ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte")
    for v in (float("inf"), float("-inf"), float("nan"))
] + [{"price": float("inf")}, {"price": float("nan")}, {"price": {"$gt": float("-inf"), "$lt": 10}},
     {"price": {"$lte": float("inf")}, "kind": "a"}]


def test_nonfinite_filters_match_in_memory_store(daemon: Daemon, store: MemdStore) -> None:
    """json.dumps writes float("inf") as Infinity: the daemon takes it in FILTER and answers what
    InMemoryStore answers (every item holds a number: InMemoryStore calls float() on the field)."""
    reference = InMemoryStore()
    prices = [0, -3, 2.5, 1e308, -1.7976931348623157e308, 10, 9.99, 2**62]
    for i, price in enumerate(prices):
        for s in (store, reference):
            s.put(("shop",), f"k{i}", {"price": price, "kind": "ab"[i % 2]})
    for spec in NONFINITE_FILTERS:
        got = sorted(i.key for i in store.search(("shop",), filter=spec, limit=ALL))
        want = sorted(i.key for i in reference.search(("shop",), filter=spec, limit=ALL))
        assert got == want, spec
    assert len(store.search(("shop",), filter={"price": {"$lt": float("inf")}}, limit=ALL)) == len(prices)
    with SyncClient(daemon.socket) as c:  # what other JSON writers send: 1e400 and -1e400
        assert len(c.execute_command("MEM.SEARCH", "shop", "FILTER", '{"price": {"$lt": 1e400}}')) == len(prices)
        assert c.execute_command("MEM.SEARCH", "shop", "FILTER", '{"price": {"$lt": -1e400}}') == []
        with pytest.raises(redis.ResponseError, match="not valid JSON"):
            c.execute_command("MEM.PUT", "shop", "bad", '{"price": Infinity}')  # values stay strict JSON
