"""Compaction: what a months-long run must shed, in short transactions.

Purges expired keys (their elements go with them) and expired memories
(archived into history first, as versions that ended at their expiry, and
unindexed; a value-less tombstone row stays, because it holds the memory's
version count: versions are never reused), prunes history beyond retention, checkpoints SQLite's WAL (PASSIVE
each run, TRUNCATE past a threshold when no reader holds it), returns free
pages (incremental vacuum) and refreshes planner statistics (PRAGMA optimize).

Writers are never blocked: each batch is one short store transaction taken
under the engine's flush lock (a flush waits at most one batch), and an item
that still has changes in the buffer is skipped — its buffered state wins
and the next run sees it flushed.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from memd.config import CompactionConfig
from memd.engine.engine import Engine

log = logging.getLogger("memd.compaction")

BATCH = 5000


def _buffered_key(engine: Engine, db: int, key: bytes) -> bool:
    return any(key in layer.entries for layer in engine.db_layers[db])


async def _purge_batch(engine: Engine, now_ms: int) -> tuple[int, int, bool]:
    """One transaction's worth; returns (keys, memories expired, more to do)."""
    store = engine.store
    async with engine.flush_lock:
        keys = [(db, k) for db, k in store.expired_keys(now_ms, BATCH)
                if db < engine.databases and not _buffered_key(engine, db, k)]
        expired = [i for i in store.expired_memories(now_ms, BATCH) if not engine.memories.pending_item(*i)]
        await store.purge(keys, expired)
    more = BATCH in (len(keys), len(expired))  # (skipped buffered items can make this stop early)
    return len(keys), len(expired), more


async def run_compaction(engine: Engine, cfg: CompactionConfig) -> dict[str, Any]:
    """One compaction run; returns what it removed and the bytes given back to the file system."""
    t0 = time.perf_counter()
    store, mem = engine.store, engine.memories
    before = store.disk_bytes()
    now_ms = engine.now_ms()
    max_age = mem.history_max_age_ms
    totals = [0, 0]
    more = True
    while more:
        *counts, more = await _purge_batch(engine, now_ms)
        totals = [a + b for a, b in zip(totals, counts, strict=True)]
    async with engine.flush_lock:
        pruned = await store.prune_history(mem.history_versions, now_ms - max_age if max_age else -1)
    async with engine.flush_lock:
        free_pages = await store.vacuum()
        checkpoint = await store.checkpoint(cfg.wal_truncate_bytes)
    after = store.disk_bytes()
    result = {"expired_keys": totals[0], "expired_memories": totals[1],
              "history_pruned": pruned, "checkpoint": checkpoint, "free_pages": free_pages,
              "bytes_before": before, "bytes_after": after, "bytes_returned": max(0, before - after),
              "seconds": round(time.perf_counter() - t0, 3)}
    log.info("compaction_done %s", " ".join(f"{k}={v}" for k, v in result.items()))
    return result
