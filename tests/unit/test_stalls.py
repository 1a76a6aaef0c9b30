"""What keeps the event loop from stalling (issue #13): each piece's contract, not its timing.

Timing is benchmarks/bench_readpath.py's business (loop lag under redis-benchmark); here:
the flush's chunked sort orders rows exactly as one stable sort would, big containers are
emptied in slices, the GC policy freezes what survives a young collection, and a closed
connection is freed by reference counting alone (no cycle left for a collector that no
longer walks it).
"""

from __future__ import annotations

import gc
import operator
import os
import random
import socket
import weakref
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

import memd.server as server_mod
from memd.engine.engine import Engine
from memd.gcpolicy import GcPolicy
from memd.release import CHUNK, release_steps
from memd.server import Connection, Server
from memd.store.rows import MERGE_STEP, SORT_RUN, sorted_by_key
from tests.fake_transport import FakeTransport


@pytest.mark.parametrize("n", [0, 1, SORT_RUN, SORT_RUN + 1, 3 * SORT_RUN + 17])
def test_sorted_by_key_is_one_stable_sort(n: int) -> None:
    rng = random.Random(n)
    # few distinct keys: many ties (a collection's element rows share their key), which must keep their order
    rows = [(0, b"k%d" % rng.randrange(max(n // 3, 1)), i) for i in range(n)]
    out: list[tuple[int, bytes, int]] = [(9, b"before", -1)]
    steps = sum(1 for _ in sorted_by_key(list(rows), out))
    assert out == [(9, b"before", -1), *sorted(rows, key=operator.itemgetter(1))]
    if n > SORT_RUN:  # a step per run sorted and per MERGE_STEP rows merged: none holds the loop for long
        assert steps >= n // SORT_RUN + n // MERGE_STEP - 1


def test_release_steps_empty_lists_and_dicts_a_chunk_at_a_time() -> None:
    big_list = list(range(3 * CHUNK + 5))
    big_dict = {i: str(i) for i in range(2 * CHUNK + 1)}
    shared = [1, 2]
    steps = 0
    for _ in release_steps([big_list, big_dict, shared, shared, []]):
        steps += 1
    assert big_list == [] and big_dict == {} and shared == []
    assert steps == 4 + 3 + 1  # (each step frees at most CHUNK elements)


@pytest.fixture
def policy() -> Iterator[GcPolicy]:
    p = GcPolicy()
    gc.unfreeze()
    p.install()
    try:
        yield p
    finally:
        p.uninstall()
        gc.unfreeze()  # other tests run in this process: leave the collector as found


class Node:
    def __init__(self) -> None:
        self.payload = [1, 2, 3]


def test_what_survives_a_young_collection_is_frozen(policy: GcPolicy) -> None:
    node = Node()
    assert any(o is node for o in gc.get_objects()), "a new object is the collector's"
    gc.collect(0)
    assert policy.freezes == 0 and any(o is node for o in gc.get_objects()), "generation 0 alone freezes nothing"
    gc.collect(1)
    assert policy.freezes == 1
    assert not any(o is node for o in gc.get_objects()), "after a generation-1 collection: frozen, never walked"
    ref = weakref.ref(node)
    del node
    assert ref() is None, "frozen objects are still freed by reference counting"
    assert policy.status()["memd_gc_pause_max_ms"] >= 0 and policy.collections >= 2


def test_young_garbage_cycles_are_still_collected(policy: GcPolicy) -> None:
    a, b = Node(), Node()
    a.payload, b.payload = [b], [a]  # type: ignore[list-item]
    ref = weakref.ref(a)
    del a, b
    gc.collect(1)  # a young collection finds the cycle before anything is frozen
    assert ref() is None


@pytest.mark.anyio
async def test_a_closed_connection_is_freed_without_the_cyclic_gc(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_mod, "peer_credentials", lambda sock: (1, os.geteuid(), os.getegid(), []))
    async with Engine(str(tmp_path), fsync="everysec") as engine:
        server = Server(engine, str(tmp_path / "unused.sock"))
        conn = Connection(server)
        conn.connection_made(FakeTransport())  # type: ignore[arg-type]
        conn.data_received(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPING\r\n")
        ref = weakref.ref(conn)
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            conn.connection_lost(None)
            del conn
            assert ref() is None, "a reference cycle keeps the closed connection alive"
        finally:
            if was_enabled:
                gc.enable()


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_a_closed_socket_connection_leaves_no_cycle(tmp_path: Path) -> None:
    """Over a real socket: the connection and asyncio's transport are freed by reference counting
    once the client goes (frozen, a cycle among them would never be reclaimed)."""
    async with Engine(str(tmp_path / "data"), fsync="everysec") as engine:
        server = Server(engine, str(tmp_path / "s.sock"))
        await server.start()
        try:
            refs: list[weakref.ref[object]] = []
            was_enabled = gc.isenabled()
            gc.collect()
            gc.disable()
            try:
                def client() -> None:
                    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                        s.connect(str(tmp_path / "s.sock"))
                        s.sendall(b"*1\r\n$4\r\nPING\r\n")
                        assert s.recv(100) == b"+PONG\r\n"
                        conn = next(iter(server.connections))
                        refs.extend([weakref.ref(conn), weakref.ref(conn.transport)])
                await anyio.to_thread.run_sync(client)
                for _ in range(100):
                    if all(r() is None for r in refs):
                        break
                    await anyio.sleep(0.01)
                assert refs and all(r() is None for r in refs), [r() for r in refs]
            finally:
                if was_enabled:
                    gc.enable()
        finally:
            await server.close()


class Item:
    """A tracked object with no cycles, as a buffer entry is."""

    def __init__(self, n: int) -> None:
        self.n = n


def churn(old: list[Item], n: int) -> None:
    """Replace ``n`` of ``old``'s objects by new ones: tens of thousands of new objects, net allocations ~0."""
    for i in range(n):
        old[i] = Item(i)


@pytest.mark.anyio
async def test_young_collections_come_on_a_clock(policy: GcPolicy, monkeypatch: pytest.MonkeyPatch) -> None:
    """Objects that replace freed ones do not move the collector's count: without the pacer they pile up
    in generation 0 (the collection that finally comes walks them all); with it they are collected."""
    old = [Item(i) for i in range(30_000)]
    gc.collect()
    gc.freeze()
    churn(old, 30_000)
    assert len(gc.get_objects(0)) >= 25_000, "the pile this test is about: new objects the count does not see"
    monkeypatch.setattr("memd.gcpolicy.YOUNG_INTERVAL", 0.01)
    async with anyio.create_task_group() as tg:
        tg.start_soon(policy.pace_young_collections)
        churn(old, 30_000)
        with anyio.move_on_after(10):  # (a loaded box: a deadline, not a fixed wait)
            while len(gc.get_objects(0)) >= 5_000 or policy.collections < 2:
                await anyio.sleep(0.01)
        assert len(gc.get_objects(0)) < 5_000
        tg.cancel_scope.cancel()
    assert policy.collections >= 2
