"""Memtable.bytes, what buffer_max_bytes and flush.max_bytes bound, is what the buffer really costs.

Each case builds its data inside the traced region (as replay does: the WAL's decoder makes
every key and value object), applies it, and compares the memtable's count with what
tracemalloc saw allocated and still held. Counting data bytes only (the count before this
test) was 2x under for 200-byte values and 15x under for 1-byte ones.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable

import pytest

from memd.engine.memtable import Memtable
from memd.engine.records import OP_DEL, OP_MEM_PUT, OP_SET, OP_UPDATE, T_HASH, T_ZSET, Op

N = 20_000


def traced(build: Callable[[], list[list[Op]]]) -> tuple[int, int]:
    """(bytes tracemalloc sees held after applying ``build()``'s records, the memtable's count)."""
    table = Memtable()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for lsn, ops in enumerate(build(), 1):
            table.apply(lsn, ops)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    return held, table.bytes


def strings(size: int) -> list[list[Op]]:
    return [[(OP_SET, b"key:%012d" % i, b"%0*d" % (size, i), None) for i in range(j, j + 1000)]
            for j in range(0, N, 1000)]


def tombstones() -> list[list[Op]]:
    return [[(OP_DEL, b"key:%012d" % i) for i in range(j, j + 1000)] for j in range(0, N, 1000)]


def hashes(fields: int) -> list[list[Op]]:
    return [[(OP_UPDATE, b"h:%08d" % i, T_HASH, True, None, fields, 0, 0,
              [(b"field:%04d" % f, b"value-%08d" % (i + f)) for f in range(fields)])] for i in range(N // fields)]


def zsets(members: int) -> list[list[Op]]:
    return [[(OP_UPDATE, b"z:%08d" % i, T_ZSET, True, None, members, 0, 0,
              [(b"member:%06d" % f, float(i + f) + 0.5) for f in range(members)])] for i in range(N // members)]


def memories() -> list[list[Op]]:
    return [[(OP_MEM_PUT, "user-%d.memories" % (i % 10), "m%09d" % i, '{"text": "%s"}' % ("w" * 300), 1,
              1_765_000_000_000 + i, 1_765_000_000_000 + i, None, None) for i in range(j, j + 500)]
            for j in range(0, N, 500)]


@pytest.mark.parametrize("name, build", [
    ("SET, 200-byte values", lambda: strings(200)),
    ("SET, 1-byte values", lambda: strings(1)),
    ("SET, 4 KB values", lambda: strings(4096)),
    ("DEL tombstones", tombstones),
    ("hashes of 10 fields", lambda: hashes(10)),
    ("sorted sets of 20 members", lambda: zsets(20)),
    ("MEM.PUT of 300-character texts", memories),
])
def test_counted_bytes_are_what_tracemalloc_sees(name: str, build: Callable[[], list[list[Op]]]) -> None:
    held, counted = traced(build)
    # within 15%: dicts grow by doubling (their tables are 1/3 to 2/3 full) and the allocator rounds
    assert 0.85 * held <= counted <= 1.15 * held, f"{name}: counted {counted:,}, tracemalloc {held:,}"
