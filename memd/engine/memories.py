"""Agent memories (``MEM.*``): versioned JSON items under namespaces, over the layered store.

Like :mod:`memd.engine.keyspace`, every method is one synchronous, atomic
step: reads merge the memtables (newest first) over SQLite, and a write
computes its effect and hands the engine one op. Point reads (``get``) and
writes never wait. Searches, namespace listings and history are SQL over
SQLite's FTS5 index and history table; the buffer is not indexed, so those
callers flush first when :meth:`pending` says the buffer holds MEM writes
they could see (see ``memd.commands.memory``) — exact read-your-writes at
the cost of one flush per search that follows a write.

Times are absolute milliseconds since the epoch from the engine's clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from memd.engine.memtable import IndexSpec, Vectors, under
from memd.engine.records import OP_MEM_DEL, OP_MEM_INDEX, OP_MEM_PUT
from memd.store.base import Cond, MemRow, Scope
from memd.store.vectors import DISTANCES, check_vector

if TYPE_CHECKING:
    from memd.engine.engine import Engine

MAX_DIMS = 4096
MAX_VECTORS_PER_PUT = 256
FILTER_OPS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in")
_INT64 = 1 << 63

Put = tuple[str, str, str, int | None, Vectors]  # (ns, key, value JSON text, ttl_ms, vectors): one MEM.PUT


@dataclass(frozen=True, slots=True)
class MemItem:
    """A live memory as reads return it (``score``: search relevance, None elsewhere)."""

    ns: str
    key: str
    value: str  # compact JSON text of an object
    version: int
    created_at: int
    updated_at: int
    expires_at: int | None
    ttl: int | None
    score: float | None = None


@dataclass(frozen=True, slots=True)
class MemVersion:
    """An archived (earlier) version of a memory."""

    version: int
    value: str
    created_at: int
    updated_at: int
    superseded_at: int
    deleted: bool


def _check_scalar(value: Any, field: str) -> None:
    """Integers must fit SQLite's int64; NaN and +/-infinity are valid operands (see store.filters)."""
    if isinstance(value, int) and not isinstance(value, bool) and not -_INT64 <= value < _INT64:
        raise ValueError(f"FILTER value for {field!r} is out of range")


def parse_filter(spec: Any) -> list[Cond]:
    """Validate a decoded FILTER object into conditions; ValueError says what is wrong."""
    if not isinstance(spec, dict):
        raise ValueError("FILTER must be a JSON object of field: value or field: {\"$op\": value}")
    conds: list[Cond] = []
    for field, want in spec.items():
        if isinstance(want, dict) and want and all(isinstance(k, str) and k.startswith("$") for k in want):
            for op, value in want.items():
                conds.append(_operator(field, op, value))
        elif isinstance(want, dict) and any(isinstance(k, str) and k.startswith("$") for k in want):
            raise ValueError(f"FILTER for {field!r} mixes $operators with plain fields")
        else:
            _check_scalar(want, field)
            conds.append((field, "$eq", want))
    return conds


def _operator(field: str, op: str, value: Any) -> Cond:
    if op not in FILTER_OPS:
        raise ValueError(f"unknown FILTER operator {op!r} for {field!r}; use one of {', '.join(FILTER_OPS)}")
    if op == "$in":
        if not isinstance(value, list) or any(isinstance(v, (dict, list)) for v in value):
            raise ValueError(f"FILTER $in for {field!r} needs an array of scalars")
        for v in value:
            _check_scalar(v, field)
    elif op in ("$gt", "$gte", "$lt", "$lte"):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError(f"FILTER {op} for {field!r} needs a number or a string")
        _check_scalar(value, field)
    else:
        _check_scalar(value, field)
    return (field, op, value)


