"""The daemon's GC policy: after each flush, what is alive leaves the cyclic GC's reach (gc.freeze).

A full collection re-walks every buffered key on the event loop (600 ms with 1,000,000 keys);
frozen, the buffer is not walked, yet reference counting still frees a flushed buffer. Timing
is the benchmarks' business; here: which objects the collector sees, and that nothing frozen
outlives its memtable.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from memd.daemon import freeze_long_lived
from memd.engine.engine import Engine

pytestmark = pytest.mark.anyio


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """Leave the process's collector as it found it (other tests run in this process)."""
    gc.unfreeze()
    try:
        yield
    finally:
        gc.unfreeze()


async def test_a_flush_freezes_the_buffer_and_frees_the_flushed_one(tmp_path: Path, unfrozen: None) -> None:
    async with Engine(str(tmp_path / "data"), flush_max_age=3600.0) as engine:
        engine.after_flush.append(freeze_long_lived)
        # off here: the flush's read cache rows are new long-lived objects the hook freezes, which would
        # offset the count of the memtable's entries freed
        engine.store.configure_readcache(0)
        ks = engine.keyspace
        ks.mset([(b"old:%d" % i, b"v") for i in range(10_000)])
        await engine.flush()  # the hook runs: everything alive now is frozen
        ks.mset([(b"new:%d" % i, b"v") for i in range(10_000)])
        entry = engine.active.dbs[0].entries[b"new:0"]
        assert any(o is entry for o in gc.get_objects()), "a young entry is the collector's until the next flush"
        freeze_long_lived()
        frozen = gc.get_freeze_count()
        assert not any(o is entry for o in gc.get_objects()), "frozen: no collection walks it"
        await engine.flush()  # the memtable holding the 10,000 new entries is dropped...
        for _ in range(100):  # ... once the flush's task lets go of it (a loop pass or two)
            if gc.get_freeze_count() <= frozen - 10_000:
                break
            await anyio.sleep(0.01)
        assert gc.get_freeze_count() <= frozen - 10_000, "frozen entries are freed with their memtable"
        assert ks.get(b"new:9999") == b"v" and ks.get(b"old:0") == b"v"
