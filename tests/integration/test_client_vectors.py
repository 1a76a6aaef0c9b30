"""memd.client's vector API: the wire form it sends, then the calls against a real daemon.

The daemon's behaviour (docs/memory.md, MEM.INDEX and VECTOR) is checked from the
client's side: index declaration and listing, puts carrying vectors, KNN scores per
distance, hybrid search, drop. Vectors here are small (4 dims) so the expected scores
can be computed by hand with numpy.
"""

from __future__ import annotations

import asyncio
import struct

import numpy as np
import pytest
import redis

from memd.client import (
    Client,
    SyncClient,
    VectorIndexInfo,
    index_create_command,
    index_drop_command,
    put_command,
    search_command,
    vector_blob,
)
from tests.integration.daemon import Daemon
from tests.integration.test_client_memory import client, daemon  # noqa: F401 - fixtures

pytestmark = pytest.mark.timeout(60)


# ---- wire form (no daemon) ---------------------------------------------------------------------

def test_vector_blob_is_little_endian_float32() -> None:
    want = struct.pack("<3f", 1.0, -2.5, 0.1)
    assert vector_blob([1.0, -2.5, 0.1]) == want
    assert vector_blob((1, -2.5, 0.1)) == want
    assert vector_blob(np.array([1.0, -2.5, 0.1])) == want  # float64 -> float32
    assert vector_blob(np.array([1.0, -2.5, 0.1], dtype=">f4")) == want  # big-endian input, LE out
    assert vector_blob(want) == want and vector_blob(bytearray(want)) == want  # bytes go as given
    with pytest.raises(ValueError, match="one-dimensional"):
        vector_blob(np.zeros((2, 2)))
    with pytest.raises(TypeError):
        vector_blob(["a"])  # type: ignore[list-item]


def test_commands_wire_form() -> None:
    put = put_command(("u", "1"), "k", {"text": "hi"}, 30, vectors={"$": [1.0, 0.0], "text": b"\0" * 8})
    assert put.args == ("MEM.PUT", "u.1", "k", '{"text":"hi"}', "TTL", 30,
                        "VECTOR", "$", vector_blob([1.0, 0.0]), "VECTOR", "text", b"\0" * 8)
    assert put_command(("u",), "k", {}).args == ("MEM.PUT", "u", "k", "{}")  # no vectors: as before
    search = search_command(("u",), query="ramen", vector=[0.0, 1.0], filter={"a": 1}, limit=3)
    assert search.args == ("MEM.SEARCH", "u", "QUERY", "ramen", "VECTOR", vector_blob([0.0, 1.0]),
                           "FILTER", '{"a":1}', "LIMIT", 3, "OFFSET", 0)
    assert index_create_command(dims=384).args == ("MEM.INDEX", "CREATE", "", "DIMS", 384, "DISTANCE", "cosine")
    assert index_create_command(("a", "b"), dims=2, distance="l2", fields=["text", "items[*].name"]).args == (
        "MEM.INDEX", "CREATE", "a.b", "DIMS", 2, "DISTANCE", "l2", "FIELDS", '["text", "items[*].name"]')
    with pytest.raises(TypeError, match="list of JSON paths"):
        index_create_command(dims=2, fields="text")
    assert index_drop_command(("a",)).args == ("MEM.INDEX", "DROP", "a")


# ---- against the daemon ------------------------------------------------------------------------

VECTORS = {"x": [1.0, 0.0, 0.0, 0.0], "y": [0.0, 2.0, 0.0, 0.0], "xy": [1.0, 1.0, 0.0, 0.0],
           "z": [0.0, 0.0, 0.0, 3.0]}
QUERY = [1.0, 0.5, 0.0, 0.0]


def expected_scores(distance: str) -> list[tuple[str, float]]:
    """The wire's scores (higher is better): cosine similarity, dot product, negative euclidean distance."""
    q = np.array(QUERY, dtype=np.float32)
    scores = {}
    for key, v in VECTORS.items():
        a = np.array(v, dtype=np.float32)
        scores[key] = {"cosine": float(a @ q / np.linalg.norm(a) / np.linalg.norm(q)), "ip": float(a @ q),
                       "l2": -float(np.linalg.norm(a - q))}[distance]
    return sorted(scores.items(), key=lambda p: -p[1])


