"""MemdStore(index=...) against LangGraph's InMemoryStore(index=...): semantic search, differentially.

Seeded random sequences of BaseStore operations (puts with the configured fields, with
``index=False`` and with ``index=[paths]``, deletes, gets, searches with and without a
query, with filters, limits and offsets, namespace listings) run through ``batch`` and
``abatch`` on both stores with the same deterministic embedding (words hashed into 64
dimensions). Results must agree: the same items in the same order, scores within 1e-5.

InMemoryStore computes cosine similarity only; for ``l2`` and ``inner_product`` the
reference's similarity function is replaced by PostgresStore's formulas (minus the
euclidean distance, the dot product), the scale MemdStore promises for those.

The reference departs from InMemoryStore exactly where MemdStore documents a difference
(MemdStore's docstring, docs/memory.md):

- a put replaces all of an item's vectors (InMemoryStore keeps those of paths the new
  put did not embed): :class:`Reference` drops them on every put;
- ``index=["$"]`` on a put embeds the whole value, as ``fields=["$"]`` does (LangGraph's
  stores tokenize a put's paths, ``$`` included, into a field named "$" that no value has,
  and embed nothing): the reference keeps ``$`` whole there too;
- a semantic search returns only embedded items (InMemoryStore pads a short page with
  unembedded ones, score None): those are left out of the reference's answer;
- items with equal scores (within 1e-5) may come in another order: compared as sets.

The generated texts are distinct within a batch: InMemoryStore raises when one batch
embeds the same text twice (it embeds each distinct text once, then expects one
embedding per occurrence).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pytest
from langgraph.store import memory as inmemory
from langgraph.store.base import (
    GetOp,
    Item,
    ListNamespacesOp,
    MatchCondition,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    tokenize_path,
)
from langgraph.store.memory import InMemoryStore

from memd.client import SyncClient
from memd.integrations.langgraph import MemdIndexError, MemdStore
from tests.integration.daemon import Daemon

pytestmark = pytest.mark.timeout(120)

DIMS = 64
TOLERANCE = 1e-5


def embed_text(text: str) -> list[float]:
    """Words (and one constant token, so that no text embeds to zero) hashed into DIMS
    dimensions, normalized, then scaled by 1 to 3 (so that inner product is not cosine)."""
    words = [*re.findall(r"\w+", text.lower()), "\0"]
    v = np.zeros(DIMS)
    for w in words:
        h = hashlib.blake2b(w.encode(), digest_size=8).digest()
        v[h[0] % DIMS] += 1.0 if h[1] % 2 else -1.0
        v[h[2] % DIMS] += 0.5
    if not v.any():
        v[0] = 1.0
    return (v / np.linalg.norm(v) * (1 + len(words) % 3)).tolist()


class CountingEmbeddings:
    """The embedding function both stores get (a plain function, as LangGraph allows), counting calls."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls.append(list(texts))
        return [embed_text(t) for t in texts]


def postgres_scores(distance: str) -> Callable[[list[float], list[list[float]]], list[float]]:
    """PostgresStore's score formulas, in InMemoryStore's similarity function's shape."""
    def score(x: list[float], ys: list[list[float]]) -> list[float]:
        if not ys:
            return []
        q, m = np.array(x), np.array(ys)
        if distance == "l2":
            return (-np.linalg.norm(m - q, axis=1)).tolist()
        return (m @ q).tolist()
    return score


class Reference(InMemoryStore):
    """InMemoryStore with MemdStore's documented semantics where they differ (module docstring)."""

    def _extract_texts(self, put_ops: dict[tuple[tuple[str, ...], str], PutOp]) -> Any:
        for (ns, key) in put_ops:  # a put replaces all of the item's vectors
            self._vectors[ns].pop(key, None)
        return super()._extract_texts(put_ops)

    def _handle_list_namespaces(self, op: ListNamespacesOp) -> list[tuple[str, ...]]:
        for ns in [ns for ns, items in self._data.items() if not items]:  # as in test_langgraph_store
            del self._data[ns]
        return super()._handle_list_namespaces(op)


# ---- random operations ------------------------------------------------------------------------

NAMESPACES = [("a",), ("a", "b"), ("a", "c"), ("b",), ("b", "x", "y")]
PREFIXES = [(), ("a",), ("a", "b"), ("b",)]
KEYS = ["k0", "k1", "k2", "k3"]
WORDS = ["ramen", "sushi", "cat", "dog", "python", "rust", "rain", "sun", "tea", "coffee", "blue", "green"]
QUERIES = ["ramen", "cat dog", "python rust tea", "sun rain", "green tea please", "nothing matches zz"]
FILTERS: list[dict[str, Any] | None] = [
    None, None, {"kind": "fact"}, {"kind": {"$ne": "note"}}, {"n": {"$gte": 2}}, {"n": {"$lt": 3}},
    {"n": {"$gt": 0, "$lte": 4}}, {"kind": {"$eq": "pref"}, "n": {"$ne": 1}},
]
PUT_INDEX: list[Any] = [None, None, None, False, ["text"], ["items[*].text"], ["$"], ["text", "items[0].text"]]
ALL = 1000


