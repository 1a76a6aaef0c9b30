"""The in-memory buffer: what was written but not yet flushed to SQLite.

A :class:`Memtable` maps keys to :class:`Entry` objects that say what changed,
one :class:`DbTable` per database (Redis's SELECT; the physical number, which
SWAPDB never moves: see :data:`memd.engine.records.OP_SWAPDB`).
Entries are *deltas over older layers*, never copies of whole values: appending
one element to a list of 100,000 touches one overlay slot and four integers,
so the buffer, the WAL and the flush all cost O(changed elements).

Rules that make reads simple (see :mod:`memd.engine.keyspace`):

- Every entry carries the key's complete metadata (type, expiry, element
  count, list bounds), so a metadata lookup is "first layer that has the key".
- ``reset`` means the layers below hold nothing that still counts for this
  key (DEL, overwrite, create after expiry); element lookups stop here.
- A string entry with ``reset`` false and ``value`` None only changed its
  expiry: the value comes from an older layer.
- ``elems`` maps a sub-key (hash field, set member, zset member, or a list
  position as 8 big-endian bytes) to its value, or to :data:`DELETED`.
- ``order`` (sorted sets only, None until a range read asks for it) holds the
  entry's live ``(score, member)`` pairs in order; once built, apply keeps it in
  step, so a range read over a big buffered zset bisects instead of sorting.

Apply is pure and total: it never reads SQLite, so the very same function
runs live and during WAL replay.

``bytes`` (what ``buffer_max_bytes`` and ``flush.max_bytes`` bound) counts what the
buffer really costs in Python, not only its keys' and values' bytes: each entry
object, its map slot, and the headers of the bytes and str objects it holds
(:data:`ENTRY_COST`, :data:`ELEM_COST`, :data:`MEM_COST`; checked against
tracemalloc in tests/unit/test_memtable_bytes.py). Counting data bytes alone
understated a buffer of 200-byte values 2x, and one of small values up to 15x,
so its bound did not bound memory.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from memd.engine.records import (
    DEFAULT_DATABASES,
    OP_DEL,
    OP_FLUSHALL,
    OP_FLUSHDB,
    OP_MEM_DEL,
    OP_MEM_INDEX,
    OP_MEM_PUT,
    OP_SELECT,
    OP_SET,
    OP_SWAPDB,
    OP_UPDATE,
    T_NONE,
    T_STRING,
    Op,
)


class _Deleted:
    __slots__ = ()

    def __repr__(self) -> str:
        return "DELETED"


DELETED: Any = _Deleted()


class Entry:
    """One key's change in one memtable (see the module docstring)."""

    __slots__ = ("type", "reset", "value", "expires_at", "count", "lo", "hi", "elems", "size", "order", "atime")

    def __init__(self, type_: int, reset: bool, value: bytes | None = None,
                 expires_at: int | None = None, count: int = 0, lo: int = 0, hi: int = 0) -> None:
        self.type = type_
        self.reset = reset
        self.value = value
        self.expires_at = expires_at
        self.count = count
        self.lo = lo
        self.hi = hi
        self.elems: dict[bytes, Any] | None = None
        self.size = 0
        self.order: Any = None  # a sortedcontainers.SortedList of (score, member) (see the module docstring)
        self.atime = 0.0  # the key's last access (OBJECT IDLETIME), engine-clock seconds: its write, or a read since

    def __repr__(self) -> str:
        return (f"Entry(type={self.type}, reset={self.reset}, value={self.value!r}, exp={self.expires_at}, "
                f"count={self.count}, lo={self.lo}, hi={self.hi}, elems={self.elems})")


def under(ns: str, prefix: str) -> bool:
    """Whether namespace ``ns`` is ``prefix`` or below it, label-wise ("" is the root)."""
    return not prefix or ns == prefix or ns.startswith(prefix + ".")


Vectors = tuple[tuple[str, bytes], ...]  # a memory version's embeddings: (path, little-endian float32 blob)
IndexSpec = tuple[int, str, str]  # a vector index: dims, distance, fields (JSON array text)


