"""Semantic recall (MEM.INDEX, MEM.PUT ... VECTOR, MEM.SEARCH ... VECTOR) against a real daemon, black-box.

Like test_memory_commands: a ``memd serve`` process that never flushes on its
own (so a search that sees a write made just before can only do so through
the read-your-writes flush), spoken to over RESP2 and RESP3 with redis-py's
raw ``execute_command``. Each test declares its indexes under its own random
root label (indexes may not nest, so tests sharing the daemon never collide).
Expected KNN orders and scores are computed here with numpy in float64 from
the float32 vectors sent; hybrid scores from the BM25-only and VECTOR-only
orders the daemon gives, fused by the documented formula
``1/(60 + rank_bm25) + 1/(60 + rank_vector)``. Nothing here depends on how the
in-memory index finds its neighbours (exact scan or ANN): only the wire.
"""

from __future__ import annotations

import json
import os
import struct
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest
import redis

from tests.integration.daemon import NO_AUTOFLUSH, Daemon, short_tmpdir
from tests.integration.test_memory_access import NOBODY, RULES, as_nobody
from tests.integration.test_memory_commands import (  # noqa: F401 - protocol and client are fixtures
    assert_error,
    client,
    protocol,
    start_daemon,
    wait_until,
)

pytestmark = pytest.mark.timeout(60)

RRF_K = 60  # the documented fusion constant (docs/memory.md, memd/store/search.py)
TOL = 1e-5


# ---- daemons and clients (start_daemon, and the protocol/client fixtures, are test_memory_commands') ----

@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    d = start_daemon(NO_AUTOFLUSH)
    try:
        yield d
    finally:
        d.cleanup()


@pytest.fixture
def root() -> str:
    """A namespace label of this test's own: its index and items are this test's only."""
    return "v" + uuid.uuid4().hex[:12]


# ---- helpers -------------------------------------------------------------------------------------

def blob(values: Sequence[float] | np.ndarray) -> bytes:
    """Little-endian float32, as clients send embeddings."""
    return struct.pack(f"<{len(values)}f", *[float(v) for v in values])