class Generator:
    """Seeded operations; every text is distinct within the run (see the module docstring)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.serial = 0

    def text(self) -> str:
        self.serial += 1
        return " ".join([*self.rng.sample(WORDS, self.rng.randint(1, 4)), f"t{self.serial}"])

    def value(self) -> dict[str, Any]:
        value: dict[str, Any] = {"kind": self.rng.choice(["fact", "pref", "note"]), "n": self.rng.randint(0, 5)}
        if self.rng.random() < 0.8:
            value["text"] = self.text()
        if self.rng.random() < 0.4:
            value["items"] = [{"text": self.text()} for _ in range(self.rng.randint(0, 3))]
        return value

    def search(self) -> SearchOp:
        query = self.rng.choice([None, *QUERIES, *QUERIES])
        return SearchOp(self.rng.choice(PREFIXES), filter=self.rng.choice(FILTERS),
                        limit=self.rng.choice([ALL, ALL, 1, 2, 3, 5]), offset=self.rng.choice([0, 0, 0, 1, 2]),
                        query=query)

    def op(self) -> Op:
        ns, key = self.rng.choice(NAMESPACES), self.rng.choice(KEYS)
        kind = self.rng.choices(["put", "delete", "get", "search", "list"], [7, 1, 2, 5, 1])[0]
        if kind == "put":
            return PutOp(ns, key, self.value(), index=self.rng.choice(PUT_INDEX))
        if kind == "delete":
            return PutOp(ns, key, None)
        if kind == "get":
            return GetOp(ns, key)
        if kind == "list":
            prefix = self.rng.choice([None, ("a",), ("b", "*")])
            return ListNamespacesOp((MatchCondition("prefix", prefix),) if prefix else (),
                                    max_depth=self.rng.choice([None, 1, 2]))
        return self.search()

    def batches(self, n: int) -> list[list[Op]]:
        return [[self.op() for _ in range(self.rng.choice([1, 1, 2, 3, 5]))] for _ in range(n)]


# ---- comparison -------------------------------------------------------------------------------

def identity(item: Item) -> tuple[tuple[str, ...], str, str]:
    return item.namespace, item.key, json.dumps(item.value, sort_keys=True)


def check_ranked(op: SearchOp, got: list[SearchItem], want: list[SearchItem], full: list[SearchItem]) -> None:
    """Same items, same order, scores within TOLERANCE; items whose scores tie may swap, also
    across the page's edge (``full``: the reference's unpaged answer)."""
    want = [w for w in want if w.score is not None]  # InMemoryStore's unembedded padding
    context = (op, [(identity(g), g.score) for g in got], [(identity(w), w.score) for w in want])
    assert len(got) == len(want), context
    for g, w in zip(got, want, strict=True):
        assert g.score is not None and abs(g.score - w.score) <= TOLERANCE, context
    for i, g in enumerate(got):
        if identity(g) != identity(want[i]):  # only among tied scores
            tied = {identity(w) for w in full if w.score is not None and abs(w.score - g.score) <= TOLERANCE}
            assert identity(g) in tied, context
    assert len({identity(g) for g in got}) == len(got), context


def unpaged(ops: list[Op]) -> list[Op]:
    """The unpaged twin of every query search in ``ops`` (to judge ties at a page's edge)."""
    return [op._replace(limit=ALL, offset=0) for op in ops if isinstance(op, SearchOp) and op.query]


def check_batch(ops: list[Op], got: list[Result], want: list[Result], full: list[Result]) -> None:
    assert len(got) == len(want) == len(ops)
    twins = iter(full)
    for op, g, w in zip(ops, got, want, strict=True):
        if isinstance(op, GetOp):
            assert (g and identity(g)) == (w and identity(w)), op
        elif isinstance(op, SearchOp) and op.query:
            check_ranked(op, g, w, next(twins))
        elif isinstance(op, SearchOp):  # no query: memd lists newest first, InMemoryStore by insertion
            assert all(i.score is None for i in g)
            if op.limit == ALL and op.offset == 0:
                assert sorted(map(identity, g)) == sorted(map(identity, w)), op
            else:
                assert len(g) == len(w), op
        elif isinstance(op, ListNamespacesOp):
            assert g == w, op
        else:
            assert g is None and w is None


FINAL: list[Op] = [*(SearchOp((), query=q, limit=ALL) for q in QUERIES), SearchOp((), limit=ALL)]


# ---- the tests --------------------------------------------------------------------------------

@pytest.fixture
def daemon() -> Iterator[Daemon]:
    d = Daemon(fsync="no").start()
    yield d
    d.cleanup()


def index_config(embed: Any, distance: str, fields: list[str] | None) -> dict[str, Any]:
    config: dict[str, Any] = {"dims": DIMS, "embed": embed, "distance_type": distance}
    if fields is not None:
        config["fields"] = fields
    return config


def whole_value_root(path: str) -> Any:
    """LangGraph's tokenize_path, but ``$`` stays the whole value in a put's ``index`` list too."""
    return path if path == "$" else tokenize_path(path)


def reference_for(monkeypatch: pytest.MonkeyPatch, embed: Any, distance: str,
                  fields: list[str] | None) -> Reference:
    monkeypatch.setattr(inmemory, "tokenize_path", whole_value_root)
    if distance != "cosine":
        monkeypatch.setattr(inmemory, "_cosine_similarity", postgres_scores(distance))
    return Reference(index=index_config(embed, "cosine", fields))  # type: ignore[arg-type]


CASES = [(1, "cosine", None), (2, "cosine", ["text", "items[*].text"]), (3, "l2", ["text", "items[*].text"]),
         (4, "inner_product", ["text"])]


@pytest.mark.parametrize(("seed", "distance", "fields"), CASES)
def test_differential_sync(daemon: Daemon, monkeypatch: pytest.MonkeyPatch, seed: int, distance: str,
                           fields: list[str] | None) -> None:
    embed = CountingEmbeddings()
    reference = reference_for(monkeypatch, embed, distance, fields)
    store = MemdStore(daemon.socket, index=index_config(embed, distance, fields))  # type: ignore[arg-type]
    try:
        for ops in [*Generator(seed).batches(70), FINAL]:
            full = reference.batch(unpaged(ops))
            check_batch(ops, store.batch(ops), reference.batch(ops), full)
    finally:
        store.close()


@pytest.mark.parametrize(("seed", "distance", "fields"), [(5, "cosine", ["text", "items[*].text"]),
                                                          (6, "l2", None)])
@pytest.mark.asyncio
async def test_differential_async(daemon: Daemon, monkeypatch: pytest.MonkeyPatch, seed: int, distance: str,
                                  fields: list[str] | None) -> None:
    embed = CountingEmbeddings()
    reference = reference_for(monkeypatch, embed, distance, fields)
    store = MemdStore(daemon.socket, index=index_config(embed, distance, fields))  # type: ignore[arg-type]
    try:
        async with asyncio.timeout(100):
            for ops in [*Generator(seed).batches(70), FINAL]:
                full = await reference.abatch(unpaged(ops))
                check_batch(ops, await store.abatch(ops), await reference.abatch(ops), full)
    finally:
        await store.aclose()
        store.close()


# ---- MemdStore's own contract ---------------------------------------------------------------------

def test_batch_embeds_once_and_labels_like_langgraph(daemon: Daemon) -> None:
    embed = CountingEmbeddings()
    store = MemdStore(daemon.socket, index={"dims": DIMS, "embed": embed, "fields": ["text", "items[*].text"]})
    try:
        store.batch([PutOp(("u",), "a", {"text": "ramen t1", "items": [{"text": "tea t2"}, {"text": "cat t3"}]}),
                     PutOp(("u",), "b", {"text": "ramen t1"}),  # the same text: embedded once
                     PutOp(("u",), "c", {"text": "dog t4", "items": [{"text": "sun t5"}]}, index=False),
                     PutOp(("u",), "d", {"text": "rain t6", "items": [{"text": "sun t7"}]}, index=["items[0].text"]),
                     SearchOp(("u",), query="ramen"), SearchOp(("u",), query="ramen", limit=1),
                     SearchOp(("u",), query="sun")])
        assert embed.calls == [["ramen t1", "tea t2", "cat t3", "sun t7"], ["ramen"], ["sun"]]
        with SyncClient(daemon.socket) as c:
            [info] = c.index_list()
        # a: text, items[*].text.0, items[*].text.1; b: text; c: none; d: items[0].text
        assert (info.prefix, info.dims, info.distance, info.fields) == ((), DIMS, "cosine", ("text", "items[*].text"))
        assert (info.vectors, info.memories) == (5, 3)
        hits = store.search(("u",), query="ramen t1")
        assert [h.key for h in hits][:2] in (["a", "b"], ["b", "a"]) and hits[0].score == pytest.approx(1.0)
        assert "c" not in {h.key for h in store.search(("u",), query="dog t4")}  # index=False: no vector
        assert {h.key for h in store.search(("u",), query="sun t7")} == {"a", "b", "d"}
    finally:
        store.close()


@pytest.mark.asyncio
async def test_async_batches_use_the_async_embeddings(daemon: Daemon) -> None:
    calls: list[list[str]] = []

    async def aembed(texts: Sequence[str]) -> list[list[float]]:  # async only: sync calls would fail
        calls.append(list(texts))
        return [embed_text(t) for t in texts]

    store = MemdStore(daemon.socket, index={"dims": DIMS, "embed": aembed, "fields": ["text"]})
    try:
        async with asyncio.timeout(30):
            await store.abatch([PutOp(("v",), "a", {"text": "green tea"}), PutOp(("v",), "b", {"text": "coffee"})])
            results = await store.abatch([SearchOp(("v",), query="tea"), SearchOp(("v",), query="coffee"),
                                          SearchOp(("v",), query="tea", offset=1)])
        assert calls[0] == ["green tea", "coffee"] and sorted(calls[1:]) == [["coffee"], ["tea"]]
        assert [[i.key for i in r] for r in results] == [["a", "b"], ["b", "a"], ["b"]]
    finally:
        await store.aclose()
        store.close()


def test_an_index_of_another_spec_is_a_clear_error(daemon: Daemon) -> None:
    first = MemdStore(daemon.socket, index={"dims": DIMS, "embed": CountingEmbeddings()})
    first.put(("w",), "k", {"text": "held"})  # the index now holds a vector
    other = MemdStore(daemon.socket, index={"dims": 8, "embed": lambda texts: [[1.0] * 8 for _ in texts]})
    l2 = MemdStore(daemon.socket, index={"dims": DIMS, "embed": CountingEmbeddings(), "distance_type": "l2"})
    try:
        with pytest.raises(MemdIndexError, match="dims 8.*holds 1 vectors of DIMS 64.*index_drop"):
            other.get(("w",), "k")  # the first use declares the index
        with pytest.raises(MemdIndexError, match="distance l2"):
            l2.search(("w",), query="held")
        assert first.search(("w",), query="held")[0].key == "k"  # the existing index is untouched
        with pytest.raises(ValueError, match="distance_type"):
            MemdStore(daemon.socket, index={"dims": 4, "embed": CountingEmbeddings(), "distance_type": "hamming"})
        with pytest.raises(ValueError, match="dims"):
            MemdStore(daemon.socket, index={"embed": CountingEmbeddings()})  # type: ignore[typeddict-item]
    finally:
        for s in (first, other, l2):
            s.close()
    with SyncClient(daemon.socket) as c:  # an index under a prefix: the store's index on "" would nest
        assert c.index_drop(()) is True
        c.index_create(("w",), dims=DIMS)
    nested = MemdStore(daemon.socket, index={"dims": DIMS, "embed": CountingEmbeddings()})
    try:
        with pytest.raises(MemdIndexError, match="nests with the index on 'w'"):
            nested.put(("w",), "k", {"text": "x"})
    finally:
        nested.close()


def test_embed_goes_through_langgraphs_ensure_embeddings() -> None:
    """A provider string is LangGraph's to resolve (here without langchain installed: its own error)."""
    with pytest.raises(ValueError, match="Could not load embeddings from string 'openai:text-embedding-3-small'"):
        MemdStore("/nonexistent.sock", index={"dims": 4, "embed": "openai:text-embedding-3-small"})


def test_zero_and_wrong_length_embeddings(daemon: Daemon) -> None:
    def embed(texts: Sequence[str]) -> list[list[float]]:
        return [[0.0] * DIMS if t == "void" else [1.0] * (DIMS - (t == "short")) for t in texts]

    store = MemdStore(daemon.socket, index={"dims": DIMS, "embed": embed, "fields": ["text"]})
    try:
        store.put(("z",), "void", {"text": "void"})  # cosine of a zero vector: not stored, the item is
        store.put(("z",), "one", {"text": "one"})
        assert store.get(("z",), "void").value == {"text": "void"}
        assert [h.key for h in store.search(("z",), query="one")] == ["one"]
        assert store.search(("z",), query="void") == []  # a zero query is similar to nothing
        with pytest.raises(ValueError, match="63 dimensions; index dims is 64"):
            store.put(("z",), "short", {"text": "short"})
        assert store.get(("z",), "short") is None
    finally:
        store.close()
