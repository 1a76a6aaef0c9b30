"""memd.client's typed MEM.* methods (docs/memory.md) against a real daemon, sync and async.

Every test files its items under its own root label, so they share one daemon.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
import redis

from memd.client import Client, Memory, MemoryVersion, SyncClient
from tests.integration.daemon import Daemon

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    d = Daemon(fsync="no").start()
    yield d
    d.cleanup()


@pytest.fixture
def client(daemon: Daemon) -> Iterator[SyncClient]:
    with SyncClient(daemon.socket, socket_timeout=10) as c:
        yield c


def assert_utc(*times: datetime | None) -> None:
    for t in times:
        assert t is not None and t.utcoffset() == timedelta(0), t


def test_put_get_versions_and_times(client: SyncClient) -> None:
    ns = ("put-get", "prefs")
    before = datetime.now(timezone.utc) - timedelta(seconds=1)
    assert client.put(ns, "food", {"likes": "ramen"}) == 1
    first = client.get(ns, "food")
    assert isinstance(first, Memory)
    assert (first.namespace, first.key, first.value, first.version) == (ns, "food", {"likes": "ramen"}, 1)
    assert_utc(first.created_at, first.updated_at)
    assert before <= first.created_at == first.updated_at <= datetime.now(timezone.utc) + timedelta(seconds=1)
    assert first.expires_at is None and first.score is None

    time.sleep(0.01)
    assert client.put(ns, "food", {"likes": "udon", "n": [1, {"deep": None}]}) == 2
    second = client.get(ns, "food")
    assert second is not None and second.version == 2
    assert second.value == {"likes": "udon", "n": [1, {"deep": None}]}
    assert second.created_at == first.created_at and second.updated_at > first.updated_at
    assert client.get(ns, "nothing") is None
    assert client.get(("put-get", "other"), "food") is None


def test_delete_keeps_counting_versions_and_history(client: SyncClient) -> None:
    ns = ("history",)
    for i in (1, 2):
        assert client.put(ns, "k", {"i": i}) == i
    created = client.get(ns, "k").created_at
    time.sleep(0.01)
    assert client.delete(ns, "k") is True
    assert client.delete(ns, "k") is False
    assert client.get(ns, "k") is None
    assert client.put(ns, "k", {"i": 3}) == 3  # the count continues across MEM.DEL
    again = client.get(ns, "k")
    assert again.version == 3 and again.created_at > created  # a put after a delete recreates

    history = client.history(ns, "k")
    assert [(v.version, v.value, v.deleted) for v in history] == [(2, {"i": 2}, True), (1, {"i": 1}, False)]
    assert all(isinstance(v, MemoryVersion) for v in history)
    for v in history:
        assert_utc(v.created_at, v.updated_at, v.superseded_at)
        assert v.created_at == created and v.updated_at <= v.superseded_at
    assert history[1].superseded_at == history[0].updated_at  # version 2's put ended version 1
    assert [v.version for v in client.history(ns, "k", limit=1)] == [2]
    assert client.history(ns, "never") == []


def test_search_query_filter_order_and_paging(client: SyncClient) -> None:
    root = ("search",)
    for ns, key, value in [
        (("search", "u1"), "a", {"text": "I like ramen and sushi", "kind": "fact", "stars": 5}),
        (("search", "u1"), "b", {"text": "Ramen preferences: spicy", "kind": "pref", "stars": 2}),
        (("search", "u1", "deep"), "c", {"note": {"text": "ramen"}, "kind": "fact", "stars": 3}),
        (("search", "u10"), "d", {"text": "cats", "kind": "fact", "stars": True}),
    ]:
        client.put(ns, key, value)
        time.sleep(0.005)  # distinct updated_at milliseconds: the no-query order is by them

    ranked = client.search(root, query="ramen")
    assert {m.key for m in ranked} == {"a", "b", "c"}
    assert all(m.score is not None and m.score > 0 for m in ranked)
    assert [m.score for m in ranked] == sorted((m.score for m in ranked), reverse=True)
    assert [m.key for m in client.search(root, query="preference")] == ["b"]  # porter stemming
    assert client.search(root, query="kind") == []  # field names are not indexed

    newest_first = client.search(root)
    assert [m.key for m in newest_first] == ["d", "c", "b", "a"] and all(m.score is None for m in newest_first)
    assert [m.key for m in client.search(root, limit=2, offset=1)] == ["c", "b"]
    assert [m.key for m in client.search(("search", "u1"))] == ["c", "b", "a"]  # label-wise: not u10

    facts = client.search(root, filter={"kind": "fact", "stars": {"$gte": 3}})
    assert [m.key for m in facts] == ["c", "a"]  # true is not a number
    assert [m.key for m in client.search(root, query="ramen", filter={"kind": {"$ne": "fact"}})] == ["b"]
    assert [m.key for m in client.search(root, filter={"stars": {"$in": [2, 3]}})] == ["c", "b"]


def test_list_namespaces(client: SyncClient) -> None:
    for ns in [("nsl", "a", "x"), ("nsl", "a", "y", "z"), ("nsl", "b", "x"), ("nsl", "b")]:
        client.put(ns, "k", {"v": 1})
    client.put(("nsl", "gone"), "k", {"v": 1})
    client.delete(("nsl", "gone"), "k")

    everything = client.list_namespaces(prefix=("nsl",))
    assert everything == [("nsl", "a", "x"), ("nsl", "a", "y", "z"), ("nsl", "b"), ("nsl", "b", "x")]
    assert client.list_namespaces(prefix=("nsl", "*", "x")) == [("nsl", "a", "x"), ("nsl", "b", "x")]
    assert client.list_namespaces(prefix=("nsl",), suffix=("x",)) == [("nsl", "a", "x"), ("nsl", "b", "x")]
    assert client.list_namespaces(prefix=("nsl",), suffix=("y", "*")) == [("nsl", "a", "y", "z")]
    assert client.list_namespaces(prefix=("nsl",), max_depth=2) == [("nsl", "a"), ("nsl", "b")]
    assert client.list_namespaces(prefix=("nsl",), limit=2, offset=1) == everything[1:3]
    assert set(everything) <= set(client.list_namespaces(prefix=(), suffix=()))  # empty = no constraint


def test_ttl_expiry_and_refresh(client: SyncClient) -> None:
    ns = ("ttl",)
    client.put(ns, "short", {"v": 1}, ttl=0.3)
    m = client.get(ns, "short")
    assert_utc(m.expires_at)
    assert abs((m.expires_at - m.updated_at).total_seconds() - 0.3) < 0.01
    time.sleep(0.5)
    assert client.get(ns, "short") is None
    assert client.search(ns) == []

    client.put(ns, "long", {"v": 1}, ttl=30)
    first = client.get(ns, "long").expires_at
    time.sleep(0.2)
    assert client.get(ns, "long").expires_at == first  # a plain read does not refresh
    refreshed = client.get(ns, "long", refresh_ttl=True)
    assert refreshed.expires_at >= first + timedelta(seconds=0.15) and refreshed.version == 1
    time.sleep(0.2)
    [found] = client.search(ns, refresh_ttl=True)
    assert found.key == "long"
    assert client.get(ns, "long").expires_at >= refreshed.expires_at + timedelta(seconds=0.15)
    client.put(ns, "long", {"v": 2})  # a put without TTL makes the item permanent
    assert client.get(ns, "long").expires_at is None


def test_redis_get_and_del_keep_working(client: SyncClient) -> None:
    """``get``/``delete`` with a non-tuple first argument are still Redis GET and DEL."""
    client.set("plain", "v")
    client.set("plain2", "w")
    client.put(("plain",), "plain", {"v": 1})
    assert client.get("plain") == b"v"
    assert client.delete("plain", "plain2", "absent") == 2
    assert client.get("plain") is None
    assert client.get(("plain",), "plain").value == {"v": 1}  # MEM items live in their own keyspace


def test_decoded_responses_and_resp3(daemon: Daemon) -> None:
    with SyncClient(daemon.socket, decode_responses=True, protocol=3, socket_timeout=10) as c:
        c.put(("decoded", "x"), "k", {"t": "ünïcode"})
        assert c.get(("decoded", "x"), "k").value == {"t": "ünïcode"}
        assert c.search(("decoded",))[0].namespace == ("decoded", "x")
        assert c.list_namespaces(prefix=("decoded",)) == [("decoded", "x")]
        assert c.history(("decoded", "x"), "k") == []


def test_errors(client: SyncClient) -> None:
    with pytest.raises(ValueError, match="labels must be non-empty"):
        client.put(("a.b",), "k", {})  # would silently address ("a", "b")
    with pytest.raises(ValueError):
        client.search(("",))  # would silently mean the root
    with pytest.raises(redis.ResponseError, match="invalid QUERY"):
        client.search(("errors",), query='AND "')
    with pytest.raises(redis.ResponseError):
        client.put(("errors",), "k", [1, 2])  # type: ignore[arg-type]  # not an object
    with pytest.raises(redis.ResponseError):
        client.search(("errors",), filter={"n": {"$regex": "x"}})


@pytest.mark.asyncio
async def test_async_client(daemon: Daemon) -> None:
    c = Client(daemon.socket, socket_timeout=10)
    try:
        async with asyncio.timeout(20):
            ns = ("async", "u")
            assert await c.put(ns, "k", {"text": "hello world"}, ttl=60) == 1
            assert await c.put(ns, "k", {"text": "hello there"}) == 2
            got = await c.get(ns, "k", refresh_ttl=True)
            assert got.value == {"text": "hello there"} and got.expires_at is None
            [hit] = await c.search(("async",), query="there", filter={"text": {"$gte": "h"}})
            assert hit.key == "k" and hit.score > 0
            assert await c.list_namespaces(prefix=("async",), max_depth=1) == [("async",)]
            assert [v.version for v in await c.history(ns, "k")] == [1]
            assert await c.delete(ns, "k") is True and await c.get(ns, "k") is None
            await c.set("async-plain", "v")
            assert await c.get("async-plain") == b"v"
            assert await c.delete("async-plain") == 1
    finally:
        await c.aclose()