@pytest.mark.parametrize("distance", ["cosine", "ip", "l2"])
def test_index_put_knn_scores_and_drop(client: SyncClient, distance: str) -> None:
    root = ("vec-" + distance,)
    client.index_create(root, dims=4, distance=distance, fields=["text"])
    client.index_create(root, dims=4, distance=distance, fields=["text"])  # the same spec again: fine
    for key, v in VECTORS.items():
        client.put((*root, "docs"), key, {"text": key}, vectors={"text": v})
    client.put((*root, "docs"), "plain", {"text": "no vector"})  # no vector: not a KNN result
    hits = client.search(root, vector=QUERY, limit=10)
    want = expected_scores(distance)
    assert [h.key for h in hits] == [k for k, _ in want]
    assert [h.score for h in hits] == pytest.approx([s for _, s in want], abs=1e-5)
    assert [h.key for h in client.search(root, vector=QUERY, limit=2, offset=1)] == [k for k, _ in want][1:3]
    assert [h.key for h in client.search(root, vector=QUERY, filter={"text": {"$ne": "x"}}, limit=1)] == \
        [k for k, _ in want if k != "x"][:1]

    [info] = [i for i in client.index_list() if i.prefix == root]
    assert info == VectorIndexInfo(prefix=root, dims=4, distance=distance, fields=("text",), vectors=4,
                                   memories=4, nbytes=info.nbytes, ann=info.ann)
    assert info.nbytes >= 4 * 4 * 4

    with pytest.raises(redis.ResponseError, match="DROP"):  # another DIMS while it holds vectors
        client.index_create(root, dims=8, distance=distance)
    assert client.index_drop(root) is True
    assert client.index_drop(root) is False
    assert root not in [i.prefix for i in client.index_list()]
    assert client.get((*root, "docs"), "x").value == {"text": "x"}  # the memories stay


def test_several_vectors_hybrid_and_errors(client: SyncClient) -> None:
    root = ("vec-hybrid",)
    client.index_create(root, dims=2)
    client.put(root, "a", {"text": "ramen noodles", "tags": ["food"]},
               vectors={"text": [1.0, 0.0], "tags": np.array([0.0, 1.0])})
    client.put(root, "b", {"text": "cats"}, vectors={"$": vector_blob([0.6, 0.8])})
    best = client.search(root, vector=[0.0, 1.0])
    assert [h.key for h in best] == ["a", "b"]  # a scores by its best vector ("tags")
    assert best[0].score == pytest.approx(1.0, abs=1e-6)
    hybrid = client.search(root, query="ramen", vector=[0.6, 0.8])
    # a: BM25 rank 1, vector rank 2; b: vector rank 1 only
    assert [h.key for h in hybrid] == ["a", "b"]
    assert [h.score for h in hybrid] == pytest.approx([1 / 61 + 1 / 62, 1 / 61])
    with pytest.raises(redis.ResponseError):
        client.put(root, "c", {}, vectors={"$": [1.0, 0.0, 0.0]})  # wrong length
    with pytest.raises(redis.ResponseError):
        client.put(("no-index-here",), "c", {}, vectors={"$": [1.0, 0.0]})
    with pytest.raises(redis.ResponseError):
        client.search(("no-index-here",), vector=[1.0, 0.0])
    assert client.get(root, "c") is None  # nothing written


@pytest.mark.asyncio
async def test_async_twins(daemon: Daemon) -> None:
    c = Client(daemon.socket)
    root = ("vec-async",)
    try:
        async with asyncio.timeout(30):
            await c.index_create(root, dims=3, distance="ip")
            assert await c.put(root, "k", {"v": 1}, vectors={"$": [1.0, 2.0, 3.0]}) == 1
            [hit] = await c.search(root, vector=[1.0, 1.0, 1.0])
            assert (hit.key, hit.score) == ("k", pytest.approx(6.0))
            assert any(i.prefix == root and i.distance == "ip" for i in await c.index_list())
            assert await c.index_drop(root) is True
    finally:
        await c.aclose()
