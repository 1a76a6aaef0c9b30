"""More concurrent calls than the client has connections: they wait for one, they do not fail.

redis-py's default pool raises ``MaxConnectionsError`` once 100 connections are
in use; LangGraph runs many nodes (and their store calls) at once, so a burst
of a few hundred calls is ordinary. These tests run such bursts against a real
daemon through ``memd.client`` and through ``MemdStore``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait

import pytest

from memd.client import Client, SyncClient
from memd.integrations.langgraph import MemdStore
from tests.integration.daemon import Daemon

pytestmark = pytest.mark.timeout(120)

CALLS = 300  # three times redis-py's default pool size


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    d = Daemon(fsync="no").start()
    yield d
    d.cleanup()


@pytest.mark.asyncio
async def test_async_client_burst_waits_for_a_connection(daemon: Daemon) -> None:
    c = Client(daemon.socket)
    try:
        async with asyncio.timeout(90):
            versions = await asyncio.gather(*(c.put(("burst",), f"k{i}", {"i": i}) for i in range(CALLS)))
            assert versions == [1] * CALLS
            got = await asyncio.gather(*(c.get(("burst",), f"k{i}") for i in range(CALLS)))
            assert [m.value["i"] for m in got] == list(range(CALLS))
        assert len(c.connection_pool._in_use_connections) == 0
    finally:
        await c.aclose()


@pytest.mark.asyncio
async def test_memd_store_async_burst(daemon: Daemon) -> None:
    store = MemdStore(daemon.socket)
    ns = ("store-burst",)
    try:
        async with asyncio.timeout(90):
            await asyncio.gather(*(store.aput(ns, f"k{i}", {"i": i, "text": f"word{i % 7}"}) for i in range(CALLS)))
            items = await asyncio.gather(*(store.aget(ns, f"k{i}") for i in range(CALLS)))
            assert [item.value["i"] for item in items] == list(range(CALLS))
            hits = await asyncio.gather(*(store.asearch(ns, filter={"i": i}) for i in range(CALLS)))
            assert [[h.key for h in found] for found in hits] == [[f"k{i}"] for i in range(CALLS)]
            mixed = await asyncio.gather(*(
                store.aput(ns, f"m{i}", {"i": i}) if i % 3 == 0 else
                store.aget(ns, f"k{i}") if i % 3 == 1 else
                store.asearch(ns, query=f"word{i % 7}", limit=1)
                for i in range(CALLS)))
            assert all(m is None for m in mixed[0::3])
            assert [m.key for m in mixed[1::3]] == [f"k{i}" for i in range(1, CALLS, 3)]
            assert all(len(m) == 1 for m in mixed[2::3])
    finally:
        await store.aclose()
        store.close()


def test_sync_client_waits_for_a_connection(daemon: Daemon) -> None:
    """The sync client shares one pool between threads: the same limit, the same fix.

    Every connection of the pool is held (as by as many busy threads), then a
    thread makes a call: it must wait until a connection comes back, not fail.
    """
    c = SyncClient(daemon.socket)
    pool = c.connection_pool
    held = [pool.get_connection() for _ in range(pool.max_connections)]
    try:
        with ThreadPoolExecutor(max_workers=1) as runner:
            call = runner.submit(c.put, ("sync-burst",), "k", {"v": 1})
            # Give a failing pool ample time to fail (it fails at once); a waiting call is still pending.
            wait([call], timeout=2)
            assert not call.done(), call.exception()
            pool.release(held.pop())
            assert call.result(timeout=30) == 1
    finally:
        for conn in held:
            pool.release(conn)
        c.close()