class MemEntry:
    """One MEM.* item's latest state in one memtable (``value`` None: deleted, version kept).

    ``vectors``: this version's embeddings (empty: none, and any stored ones go), or None
    when this memtable only refreshed the TTL of a version written below it: the store
    keeps that version's vectors.

    ``history`` holds the versions this memtable superseded itself, as
    history rows ``(version, value, created, updated, superseded_at, deleted)``;
    ``ended_below`` says how this memtable's first change to the item ended the
    version an older layer (or SQLite) holds: ``(at_ms, deleted)``. The flush
    turns both into ``mem_history`` rows, so history is exact however many
    versions one memtable collapses.

    ``unstored``: the store held no row of the item (current or archived) and no older
    layer held it when this memtable first wrote it (``Memories.put_many`` knows it from
    the read that numbers versions). Nothing can write the item to the store before this
    memtable's flush does, since layers flush oldest first, so that flush skips archiving
    and unindexing it (two statements that would find nothing). False when not known
    (replay, deletes, TTL refreshes): the flush then looks.
    """

    __slots__ = ("value", "version", "created_at", "updated_at", "expires_at", "ttl", "history", "ended_below",
                 "vectors", "unstored")

    def __init__(self, value: str | None, version: int, created_at: int, updated_at: int,
                 expires_at: int | None, ttl: int | None = None, vectors: Vectors | None = ()) -> None:
        self.vectors = vectors
        self.value = value
        self.version = version
        self.created_at = created_at
        self.updated_at = updated_at
        self.expires_at = expires_at
        self.ttl = ttl
        self.history: list[tuple[int, str, int, int, int, bool]] | None = None
        self.ended_below: tuple[int, bool] = (updated_at, value is None)
        self.unstored = False

    def size(self, ident: tuple[str, str]) -> int:
        n = MEM_COST + len(ident[0]) + len(ident[1]) + len(self.value or "")
        if self.vectors:
            n += sum(len(path) + len(blob) for path, blob in self.vectors)
        if self.history:
            n += sum(len(h[1]) for h in self.history)
        return n


def _blob_bytes(vectors: Vectors | None) -> int:
    return sum(len(blob) for _, blob in vectors) if vectors else 0


_BYTES_HEAD = sys.getsizeof(b"")  # a bytes object beyond its data (33 on 64-bit CPython)
_STR_HEAD = sys.getsizeof("")  # an ASCII str beyond its characters (49)
_SLOT = 48  # a dict item's share of its table: an 8-byte index and a 24-byte entry, at two-thirds load
_FLOAT = sys.getsizeof(0.0)  # a sorted set's score
# an entry: the object, its slot in the table's map, its key's header; a string's value header on top
ENTRY_COST = sys.getsizeof(Entry(T_NONE, True)) + _SLOT + _BYTES_HEAD
# an element of a collection: its slot in the entry's dict, its member's header (the value: below)
ELEM_COST = _SLOT + _BYTES_HEAD


def _elem_size(sub: bytes, value: Any) -> int:
    if isinstance(value, bytes):
        return ELEM_COST + len(sub) + _BYTES_HEAD + len(value)
    return ELEM_COST + len(sub) + (0 if value is DELETED else _FLOAT)


# a memory: the object, its slot in the map, its (ns, key) tuple, the headers of its three strs
# (ns, key, JSON value), and its two timestamps (ints past the small-int cache)
MEM_COST = (sys.getsizeof(MemEntry(None, 0, 0, 0, None)) + _SLOT + sys.getsizeof(("", "")) + 3 * _STR_HEAD
            + 2 * sys.getsizeof(1 << 40))


class DbTable:
    """One database's keys in one memtable: what a read of that database merges, layer by layer.

    ``flushall``: FLUSHDB or FLUSHALL ran in this memtable; nothing of this database below it
    (older layers, SQLite) counts, and the flush wipes the database before writing the rest.
    """

    __slots__ = ("entries", "flushall", "_sorted")

    def __init__(self) -> None:
        self.entries: dict[bytes, Entry] = {}
        self.flushall = False
        self._sorted: list[bytes] | None = None  # the keys in byte order (SCAN), rebuilt after a key came or went

    def sorted_keys(self) -> list[bytes]:
        """Every key with an entry here, in byte order (cached until the key set changes)."""
        if self._sorted is None:
            self._sorted = sorted(self.entries)
        return self._sorted