class Memories:
    """MEM.* semantics: versions, TTL, deletes that keep the version count, history, search."""

    def __init__(self, engine: Engine, *, max_value_bytes: int = 1 << 20, history_versions: int = 10,
                 history_max_age_ms: int = 0, vector_max_bytes: int = 0) -> None:
        self.engine = engine
        self.vector_max_bytes = vector_max_bytes  # memory for vectors (0: no limit); a put beyond it is refused
        self.max_value_bytes = max_value_bytes  # callers check values against it (the error names the key)
        self.history_versions = history_versions  # retention: newest N archived versions per key
        self.history_max_age_ms = history_max_age_ms  # retention: archived versions ended this recently (0: any)

    def now_ms(self) -> int:
        return self.engine.now_ms()

    def _current(self, ns: str, key: str) -> MemRow | None:
        """(value, version, created, updated, expires, ttl) from the newest layer that has the item."""
        row = self._buffered((ns, key))
        return self.engine.store.get_mem(ns, key) if row is None else row

    def _buffered(self, ident: tuple[str, str]) -> MemRow | None:
        """The item's row in the newest buffer layer that has it (None: only the store may)."""
        for layer in self.engine.layers():
            m = layer.mem.get(ident)
            if m is not None:
                return (m.value, m.version, m.created_at, m.updated_at, m.expires_at, m.ttl)
        return None

    @staticmethod
    def _alive(ns: str, key: str, row: MemRow | None, now: int) -> MemItem | None:
        """The item, if ``row`` is a value that has not expired."""
        if row is None or row[0] is None or (row[4] is not None and row[4] <= now):
            return None
        return MemItem(ns, key, *row)  # type: ignore[arg-type]

    def _live(self, ns: str, key: str, now: int) -> MemItem | None:
        return self._alive(ns, key, self._current(ns, key), now)

    # ---- reads and writes on one item ----------------------------------------------------

    def get(self, ns: str, key: str, refresh_ttl: bool = False) -> MemItem | None:
        now = self.now_ms()
        item = self._live(ns, key, now)
        if item is not None and refresh_ttl:
            item = self._refresh(item, now)
        return item

    def put(self, ns: str, key: str, value: str, ttl_ms: int | None = None,
            vectors: Vectors = ()) -> int:
        """Store a new version of the item (with exactly ``vectors``); return its version number.

        Raises ValueError, before anything is written, when a vector does not fit the index
        governing ``ns`` or would take memory beyond ``vector_max_bytes``.
        """
        result = self.put_many([(ns, key, value, ttl_ms, vectors)])[0]
        if isinstance(result, ValueError):
            raise result
        return result

    def put_many(self, puts: list[Put]) -> list[int | ValueError]:
        """A run of puts, each as :meth:`put` would do it in turn, written as ONE record.

        Returns each put's version, or the ValueError that refused it (nothing of that put is
        written; the others are). Bulk ingest (pipelined MEM.PUTs) pays one store read for the
        version numbers of the whole run, one WAL record and one memtable pass, instead of two
        point reads and a record per put. A later put of the same item in the run sees the
        earlier one, exactly as it would one command later.
        """
        now = self.now_ms()
        heads: dict[tuple[str, str], tuple[MemRow | None, int]] = {}
        unbuffered = []
        for ns, key, *_ in puts:
            ident = (ns, key)
            if ident in heads:
                continue
            row = self._buffered(ident)
            heads[ident] = (row, 0 if row is None else row[1])
            if row is None:
                unbuffered.append(ident)
        unstored: set[tuple[str, str]] = set()
        if unbuffered:
            stored = self.engine.store.mem_heads(unbuffered)
            heads.update(stored)
            unstored.update(ident for ident, head in stored.items() if head == (None, 0))
        results: list[int | ValueError] = []
        ops = []
        new_vector_bytes = 0
        for ns, key, value, ttl_ms, vectors in puts:
            if vectors:
                try:
                    new_vector_bytes += self.check_vectors(ns, vectors, new_vector_bytes)
                except ValueError as exc:
                    results.append(exc)
                    continue
            ident = (ns, key)
            cur, last = heads[ident]
            created = now
            if cur is not None:
                last = cur[1]
                live = self._alive(ns, key, cur, now)
                if live is not None:
                    created = live.created_at
            version = last + 1
            expires = None if ttl_ms is None else now + ttl_ms
            op = (OP_MEM_PUT, ns, key, value, version, created, now, expires, ttl_ms)
            ops.append((*op, vectors) if vectors else op)
            heads[ident] = ((value, version, created, now, expires, ttl_ms), version)
            results.append(version)
        self.engine.apply(ops)
        if unstored and ops:
            self._mark_unstored(unstored)
        return results

    def _mark_unstored(self, idents: set[tuple[str, str]]) -> None:
        """Tell the flush that these items, just written, have nothing in the store (MemEntry.unstored).

        Only from the read that numbered their versions: the store had no row of them and no
        buffer layer held them, so nothing but this layer's own flush can store them.
        """
        mem = self.engine.layers()[0].mem  # (apply wrote to the active layer; a freeze comes later)
        for ident in idents:
            m = mem.get(ident)
            if m is not None:
                m.unstored = True

    def delete(self, ns: str, key: str) -> bool:
        now = self.now_ms()
        item = self._live(ns, key, now)
        if item is None:
            return False
        self.engine.apply([(OP_MEM_DEL, ns, key, item.version, now)])
        return True

    def _refresh(self, item: MemItem, now: int) -> MemItem:
        """Restart the item's TTL (same version, same value): LangGraph's refresh_ttl."""
        if item.ttl is None:
            return item
        expires = now + item.ttl
        self.engine.apply([(OP_MEM_PUT, item.ns, item.key, item.value, item.version, item.created_at,
                            item.updated_at, expires, item.ttl, None)])  # None: the version keeps its vectors
        return MemItem(item.ns, item.key, item.value, item.version, item.created_at, item.updated_at, expires,
                       item.ttl, item.score)

    # ---- vector indexes ----------------------------------------------------------------------

    def indexes(self) -> dict[str, IndexSpec]:
        """The vector indexes declared, buffered changes included: prefix -> (dims, distance, fields)."""
        specs = self.engine.store.vector_indexes()
        for layer in reversed(self.engine.layers()):  # oldest first: the newest change wins
            for prefix, spec in layer.indexes.items():
                if spec is None:
                    specs.pop(prefix, None)
                else:
                    specs[prefix] = spec
        return specs

    def index_for(self, ns: str) -> tuple[str, IndexSpec] | None:
        """The vector index governing namespace ``ns`` (indexes never nest: at most one)."""
        return next(((p, spec) for p, spec in self.indexes().items() if under(ns, p)), None)

    def vector_count(self, prefix: str) -> int:
        """Vectors an index holds: stored ones, plus those buffered under its prefix."""
        n = 0 if self._dropped_in_buffer(prefix) else self.engine.store.vector_stats(prefix)[0]
        for layer in self.engine.layers():
            n += sum(len(m.vectors) for (ns, _), m in layer.mem.items() if m.vectors and under(ns, prefix))
        return n

    def index_stats(self, prefix: str) -> tuple[int, int, int, bool]:
        """(vectors, memories, bytes in memory, ANN in use) of an index, as flushed."""
        return self.engine.store.vector_stats(prefix)

    def _dropped_in_buffer(self, prefix: str) -> bool:
        return any(prefix in layer.index_drops for layer in self.engine.layers())

    def create_index(self, prefix: str, dims: int, distance: str, fields: str) -> bool:
        """Declare (or change) the vector index of ``prefix``; False when it already is exactly that.

        ValueError: a bad spec, an index nesting with another, or a change of DIMS or
        DISTANCE while the index holds vectors (vectors of another model would be compared).
        """
        if not 1 <= dims <= MAX_DIMS:
            raise ValueError(f"DIMS must be an integer between 1 and {MAX_DIMS}")
        if distance not in DISTANCES:
            raise ValueError(f"DISTANCE must be one of {', '.join(DISTANCES)}")
        specs = self.indexes()
        old = specs.get(prefix)
        if old == (dims, distance, fields):
            return False
        for other in specs:
            if other != prefix and (under(other, prefix) or under(prefix, other)):
                raise ValueError(f"vector index prefix {prefix!r} nests with the index on {other!r}: a namespace "
                                 "belongs to one index at most (MEM.INDEX DROP one of them first)")
        if old is not None and old[:2] != (dims, distance):
            held = self.vector_count(prefix)
            if held:
                raise ValueError(f"index {prefix!r} holds {held} vectors of DIMS {old[0]} DISTANCE {old[1]}; "
                                 "MEM.INDEX DROP it and re-embed (docs/memory.md)")
        self.engine.apply([(OP_MEM_INDEX, prefix, dims, distance, fields)])
        return True

    def drop_index(self, prefix: str) -> bool:
        """Drop the vector index of ``prefix`` and the vectors of every memory under it (not the memories)."""
        if prefix not in self.indexes():
            return False
        self.engine.apply([(OP_MEM_INDEX, prefix, 0, None, None)])
        return True

    def check_vectors(self, ns: str, vectors: Vectors, pending: int = 0) -> int:
        """ValueError unless ``vectors`` may go with a put to ``ns`` (see :meth:`put`); else their bytes.

        ``pending``: vector bytes of earlier puts in the same run, not applied yet.
        """
        found = self.index_for(ns)
        if found is None:
            raise ValueError(f"no vector index covers namespace {ns!r}: declare one with MEM.INDEX CREATE")
        prefix, (dims, distance, _) = found
        if len(vectors) > MAX_VECTORS_PER_PUT:
            raise ValueError(f"at most {MAX_VECTORS_PER_PUT} vectors per memory")
        paths = set()
        for path, blob in vectors:
            if path in paths:
                raise ValueError(f"VECTOR path {path!r} given twice")
            paths.add(path)
            try:
                check_vector(blob, dims, distance)
            except ValueError as exc:
                raise ValueError(f"VECTOR {path!r}: {exc} (index {prefix!r})") from None
        new = sum(len(blob) for _, blob in vectors)
        if self.vector_max_bytes:
            used = self.vector_bytes() + pending
            if used + new > self.vector_max_bytes:
                raise ValueError(f"vectors take {used} bytes and this put adds {new}: memory.vector_max_bytes is "
                                 f"{self.vector_max_bytes} (raise it, or drop vectors no longer needed)")
        return new

    def vector_bytes(self) -> int:
        """Memory taken by vectors: the in-memory indexes, and the vectors still in the buffer."""
        return self.engine.store.vector_bytes() + sum(layer.vector_bytes for layer in self.engine.layers())

    def index_pending(self) -> bool:
        """Whether the buffer holds vector index changes (a search or a listing flushes them first)."""
        return any(layer.indexes for layer in self.engine.layers())

    # ---- queries over SQLite (callers flush first when pending() says so) ------------------

    def pending(self, prefix: str) -> bool:
        """Whether the buffer holds MEM writes to namespaces under ``prefix``."""
        return any(under(ns, prefix) for layer in self.engine.layers() for ns, _ in layer.mem)

    def pending_item(self, ns: str, key: str) -> bool:
        return any((ns, key) in layer.mem for layer in self.engine.layers())

    async def search(self, prefix: str, query: str | None, conds: list[Cond], limit: int, offset: int,
                     refresh_ttl: bool = False, scope: Scope = (), vector: Any = None) -> list[MemItem]:
        """Ranked live items under ``prefix``; the buffer must hold nothing :meth:`pending` under it.

        ``scope``: (prefix, readable) pairs, longest first; unreadable namespaces are left out.
        ``vector`` (checked by :meth:`query_vector`): nearest first, or fused with ``query``.
        The SQL runs in a worker thread: ranking many matches takes milliseconds.
        """
        rows = await self.engine.store.search_mem(prefix, query, conds, limit, offset, self.now_ms(), scope,
                                                  vector=vector)
        return self._found(rows, refresh_ttl)

    def _found(self, rows: list[Any], refresh_ttl: bool) -> list[MemItem]:
        items = [MemItem(*row) for row in rows]
        if refresh_ttl:
            now = self.now_ms()
            items = [self._refresh_if_current(item, now) for item in items]
        return items

    def _refresh_if_current(self, item: MemItem, now: int) -> MemItem:
        """Refresh a search hit's TTL unless a newer write (made while a flush ran) superseded it."""
        live = self._live(item.ns, item.key, now)
        if live is None or live.version != item.version or live.expires_at != item.expires_at:
            return item
        return self._refresh(item, now)

    def query_vector(self, prefix: str, blob: bytes) -> Any:
        """The search vector as the index covering ``prefix`` takes it; ValueError if none covers it."""
        found = self.index_for(prefix)  # (the index a namespace prefix is under covers all of it)
        if found is None:
            raise ValueError(f"no vector index covers namespace prefix {prefix!r} (MEM.INDEX LIST shows them)")
        dims, distance, _ = found[1]
        try:
            return check_vector(blob, dims, distance)
        except ValueError as exc:
            raise ValueError(f"VECTOR: {exc} (index {found[0]!r})") from None

    async def namespaces(self, prefix: str) -> list[str]:
        """Sorted namespaces under ``prefix`` with a live item (flush pending writes first).

        In a worker thread: a DISTINCT over every memory under the prefix.
        """
        return await self.engine.store.mem_namespaces(prefix, self.now_ms())

    def history(self, ns: str, key: str, limit: int | None = None) -> list[MemVersion]:
        """Earlier versions newest first, within retention (flush the item's pending writes first).

        A current version that has expired is an earlier version too (ended at its expiry):
        shown here before compaction archives it, so the answer does not depend on when
        compaction ran.
        """
        now = self.now_ms()
        since = now - self.history_max_age_ms if self.history_max_age_ms else 0
        rows = self.engine.store.mem_history(ns, key, self.history_versions, since, limit)
        versions = [MemVersion(v, value, c, u, s, bool(d)) for v, value, c, u, s, d in rows]
        cur = self._current(ns, key)
        if cur is not None and cur[0] is not None and cur[4] is not None and since < cur[4] <= now:
            versions.insert(0, MemVersion(cur[1], cur[0], cur[2], cur[3], cur[4], False))
        n = self.history_versions if limit is None else min(self.history_versions, limit)
        return versions[:n]