def f32(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """What the daemon receives, widened to float64 for the reference computations."""
    return np.frombuffer(blob(values), dtype="<f4").astype(np.float64)


def ok(reply: Any) -> bool:
    return reply in (b"OK", "OK", True)


def create(r: redis.Redis, prefix: str, dims: int, *opts: str) -> None:
    assert ok(r.execute_command("MEM.INDEX", "CREATE", prefix, "DIMS", str(dims), *opts))


def indexes(r: redis.Redis) -> dict[str, dict[str, Any]]:
    out = r.execute_command("MEM.INDEX", "LIST")
    assert isinstance(out, list), out
    items = [json.loads(x) for x in out]
    prefixes = [i["prefix"] for i in items]
    assert prefixes == sorted(prefixes), "LIST is sorted by prefix"
    return {i["prefix"]: i for i in items}


def put(r: redis.Redis, ns: str, key: str, value: Any, vectors: Sequence[tuple[str, bytes]] = (),
        ttl: float | None = None) -> Any:
    args: list[Any] = ["MEM.PUT", ns, key, json.dumps(value)]
    if ttl is not None:
        args += ["TTL", str(ttl)]
    for path, b in vectors:
        args += ["VECTOR", path, b]
    return r.execute_command(*args)


def get(r: redis.Redis, ns: str, key: str, *opts: str) -> dict[str, Any] | None:
    raw = r.execute_command("MEM.GET", ns, key, *opts)
    return None if raw is None else json.loads(raw)


def search(r: redis.Redis, prefix: str, *opts: Any) -> list[dict[str, Any]]:
    out = r.execute_command("MEM.SEARCH", prefix, *opts)
    assert isinstance(out, list), out
    return [json.loads(x) for x in out]


def knn(r: redis.Redis, prefix: str, q: Sequence[float] | np.ndarray, *opts: Any) -> list[dict[str, Any]]:
    return search(r, prefix, "VECTOR", blob(q), *opts)


def hits(items: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(i["namespace"], i["key"]) for i in items]


def flush(r: redis.Redis) -> None:
    assert ok(r.execute_command("MEMD.FLUSH"))


def score(distance: str, q: np.ndarray, vs: Sequence[np.ndarray]) -> float:
    """The documented score of a memory with vectors ``vs`` (its best), in float64."""
    if distance == "cosine":
        return max(float(v @ q / (np.linalg.norm(v) * np.linalg.norm(q))) for v in vs)
    if distance == "ip":
        return max(float(v @ q) for v in vs)
    return max(-float(np.linalg.norm(v - q)) for v in vs)


def expected_knn(distance: str, q: np.ndarray, memories: dict[tuple[str, str], list[np.ndarray]]
                 ) -> list[tuple[tuple[str, str], float]]:
    scored = [(ident, score(distance, q, vs)) for ident, vs in memories.items()]
    return sorted(scored, key=lambda p: (-p[1], p[0]))


def assert_knn(got: list[dict[str, Any]], want: list[tuple[tuple[str, str], float]]) -> None:
    assert hits(got) == [ident for ident, _ in want]
    for item, (ident, s) in zip(got, want):
        assert abs(item["score"] - s) <= TOL, (ident, item["score"], s)


# ---- MEM.INDEX -----------------------------------------------------------------------------------

def test_create_defaults_and_list(client: redis.Redis, root: str) -> None:
    create(client, root, 3)
    spec = indexes(client)[root]
    assert spec == {"prefix": root, "dims": 3, "distance": "cosine", "fields": ["$"], "vectors": 0, "memories": 0,
                    "bytes": spec["bytes"], "ann": False}
    assert isinstance(spec["bytes"], int) and spec["bytes"] >= 0
    # explicit DISTANCE (any case) and FIELDS, on a prefix of two labels
    create(client, f"{root}x.y", 5, "DISTANCE", "IP", "FIELDS", '["text", "items[0].name"]')
    create(client, f"{root}z", 2, "distance", "l2")
    listed = indexes(client)
    assert listed[f"{root}x.y"]["distance"] == "ip" and listed[f"{root}x.y"]["dims"] == 5
    assert listed[f"{root}x.y"]["fields"] == ["text", "items[0].name"]
    assert listed[f"{root}z"]["distance"] == "l2" and listed[f"{root}z"]["fields"] == ["$"]


def test_list_counts_vectors_memories_and_bytes(client: redis.Redis, root: str) -> None:
    dims = 4
    create(client, root, dims)
    assert put(client, f"{root}.a", "one", {"t": 1}, [("$", blob([1, 0, 0, 0]))]) == 1
    assert put(client, f"{root}.a", "two", {"t": 2}, [("$", blob([0, 1, 0, 0])), ("text", blob([0, 0, 1, 0]))]) == 1
    assert put(client, f"{root}.b", "three", {"t": 3}, [("$", blob([0, 0, 0, 1]))]) == 1
    assert put(client, f"{root}.b", "plain", {"t": 4}) == 1  # no vectors: not counted
    spec = indexes(client)[root]  # (read your writes: the listing flushes first)
    assert (spec["vectors"], spec["memories"]) == (4, 3)
    assert spec["bytes"] >= 4 * dims * 4
    assert client.execute_command("MEM.DEL", f"{root}.a", "two") == 1
    spec = indexes(client)[root]
    assert (spec["vectors"], spec["memories"]) == (2, 2)


def test_recreate_same_spec_is_ok_and_fields_may_change(client: redis.Redis, root: str) -> None:
    create(client, root, 2, "DISTANCE", "l2", "FIELDS", '["text"]')
    assert put(client, root, "k", {"text": "x"}, [("text", blob([1, 2]))]) == 1
    create(client, root, 2, "DISTANCE", "l2", "FIELDS", '["text"]')
    create(client, root, 2, "DISTANCE", "l2", "FIELDS", '["summary", "text"]')  # metadata: always allowed
    spec = indexes(client)[root]
    assert spec["fields"] == ["summary", "text"] and spec["vectors"] == 1
    assert_knn(knn(client, root, [1, 2]), [((root, "k"), 0.0)])


def test_indexes_may_not_nest(client: redis.Redis, root: str) -> None:
    create(client, f"{root}.a", 2)
    assert_error(client, "MEM.INDEX", "CREATE", f"{root}.a.b", "DIMS", "2", match=r"nests with the index on")
    assert_error(client, "MEM.INDEX", "CREATE", root, "DIMS", "2", match=r"nests with the index on")
    assert_error(client, "MEM.INDEX", "CREATE", "", "DIMS", "2", match=r"nests with the index on")
    create(client, f"{root}.ab", 2)  # label-wise: 'a' and 'ab' are siblings
    create(client, f"{root}.b.a", 2)
    assert {f"{root}.a", f"{root}.ab", f"{root}.b.a"} <= set(indexes(client))
    assert root not in indexes(client) and f"{root}.a.b" not in indexes(client)


def test_dims_or_distance_change_refused_while_vectors_held(client: redis.Redis, root: str) -> None:
    create(client, root, 3)
    create(client, root, 4, "DISTANCE", "ip")  # empty: replaced
    assert (indexes(client)[root]["dims"], indexes(client)[root]["distance"]) == (4, "ip")
    assert put(client, root, "k", {}, [("$", blob([1, 2, 3, 4]))]) == 1  # buffered, not flushed
    msg = assert_error(client, "MEM.INDEX", "CREATE", root, "DIMS", "5", match=r"MEM\.INDEX DROP it and re-embed")
    assert msg.startswith(f"index '{root}' holds 1 vectors of DIMS 4 DISTANCE ip;"), msg
    assert_error(client, "MEM.INDEX", "CREATE", root, "DIMS", "4", "DISTANCE", "cosine", match=r"holds 1 vectors")
    flush(client)
    assert_error(client, "MEM.INDEX", "CREATE", root, "DIMS", "5", match=r"holds 1 vectors of DIMS 4 DISTANCE ip")
    spec = indexes(client)[root]
    assert (spec["dims"], spec["distance"], spec["vectors"]) == (4, "ip", 1)
    # the memory's vectors gone (a new version without any): the index holds none, so it may change
    assert put(client, root, "k", {}) == 2
    create(client, root, 2, "DISTANCE", "l2")
    assert put(client, root, "k", {}, [("$", blob([3, 4]))]) == 3
    assert_knn(knn(client, root, [0, 0]), [((root, "k"), -5.0)])


def test_dims_change_allowed_once_the_flushed_vectors_are_deleted(client: redis.Redis, root: str) -> None:
    create(client, root, 2)
    assert put(client, root, "k", {}, [("$", blob([1, 2]))]) == 1
    flush(client)
    assert client.execute_command("MEM.DEL", root, "k") == 1  # buffered delete of a flushed vector
    create(client, root, 3)
    assert indexes(client)[root]["dims"] == 3


@pytest.mark.parametrize("args, match", [
    (["CREATE", "{r}", "DIMS", "0"], r"DIMS must be an integer between 1 and 4096"),
    (["CREATE", "{r}", "DIMS", "4097"], r"DIMS must be an integer between 1 and 4096"),
    (["CREATE", "{r}", "DIMS", "-3"], r"DIMS must be an integer between 1 and 4096"),
    (["CREATE", "{r}", "DIMS", "x"], r"DIMS must be an integer"),
    (["CREATE", "{r}", "DIMS", "1.5"], r"DIMS must be an integer"),
    (["CREATE", "{r}"], r"needs DIMS"),
    (["CREATE", "{r}", "DISTANCE", "l2"], r"needs DIMS"),
    (["CREATE", "{r}", "DIMS", "3", "DISTANCE", "hamming"], r"DISTANCE must be one of cosine, ip, l2"),
    (["CREATE", "{r}", "DIMS", "3", "FIELDS", "[]"], r"FIELDS must be a non-empty JSON array"),
    (["CREATE", "{r}", "DIMS", "3", "FIELDS", '"$"'], r"FIELDS must be a non-empty JSON array"),
    (["CREATE", "{r}", "DIMS", "3", "FIELDS", "[1]"], r"FIELDS must be a non-empty JSON array"),
    (["CREATE", "{r}", "DIMS", "3", "FIELDS", '[""]'], r"FIELDS must be a non-empty JSON array"),
    (["CREATE", "{r}", "DIMS", "3", "FIELDS", "[not json"], r"FIELDS"),
    (["CREATE", "{r}..x", "DIMS", "3"], r"index prefix"),
    (["CREATE"], r"MEM\.INDEX takes CREATE"),
    (["DROP"], r"MEM\.INDEX takes CREATE"),
    (["DROP", "{r}", "extra"], r"MEM\.INDEX takes CREATE"),
    (["LIST", "extra"], r"MEM\.INDEX takes CREATE"),
    (["RENAME", "{r}"], r"MEM\.INDEX takes CREATE"),
])
def test_index_argument_errors(client: redis.Redis, root: str, args: list[str], match: str) -> None:
    assert_error(client, "MEM.INDEX", *[a.replace("{r}", root) for a in args], match=match)
    assert root not in indexes(client)


def test_index_arity(client: redis.Redis) -> None:
    assert_error(client, "MEM.INDEX", match=r"wrong number of arguments")


def test_drop_removes_vectors_not_memories(client: redis.Redis, root: str) -> None:
    create(client, root, 2)
    assert put(client, f"{root}.a", "flushed", {"n": 1}, [("$", blob([1, 0]))]) == 1
    flush(client)
    assert put(client, f"{root}.a", "buffered", {"n": 2}, [("$", blob([0, 1]))]) == 1
    assert len(knn(client, root, [1, 1])) == 2
    assert put(client, f"{root}.b", "late", {"n": 3}, [("$", blob([1, 1]))]) == 1  # buffered when dropped
    assert client.execute_command("MEM.INDEX", "DROP", root) == 1
    assert root not in indexes(client)
    assert_error(client, "MEM.SEARCH", root, "VECTOR", blob([1, 0]), match=r"no vector index covers")
    for ns, key, n in ((f"{root}.a", "flushed", 1), (f"{root}.a", "buffered", 2), (f"{root}.b", "late", 3)):
        item = get(client, ns, key)
        assert item is not None and item["value"] == {"n": n} and item["version"] == 1
    assert_error(client, "MEM.PUT", root, "k", "{}", "VECTOR", "$", blob([1, 0]), match=r"no vector index covers")
    create(client, root, 2)  # the same spec again: it starts empty, the old vectors stayed dropped
    assert knn(client, root, [1, 1]) == []
    assert (indexes(client)[root]["vectors"], indexes(client)[root]["memories"]) == (0, 0)
    assert client.execute_command("MEM.INDEX", "DROP", root) == 1
    assert client.execute_command("MEM.INDEX", "DROP", root) == 0
    assert client.execute_command("MEM.INDEX", "DROP", f"{root}.never") == 0


# ---- MEM.PUT VECTOR ------------------------------------------------------------------------------

def _put_errors(root: str) -> list[tuple[list[Any], str]]:
    good = blob([1, 0, 0])
    return [
        ([f"{root}none", "k", "{}", "VECTOR", "$", good], r"no vector index covers namespace"),
        ([root, "k", "{}", "VECTOR", "$", blob([1, 0])], r"vector is 8 bytes; this index takes 3 float32 values "
                                                        r"\(12 bytes\)"),
        ([root, "k", "{}", "VECTOR", "$", b""], r"vector is 0 bytes"),
        ([root, "k", "{}", "VECTOR", "$", blob([1, float("nan"), 0])], r"NaN or infinity"),
        ([root, "k", "{}", "VECTOR", "$", blob([1, float("inf"), 0])], r"NaN or infinity"),
        ([root, "k", "{}", "VECTOR", "$", blob([float("-inf"), 0, 0])], r"NaN or infinity"),
        ([root, "k", "{}", "VECTOR", "$", blob([0, 0, 0])], r"zero vector"),
        ([root, "k", "{}", "VECTOR", "$", blob([0, -0.0, 0])], r"zero vector"),
        ([root, "k", "{}", "VECTOR", "$", good, "VECTOR", "$", good], r"VECTOR path '\$' given twice"),
        ([root, "k", "{}", "VECTOR", "$", good, "VECTOR", "x", blob([1])], r"VECTOR 'x'"),
        ([root, "k", "{}", *[a for i in range(257) for a in ("VECTOR", f"p{i}", good)]], r"at most 256 vectors"),
        ([root, "k", "{}", "VECTOR", "", good], r"VECTOR path"),
        ([root, "k", "{}", "VECTOR", "p" * 1025, good], r"VECTOR path"),
        ([root, "k", "{}", "VECTOR", "$"], r""),  # no blob
        ([root, "k", "{}", "VECTOR"], r""),
    ]


def test_put_vector_errors_write_nothing(client: redis.Redis, root: str) -> None:
    create(client, root, 3)
    for args, match in _put_errors(root):
        assert_error(client, "MEM.PUT", *args, match=match)
        assert get(client, args[0], "k") is None, f"{args[:5]}: a refused put wrote the memory"
    # nothing was logged either: the first acknowledged put is version 1, found by KNN with its vector
    assert put(client, root, "k", {"v": 1}, [("$", blob([1, 0, 0]))]) == 1
    for args, match in _put_errors(root)[1:]:  # on an existing memory: its version and vectors stay
        assert_error(client, "MEM.PUT", *args, match=match)
        item = get(client, root, "k")
        assert item is not None and (item["version"], item["value"]) == (1, {"v": 1})
    assert_knn(knn(client, root, [1, 0, 0]), [((root, "k"), 1.0)])
    assert put(client, root, "k", {"v": 2}, [(f"p{i}", blob([1, i, 0])) for i in range(256)]) == 2  # the limit
    assert indexes(client)[root]["vectors"] == 256


def test_zero_vector_is_fine_without_cosine(client: redis.Redis, root: str) -> None:
    create(client, f"{root}.l2", 2, "DISTANCE", "l2")
    create(client, f"{root}.ip", 2, "DISTANCE", "ip")
    assert put(client, f"{root}.l2", "z", {}, [("$", blob([0, 0]))]) == 1
    assert put(client, f"{root}.ip", "z", {}, [("$", blob([0, 0]))]) == 1
    assert_knn(knn(client, f"{root}.l2", [3, 4]), [((f"{root}.l2", "z"), -5.0)])
    assert_knn(knn(client, f"{root}.ip", [3, 4]), [((f"{root}.ip", "z"), 0.0)])


def test_vector_max_bytes_refuses_a_put_and_writes_nothing() -> None:
    d = start_daemon(NO_AUTOFLUSH + '[memory]\nvector_max_bytes = "8KiB"\n')
    try:
        r = redis.Redis(unix_socket_path=d.socket, socket_timeout=10)
        create(r, "cap", 16)
        assert put(r, "cap", "small", {}, [("$", blob([1] * 16))]) == 1
        many = [(f"p{i}", blob([1, i] + [0] * 14)) for i in range(200)]  # 12,800 bytes of vectors
        assert_error(r, *["MEM.PUT", "cap", "big", "{}", *[a for p, b in many for a in ("VECTOR", p, b)]],
                     match=r"memory\.vector_max_bytes is 8192")
        assert get(r, "cap", "big") is None
        assert hits(knn(r, "cap", [1] * 16, "LIMIT", "10")) == [("cap", "small")]
        flush(r)  # counted the same once flushed
        assert_error(r, *["MEM.PUT", "cap", "small", "{}", *[a for p, b in many for a in ("VECTOR", p, b)]],
                     match=r"memory\.vector_max_bytes")
        assert get(r, "cap", "small")["version"] == 1  # type: ignore[index]
        assert put(r, "cap", "second", {}, [("$", blob([1] * 16))]) == 1  # what fits still goes in
        r.close()
    finally:
        d.cleanup()


# ---- versions, deletes, TTL ----------------------------------------------------------------------

def test_new_version_carries_exactly_its_vectors(client: redis.Redis, root: str) -> None:
    create(client, root, 2, "DISTANCE", "l2")
    assert put(client, root, "a", {"v": 1}, [("$", blob([1, 0]))]) == 1
    assert put(client, root, "b", {"v": 1}, [("$", blob([5, 0]))]) == 1
    flush(client)
    assert hits(knn(client, root, [0, 0])) == [(root, "a"), (root, "b")]
    assert put(client, root, "a", {"v": 2}) == 2  # no vectors: out of KNN results
    assert_knn(knn(client, root, [0, 0]), [((root, "b"), -5.0)])
    assert put(client, root, "a", {"v": 3}, [("x", blob([0, 2]))]) == 3
    assert_knn(knn(client, root, [0, 0]), [((root, "a"), -2.0), ((root, "b"), -5.0)])
    flush(client)
    assert put(client, root, "a", {"v": 4}, [("y", blob([0, 9]))]) == 4  # replaces, does not add
    assert_knn(knn(client, root, [0, 0]), [((root, "b"), -5.0), ((root, "a"), -9.0)])
    hist = [json.loads(x) for x in client.execute_command("MEM.HISTORY", root, "a")]
    assert [h["version"] for h in hist] == [3, 2, 1] and all("vectors" not in h for h in hist)


def test_delete_removes_from_results_at_once(client: redis.Redis, root: str) -> None:
    create(client, root, 2)
    for i in range(4):
        assert put(client, root, f"k{i}", {}, [("$", blob([1, i]))]) == 1
    flush(client)
    assert client.execute_command("MEM.DEL", root, "k0") == 1  # flushed vector, buffered delete
    assert client.execute_command("MEM.DEL", root, "k3") == 1
    assert sorted(hits(knn(client, root, [1, 1]))) == [(root, "k1"), (root, "k2")]
    assert put(client, root, "k4", {}, [("$", blob([1, 4]))]) == 1
    assert client.execute_command("MEM.DEL", root, "k4") == 1  # put and delete both buffered
    assert sorted(hits(knn(client, root, [1, 1]))) == [(root, "k1"), (root, "k2")]
    assert put(client, root, "k0", {}) == 2  # re-created without vectors: stays out
    assert sorted(hits(knn(client, root, [1, 1]))) == [(root, "k1"), (root, "k2")]


def test_ttl_expiry_removes_from_results(client: redis.Redis, root: str) -> None:
    create(client, root, 2)
    assert put(client, root, "stay", {}, [("$", blob([1, 0]))]) == 1
    assert put(client, root, "flushed", {}, [("$", blob([1, 0.1]))], ttl=0.4) == 1
    flush(client)
    assert put(client, root, "buffered", {}, [("$", blob([1, 0.2]))], ttl=0.4) == 1
    wait_until(lambda: hits(knn(client, root, [1, 0])) == [(root, "stay")], what="expired vectors out of KNN")
    assert get(client, root, "flushed") is None and get(client, root, "buffered") is None


def test_refreshttl_keeps_vectors(client: redis.Redis, root: str) -> None:
    create(client, root, 2, "DISTANCE", "ip")
    assert put(client, root, "flushed", {"t": "a"}, [("$", blob([1, 2]))], ttl=30) == 1
    flush(client)
    assert put(client, root, "buffered", {"t": "b"}, [("$", blob([3, 1]))], ttl=30) == 1
    before = {k: get(client, root, k) for k in ("flushed", "buffered")}
    time.sleep(0.01)  # let the clock move past the puts' millisecond (not synchronisation)
    for k in ("flushed", "buffered"):
        assert get(client, root, k, "REFRESHTTL") is not None
        after = get(client, root, k)
        assert after is not None and after["expires_at"] > before[k]["expires_at"]  # type: ignore[index]
    assert_knn(knn(client, root, [1, 1]), [((root, "buffered"), 4.0), ((root, "flushed"), 3.0)])
    flush(client)
    assert_knn(knn(client, root, [1, 1]), [((root, "buffered"), 4.0), ((root, "flushed"), 3.0)])
    # a search's REFRESHTTL too (the refresh lands in the buffer; a later KNN flushes it)
    assert len(knn(client, root, [1, 1], "REFRESHTTL")) == 2
    assert_knn(knn(client, root, [1, 1]), [((root, "buffered"), 4.0), ((root, "flushed"), 3.0)])
    assert indexes(client)[root]["vectors"] == 2


# ---- KNN -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("distance", ["cosine", "ip", "l2"])
def test_knn_order_and_scores_match_numpy(client: redis.Redis, root: str, distance: str) -> None:
    rng = np.random.default_rng(["cosine", "ip", "l2"].index(distance))
    dims = 8
    create(client, root, dims, "DISTANCE", distance)
    memories: dict[tuple[str, str], list[np.ndarray]] = {}
    for i in range(40):
        ns = f"{root}.g{i % 3}"
        n_vec = 1 + (i % 3 == 0) * 2  # every third memory has three vectors: it scores by its best
        vs = [rng.standard_normal(dims) for _ in range(n_vec)]
        assert put(client, ns, f"k{i:02d}", {"i": i}, [(f"p{j}", blob(v)) for j, v in enumerate(vs)]) == 1
        memories[(ns, f"k{i:02d}")] = [f32(v) for v in vs]
        if i == 20:
            flush(client)  # half flushed, half read through the read-your-writes flush
    for _ in range(3):
        q = rng.standard_normal(dims)
        want = expected_knn(distance, f32(q), memories)
        assert_knn(knn(client, root, q, "LIMIT", "100"), want)
        assert_knn(knn(client, root, q), want[:10])  # LIMIT defaults to 10
        assert_knn(knn(client, root, q, "LIMIT", "7", "OFFSET", "5"), want[5:12])
        assert_knn(knn(client, root, q, "LIMIT", "5", "OFFSET", "38"), want[38:])
        assert knn(client, root, q, "OFFSET", "40") == []
        assert knn(client, root, q, "LIMIT", "0") == []
        # items carry the usual fields and the memory's value
        (top,) = knn(client, root, q, "LIMIT", "1")
        assert top["value"] == {"i": int(top["key"][1:])} and top["version"] == 1


def test_multi_vector_memory_scores_by_its_best(client: redis.Redis, root: str) -> None:
    create(client, root, 2)
    assert put(client, root, "multi", {}, [("a", blob([0, 1])), ("b", blob([1, 0.2])), ("c", blob([-1, 0]))]) == 1
    assert put(client, root, "single", {}, [("$", blob([1, 0.5]))]) == 1
    q = f32([1, 0])
    want = expected_knn("cosine", q, {(root, "multi"): [f32([0, 1]), f32([1, 0.2]), f32([-1, 0])],
                                      (root, "single"): [f32([1, 0.5])]})
    assert [i for i, _ in want] == [(root, "multi"), (root, "single")]
    assert_knn(knn(client, root, [1, 0]), want)
    assert_knn(knn(client, root, [-1, 0], "LIMIT", "1"), [((root, "multi"), 1.0)])  # its 'c' vector
    assert len(knn(client, root, [0, 1], "LIMIT", "10")) == 2  # distinct memories, not vectors


@pytest.mark.parametrize("flt", [{"group": "far"}, {"rank": {"$gte": 100}}], ids=["eq", "range"])
def test_filter_applies_before_the_cut(client: redis.Redis, root: str, flt: dict[str, Any]) -> None:
    create(client, root, 2, "DISTANCE", "l2")
    memories = {}
    for i in range(50):
        far = i in (7, 23, 41)
        v = [100 + i, 0] if far else [i * 0.01, 0]
        value = {"group": "far" if far else "near", "rank": 100 + i if far else i}
        assert put(client, f"{root}.n{i % 2}", f"k{i}", value, [("$", blob(v))]) == 1
        if far:
            memories[(f"{root}.n{i % 2}", f"k{i}")] = [f32(v)]
    want = expected_knn("l2", f32([0, 0]), memories)
    assert_knn(knn(client, root, [0, 0], "FILTER", json.dumps(flt), "LIMIT", "3"), want)
    assert_knn(knn(client, root, [0, 0], "FILTER", json.dumps(flt), "LIMIT", "2", "OFFSET", "1"), want[1:])
    assert_knn(knn(client, f"{root}.n1", [0, 0], "FILTER", json.dumps(flt)),
               [w for w in want if w[0][0] == f"{root}.n1"])
    assert knn(client, root, [0, 0], "FILTER", '{"group": "none"}') == []
    assert len(knn(client, root, [0, 0], "LIMIT", "3")) == 3


def test_prefix_narrower_than_the_index(client: redis.Redis, root: str) -> None:
    create(client, root, 2)
    for ns in (root, f"{root}.a", f"{root}.a.x", f"{root}.ab", f"{root}.b"):
        assert put(client, ns, "k", {}, [("$", blob([1, len(ns)]))]) == 1
    assert sorted(hits(knn(client, f"{root}.a", [1, 0]))) == [(f"{root}.a", "k"), (f"{root}.a.x", "k")]
    assert hits(knn(client, f"{root}.a.x", [1, 0])) == [(f"{root}.a.x", "k")]
    assert len(knn(client, root, [1, 0])) == 5
    assert knn(client, f"{root}.zzz", [1, 0]) == []


def test_search_prefix_not_covered_is_an_error(client: redis.Redis, root: str) -> None:
    create(client, f"{root}.a", 2)
    assert put(client, f"{root}.a", "k", {"text": "hello"}, [("$", blob([1, 0]))]) == 1
    for prefix in (root, f"{root}.b", f"{root}x"):  # above the index, beside it
        assert_error(client, "MEM.SEARCH", prefix, "VECTOR", blob([1, 0]), match=r"no vector index covers namespace "
                                                                                  r"prefix")
        assert_error(client, "MEM.SEARCH", prefix, "QUERY", "hello", "VECTOR", blob([1, 0]),
                     match=r"no vector index covers")
    assert hits(search(client, root, "QUERY", "hello")) == [(f"{root}.a", "k")]  # QUERY alone: unchanged


@pytest.mark.parametrize("q, match", [
    (b"\x00" * 12, r"VECTOR: vector is 12 bytes; this index takes 2 float32 values \(8 bytes\)"),
    (struct.pack("<2f", 0, 0), r"zero vector"),
    (struct.pack("<2f", float("nan"), 1), r"NaN or infinity"),
    (struct.pack("<2f", float("inf"), 1), r"NaN or infinity"),
], ids=["length", "zero", "nan", "inf"])
def test_search_vector_errors(client: redis.Redis, root: str, q: bytes, match: str) -> None:
    create(client, root, 2)
    assert_error(client, "MEM.SEARCH", root, "VECTOR", q, match=match)


# ---- hybrid --------------------------------------------------------------------------------------

def rrf(text: list[tuple[str, str]], vector: list[tuple[str, str]]) -> list[tuple[tuple[str, str], float]]:
    """The reference fusion: the documented formula and tie rule, written out independently."""
    t_rank = {ident: r for r, ident in enumerate(text, 1)}
    v_rank = {ident: r for r, ident in enumerate(vector, 1)}
    out = []
    for ident in set(text) | set(vector):
        s = 0.0
        if ident in t_rank:
            s += 1.0 / (RRF_K + t_rank[ident])
        if ident in v_rank:
            s += 1.0 / (RRF_K + v_rank[ident])
        out.append((ident, s))
    return sorted(out, key=lambda p: (-p[1], t_rank.get(p[0], len(text) + 1), p[0]))


def test_hybrid_is_reciprocal_rank_fusion(client: redis.Redis, root: str) -> None:
    rng = np.random.default_rng(7)
    create(client, root, 4)
    words = ["apple", "banana", "cherry"]
    for i in range(30):
        text = " ".join(words[j % 3] for j in range(i % 5 + (i % 3 == 0) * 3)) or "nothing"
        v = rng.standard_normal(4)
        vectors = [("$", blob(v))] if i % 4 else []  # a quarter have no vectors: only BM25 can rank them
        assert put(client, f"{root}.s{i % 2}", f"k{i:02d}", {"text": text, "n": i}, vectors) == 1
        if i == 15:
            flush(client)
    for word in words:
        q = rng.standard_normal(4)
        text = hits(search(client, root, "QUERY", word, "LIMIT", "100"))
        near = hits(knn(client, root, q, "LIMIT", "100"))
        assert text and near and set(text) != set(near)
        want = rrf(text, near)
        got = search(client, root, "QUERY", word, "VECTOR", blob(q), "LIMIT", "100")
        assert [(hits([g])[0], g["score"]) for g in got] == want[:100]
        paged = search(client, root, "QUERY", word, "VECTOR", blob(q), "LIMIT", "4", "OFFSET", "3")
        assert [(hits([g])[0], g["score"]) for g in paged] == want[3:7]
        # with a FILTER: both rankings filtered, then fused
        flt = '{"n": {"$lt": 20}}'
        text_f = hits(search(client, root, "QUERY", word, "FILTER", flt, "LIMIT", "100"))
        near_f = hits(knn(client, root, q, "FILTER", flt, "LIMIT", "100"))
        got_f = search(client, root, "QUERY", word, "VECTOR", blob(q), "FILTER", flt, "LIMIT", "100")
        assert [(hits([g])[0], g["score"]) for g in got_f] == rrf(text_f, near_f)


def test_hybrid_ties_go_to_the_better_text_rank(client: redis.Redis, root: str) -> None:
    create(client, root, 2, "DISTANCE", "l2")
    # 'texty' matches the query but has no vector; 'vecty' has the nearest vector but no match:
    # both score 1/61, and the text rank breaks the tie
    assert put(client, root, "vecty", {"text": "unrelated"}, [("$", blob([0, 0]))]) == 1
    assert put(client, root, "texty", {"text": "zebra"}) == 1
    got = search(client, root, "QUERY", "zebra", "VECTOR", blob([0, 0]))
    assert [(hits([g])[0], g["score"]) for g in got] == [((root, "texty"), 1 / 61), ((root, "vecty"), 1 / 61)]
    # with equal ranks in neither list, namespace then key decide
    assert put(client, f"{root}.b", "a", {"text": "x"}, [("$", blob([1, 0]))]) == 1
    assert put(client, f"{root}.a", "z", {"text": "x"}, [("$", blob([-1, 0]))]) == 1
    near = knn(client, root, [0, 0])
    assert hits(near) == [(root, "vecty"), (f"{root}.a", "z"), (f"{root}.b", "a")]  # equal distance: ns, key
    assert near[1]["score"] == near[2]["score"] == -1.0
    got = search(client, root, "QUERY", "nomatchword", "VECTOR", blob([0, 0]), "LIMIT", "10")
    assert [(hits([g])[0], g["score"]) for g in got] == rrf([], hits(near))
    assert [g["score"] for g in got] == [1 / 61, 1 / 62, 1 / 63]


# ---- transactions --------------------------------------------------------------------------------

def test_multi_queues_vector_puts_and_refuses_mem_index(client: redis.Redis, root: str) -> None:
    create(client, root, 2)
    pipe = client.pipeline(transaction=True)
    pipe.execute_command("MEM.PUT", root, "a", "{}", "VECTOR", "$", blob([1, 0]))
    pipe.execute_command("MEM.PUT", root, "bad", "{}", "VECTOR", "$", blob([1, 0, 0]))
    pipe.execute_command("MEM.PUT", root, "b", "{}", "VECTOR", "$", blob([0, 1]))
    replies = pipe.execute(raise_on_error=False)
    assert replies[0] == 1 and replies[2] == 1
    assert isinstance(replies[1], redis.ResponseError) and "vector is 12 bytes" in str(replies[1])
    assert get(client, root, "bad") is None
    assert_knn(knn(client, root, [1, 0]), [((root, "a"), 1.0), ((root, "b"), 0.0)])
    # MEM.INDEX is not a transaction command: queueing it aborts the transaction
    one = redis.Redis(unix_socket_path=client.connection_pool.connection_kwargs["path"], socket_timeout=10,
                      single_connection_client=True)  # MULTI, the queued commands and EXEC on one connection
    try:
        assert ok(one.execute_command("MULTI"))
        with pytest.raises(redis.ResponseError, match=r"not allowed inside a transaction: mem\.index"):
            one.execute_command("MEM.INDEX", "CREATE", f"{root}x", "DIMS", "2")
        assert one.execute_command("MEM.PUT", root, "c", "{}") in (b"QUEUED", "QUEUED")
        with pytest.raises(redis.ResponseError, match=r"EXECABORT|discarded"):
            one.execute_command("EXEC")
    finally:
        one.close()
    assert get(client, root, "c") is None and f"{root}x" not in indexes(client)


# ---- access rules --------------------------------------------------------------------------------

def test_knn_leaves_out_unreadable_namespaces() -> None:
    base = short_tmpdir()
    os.chmod(base, 0o755)  # the unprivileged child must reach the socket
    d = start_daemon(f'[server]\nsocket_mode = "0666"\nallow_uids = [{NOBODY}]\n[memory]\n{RULES}' + NO_AUTOFLUSH,
                     base=base)
    try:
        owner = redis.Redis(unix_socket_path=d.socket, socket_timeout=10)
        create(owner, "", 2, "DISTANCE", "l2")  # one index over every namespace
        for i, ns in enumerate(("private", "private.deep", "shared", "shared.inbox", "open")):
            assert put(owner, ns, "k", {"text": f"hello from {ns}"}, [("$", blob([i * 0.1, 0]))]) == 1
        everything = hits(knn(owner, "", [0, 0], "LIMIT", "100"))
        assert everything == [(ns, "k") for ns in ("private", "private.deep", "shared", "shared.inbox", "open")]
        q = blob([0, 0]).decode("latin-1")  # (the child's client decodes replies; it sends str args as UTF-8)
        assert q == "\x00" * 8
        got = as_nobody(d.socket, [], [
            ["MEM.SEARCH", "", "VECTOR", q, "LIMIT", "2"],
            ["MEM.SEARCH", "", "VECTOR", q, "QUERY", "hello", "LIMIT", "100"],
            ["MEM.SEARCH", "private", "VECTOR", q],
            ["MEM.INDEX", "CREATE", "private", "DIMS", "2"],
            ["MEM.PUT", "open", "n", "{}", "VECTOR", "$", q],
            ["MEM.INDEX", "DROP", ""],
            ["MEM.INDEX", "CREATE", "", "DIMS", "3"],
        ])
        assert [json.loads(i)["namespace"] for i in got[0]] == ["shared", "shared.inbox"]  # LIMIT after the rules
        assert sorted(json.loads(i)["namespace"] for i in got[1]) == ["open", "shared", "shared.inbox"]
        assert got[2].startswith("error: uid 65534 may not read namespace 'private'")
        assert got[3].startswith("error: uid 65534 may not write namespace 'private'")
        assert got[4] == 1
        # an index over namespaces the peer may not write decides what their writes carry (CREATE) or
        # deletes their vectors (DROP): it needs write access to every namespace under its prefix
        assert got[5].startswith("error: uid 65534 may not write namespace 'private'"), got[5]
        assert got[6].startswith("error: uid 65534 may not write namespace 'private'"), got[6]
        assert "" in indexes(owner) and len(knn(owner, "private", [0, 0])) == 2
        owner.close()
    finally:
        d.cleanup()