class Memtable:
    """A set of key changes between two LSNs; frozen before it is flushed.

    ``dbmap`` is the engine's map of Redis database numbers (what SELECT names) to the
    physical ones data is kept under, shared by every memtable: an OP_SWAPDB applied here
    swaps two of its entries in place (live and on replay alike), and this memtable keeps
    a copy of the map as it left it (``swapped``), which its flush stores with its rows.
    """

    __slots__ = ("dbs", "dbmap", "swapped", "mem", "indexes", "index_drops", "vector_bytes", "bytes", "records",
                 "writes", "first_lsn", "max_lsn", "created", "frozen", "clock", "committed")

    def __init__(self, dbmap: list[int] | None = None, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock  # what an entry's access time is read from (the engine's clock): once per record
        self.dbmap = list(range(DEFAULT_DATABASES)) if dbmap is None else dbmap
        self.dbs = [DbTable() for _ in self.dbmap]
        self.swapped: list[int] | None = None
        self.mem: dict[tuple[str, str], MemEntry] = {}
        # vector indexes declared (a spec) or dropped (None) here; the prefixes dropped here, whose
        # vectors stored below must go before this memtable's own are written
        self.indexes: dict[str, IndexSpec | None] = {}
        self.index_drops: set[str] = set()
        self.vector_bytes = 0  # the vectors' blobs held here (vector_max_bytes counts them with the store's)
        self.bytes = 0
        self.records = 0  # WAL records applied
        self.writes = 0  # ops applied: a MULTI or a pipelined run of SETs is one record of many writes
        self.first_lsn = 0
        self.max_lsn = 0
        self.created = time.monotonic()
        self.frozen = False
        # set by the store once a flush of this memtable has committed: should that flush be run
        # again (a failure after the commit), the store holds its memories and ``unstored`` is stale
        self.committed = False

    def __len__(self) -> int:
        return sum(len(t.entries) for t in self.dbs) + len(self.mem)

    def _replace(self, table: DbTable, key: bytes, entry: Entry) -> None:
        old = table.entries.get(key)
        if old is not None:
            self.bytes -= old.size
        else:
            table._sorted = None
        table.entries[key] = entry
        self.bytes += entry.size

    def _wipe(self, table: DbTable) -> None:
        self.bytes -= sum(e.size for e in table.entries.values())
        table.entries.clear()
        table._sorted = None
        table.flushall = True

    def apply(self, lsn: int, ops: list[Op] | tuple[Op, ...]) -> None:
        """Apply one record's ops. Pure: the same on replay as live.

        A record starts in database 0; an OP_SELECT moves the ops after it to another.
        """
        assert not self.frozen, "a frozen memtable is read-only"
        table = self.dbs[0]
        entries = table.entries
        now = self.clock()
        for op in ops:
            code = op[0]
            if code == OP_SET:  # most ops: _replace inlined
                _, key, value, exp = op
                entry = Entry(T_STRING, True, value, exp)
                entry.atime = now
                entry.size = size = ENTRY_COST + len(key) + _BYTES_HEAD + len(value)
                old = entries.get(key)
                if old is not None:
                    self.bytes += size - old.size
                else:
                    self.bytes += size
                    table._sorted = None
                entries[key] = entry
            elif code == OP_MEM_PUT:  # bulk ingest: thousands per record
                _, ns, key, value, version, created, updated, exp, ttl = op[:9]
                vectors = op[9] if len(op) > 9 else ()
                ident = (ns, key)
                if not vectors and ident not in self.mem:  # _mem_replace inlined: nothing to carry over
                    self.mem[ident] = MemEntry(value, version, created, updated, exp, ttl, vectors)
                    self.bytes += MEM_COST + len(ns) + len(key) + len(value)  # (MemEntry.size: no vectors, history)
                else:
                    self._mem_replace(ident, MemEntry(value, version, created, updated, exp, ttl, vectors))
            elif code == OP_UPDATE:
                self._update(table, op).atime = now
            elif code == OP_DEL:
                entry = Entry(T_NONE, True)
                entry.size = ENTRY_COST + len(op[1])
                self._replace(table, op[1], entry)
            elif code == OP_SELECT:
                table = self._table(op[1])
                entries = table.entries
            elif code == OP_FLUSHALL:
                for t in self.dbs:
                    self._wipe(t)
            elif code == OP_FLUSHDB:
                self._wipe(table)
            elif code == OP_SWAPDB:
                m = self.dbmap
                m[op[1]], m[op[2]] = m[op[2]], m[op[1]]
                self.swapped = list(m)
            elif code == OP_MEM_DEL:
                _, ns, key, version, at = op
                self._mem_replace((ns, key), MemEntry(None, version, 0, at, None))
            elif code == OP_MEM_INDEX:
                self._index(op)
            else:
                raise ValueError(f"unknown opcode {code}")
        if not self.first_lsn:
            self.first_lsn = lsn
        self.max_lsn = lsn
        self.records += 1
        self.writes += len(ops)

    def _table(self, db: int) -> DbTable:
        if not 0 <= db < len(self.dbs):
            raise ValueError(f"a record selects database {db}, and this memd has {len(self.dbs)} databases: "
                             f"set `databases` in the [server] section to at least {db + 1}")
        return self.dbs[db]

    def _index(self, op: Op) -> None:
        _, prefix, dims, distance, fields = op
        if dims:
            self.indexes[prefix] = (dims, distance, fields)
            return
        self.indexes[prefix] = None
        self.index_drops.add(prefix)
        for ident, m in self.mem.items():  # the vectors buffered here go with the index
            if m.vectors != () and under(ident[0], prefix):
                self.bytes -= m.size(ident)
                self.vector_bytes -= _blob_bytes(m.vectors)
                m.vectors = ()
                self.bytes += m.size(ident)

    def _mem_replace(self, ident: tuple[str, str], item: MemEntry) -> None:
        old = self.mem.get(ident)
        if old is not None:
            if item.vectors is None and item.version == old.version:
                item.vectors = old.vectors  # a TTL refresh keeps the version's vectors
            self.bytes -= old.size(ident)
            self.vector_bytes -= _blob_bytes(old.vectors)
            item.ended_below = old.ended_below
            item.history = old.history
            item.unstored = old.unstored  # (the store still has nothing of it: this layer has not flushed)
            if old.value is not None and (item.value is None or item.version > old.version):
                # the old version ends here (a TTL refresh re-logs the same version: no end)
                ended = item.updated_at if old.expires_at is None else min(old.expires_at, item.updated_at)
                row = (old.version, old.value, old.created_at, old.updated_at, ended, item.value is None)
                if item.history is None:
                    item.history = [row]
                else:
                    item.history.append(row)
        self.mem[ident] = item
        self.bytes += item.size(ident)
        self.vector_bytes += _blob_bytes(item.vectors)

    def _update(self, table: DbTable, op: Op) -> Entry:
        _, key, type_, create, exp, count, lo, hi, changes = op
        entry = table.entries.get(key)
        if create or entry is None or entry.type != type_:
            fresh = Entry(type_, bool(create))
            fresh.size = ENTRY_COST + len(key)
            self._replace(table, key, fresh)
            entry = fresh
        entry.expires_at = exp
        entry.count = count
        entry.lo = lo
        entry.hi = hi
        if changes:
            elems = entry.elems
            if elems is None:
                elems = entry.elems = {}
            delta = 0
            reset = entry.reset
            order = entry.order
            for sub, value in changes:
                old = elems.get(sub)
                if old is not None:
                    delta -= _elem_size(sub, old)
                    if order is not None and old is not DELETED:
                        order.remove((old, sub))
                if order is not None and value is not None:
                    order.add((value, sub))
                if value is None:
                    if reset:
                        # nothing below to hide: forget the element entirely
                        elems.pop(sub, None)
                        continue
                    value = DELETED
                elems[sub] = value
                delta += _elem_size(sub, value)
            entry.size += delta
            self.bytes += delta
        return entry
