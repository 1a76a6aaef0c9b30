"""Flush rows: what a frozen memtable becomes in the store, as plain tuples (pure: no SQL).

The row shapes are the store's columns in the order its statements take them; each list
is sorted by key (SQLite's B-trees take rows 25-35% faster in key order than at random).
"""

from __future__ import annotations

import heapq
import itertools
import json
import operator
from collections.abc import Collection, Iterator
from typing import Any, NamedTuple

from memd.engine.memtable import DELETED, Entry, Memtable, under
from memd.engine.records import T_LIST, T_NONE, T_STRING, T_ZSET
from memd.store.base import list_sub
from memd.store.tokens import index_entry, ns_tokens

Row = tuple[Any, ...]
_KEY = operator.itemgetter(1)
SORT_RUN = 2048  # rows sorted in one step (one C call): see sorted_by_key
MERGE_STEP = 2048  # sorted rows merged in one step
KEY_STEP = 1024  # buffered keys turned into rows in one step (~1.5 ms)
MEM_STEP = 128  # memories turned into rows (and their index entries) in one step


class FlushRows(NamedTuple):
    """One flush's rows by kind. The order of the fields is the order they must be written in:

    - key rows before element rows: recreating a key (``gen`` bumped) purges its old
      elements, and only then may the new elements go in;
    - archiving and unindexing a memory before its upsert: they read the row the upsert
      then overwrites; the memtable's own history rows (exact end times) replace what
      archiving inferred for the same version.
    """

    wipe_elems: list[Row]  # (db,): databases flushed (FLUSHDB, FLUSHALL): their elements go first...
    wipe_keys: list[Row]  # (db,): ... then their keys, before anything of this flush is written
    dbmap: list[Row]  # (json,): the map of Redis database numbers to physical ones, when a SWAPDB changed it
    deletes: list[Row]  # (db, key): keys deleted
    upserts: list[Row]  # (db, key, type, value, expires_at, count, lo, hi, reset): keys written whole
    metas: list[Row]  # (db, key, expires_at, count, lo, hi): collections whose elements changed
    elems: list[Row]  # (db, key, sub, value, score): elements written
    elem_deletes: list[Row]  # (db, key, sub): elements removed
    trims: list[Row]  # (db, key, lo_sub, hi_sub): list elements outside [lo, hi) removed
    archives: list[Row]  # (ns, key, ended_at, deleted, version, ends_deleted): stored versions this flush ends
    unindex: list[Row]  # (ns, key, ns_tokens): every memory whose index entry may change (not those unstored)
    history: list[Row]  # (ns, key, version, value, created_at, updated_at, superseded_at, deleted)
    mems: list[Row]  # (ns, key, value, version, created_at, updated_at, expires_at, ttl, fields)
    index: list[Row]  # (ns, key, ns_tokens, text, field_tokens): live memories to index
    vector_drops: list[Row]  # (prefix,): vector indexes dropped here: every vector under them goes first
    index_drops: list[Row]  # (prefix,): ... and the index itself
    index_puts: list[Row]  # (prefix, dims, distance, fields): vector indexes declared
    vector_deletes: list[Row]  # (ns, key): memories whose vectors this flush replaces or removes
    vectors: list[Row]  # (ns, key, path, blob): the vectors of the versions written


def empty_rows() -> FlushRows:
    """A FlushRows of empty lists, for :func:`flush_row_steps` to fill."""
    return FlushRows(*([] for _ in FlushRows._fields))


def flush_rows(table: Memtable, vector_prefixes: Collection[str] = ()) -> FlushRows:
    """Every row a flush writes, by kind (:func:`flush_row_steps` run to its end)."""
    rows = empty_rows()
    for _ in flush_row_steps(table, rows, vector_prefixes):
        pass
    return rows


def flush_row_steps(table: Memtable, out: FlushRows, vector_prefixes: Collection[str] = ()) -> Iterator[None]:
    """Fill ``out`` (from :func:`empty_rows`) with every row a flush writes, by kind, in ONE pass over a
    frozen memtable, yielding about every millisecond of work.

    Pure, and in steps so that the event loop can run it between its other work (the table
    is immutable once frozen; see memd.steps for why not a worker thread), and any store can
    write these rows with its own statements. ``vector_prefixes``: the prefixes of the vector
    indexes the store holds; a memory written without vectors outside them (and this
    table's) has no stored vectors to delete, and gets no statement for them.
    """
    for db, table_db in enumerate(table.dbs):  # database by database: each list comes out in (db, key) order
        if table_db.flushall:
            out.wipe_elems.append((db,))
            out.wipe_keys.append((db,))
        if table_db.entries:
            yield from _key_rows(db, table_db.entries, out)
    archives, history, idents, mems = out.archives, out.history, out.unindex, out.mems
    live, vector_deletes, vectors = out.index, out.vector_deletes, out.vectors
    indexed = (*vector_prefixes, *table.indexes)
    trust_unstored = not table.committed
    for i, (ident, m) in enumerate(table.mem.items()):
        if i % MEM_STEP == MEM_STEP - 1:
            yield
        tokens = ns_tokens(ident[0])
        if not (m.unstored and trust_unstored):  # (new to the store: no row to archive or unindex)
            at, deleted = m.ended_below
            archives.append((*ident, at, deleted, m.version, m.value is None))
            idents.append((*ident, tokens))
        if m.history:
            history.extend((*ident, *h) for h in m.history)
        if m.value is None:
            mems.append((*ident, None, m.version, m.created_at, m.updated_at, m.expires_at, m.ttl, None))
        else:
            fields, text, field_tokens = index_entry(m.value)
            mems.append((*ident, m.value, m.version, m.created_at, m.updated_at, m.expires_at, m.ttl, fields))
            live.append((*ident, tokens, text, field_tokens))
        if m.vectors or (m.vectors is not None and any(under(ident[0], p) for p in indexed)):
            # (None: a TTL refresh; the version's stored vectors stay)
            vector_deletes.append(ident)
            if m.value is not None:
                vectors.extend((*ident, path, blob) for path, blob in m.vectors)
    drops = [(prefix,) for prefix in sorted(table.index_drops)]
    out.vector_drops.extend(drops)
    out.index_drops.extend(drops)
    out.index_puts.extend((prefix, *spec) for prefix, spec in sorted(table.indexes.items()) if spec is not None)
    if table.swapped is not None:
        out.dbmap.append((json.dumps(table.swapped),))


def _key_rows(db: int, entries: dict[bytes, Entry], out: FlushRows) -> Iterator[None]:
    """One database's key and element rows, appended to ``out``'s lists in key order, in steps."""
    d: list[Row] = []
    u: list[Row] = []
    m: list[Row] = []
    el: list[Row] = []
    ed: list[Row] = []
    t: list[Row] = []
    for i, (k, e) in enumerate(entries.items()):  # (memory order: looking each key up in key order took 2x longer)
        if i % KEY_STEP == KEY_STEP - 1:
            yield
        type_ = e.type
        if type_ == T_STRING and e.reset:  # most rows: a string written whole (its count/lo/hi are 0)
            u.append((db, k, T_STRING, e.value, e.expires_at, 0, 0, 0, 1))
            continue
        if type_ == T_NONE:
            d.append((db, k))
            continue
        if e.reset:
            u.append((db, k, type_, e.value, e.expires_at, e.count, e.lo, e.hi, 1))
        else:
            m.append((db, k, e.expires_at, e.count, e.lo, e.hi))
        if type_ == T_LIST:
            lo, hi = list_sub(e.lo), list_sub(e.hi)
            if not e.reset:
                t.append((db, k, lo, hi))
        if not e.elems:
            continue
        zset = type_ == T_ZSET
        for sub, v in e.elems.items():
            if v is DELETED:
                if not e.reset:
                    ed.append((db, k, sub))
            elif type_ == T_LIST and not lo <= sub < hi:
                continue  # a list position trimmed or popped away
            elif zset:
                el.append((db, k, sub, None, v))
            else:
                el.append((db, k, sub, v, None))
    for rows, dest in ((d, out.deletes), (u, out.upserts), (m, out.metas), (el, out.elems), (ed, out.elem_deletes),
                       (t, out.trims)):
        yield from sorted_by_key(rows, dest)  # in key order: SQLite's B-trees take them 25-35% faster than at random


def sorted_by_key(rows: list[Row], out: list[Row]) -> Iterator[None]:
    """Append ``rows`` to ``out`` sorted by their key (second field), in steps.

    One ``list.sort`` is one C call: 280,000 rows in random key order (a buffer filled by
    random writes) took 0.28 s, 1,000,000 took 2.3 s. So runs of :data:`SORT_RUN` rows are
    sorted, a step each, and merged by ``heapq.merge`` :data:`MERGE_STEP` rows a step:
    ~1.6x the CPU of one sort, no step longer than a couple of milliseconds.
    """
    if len(rows) <= SORT_RUN:
        rows.sort(key=_KEY)
        out.extend(rows)
        return
    runs = []
    for i in range(0, len(rows), SORT_RUN):
        runs.append(sorted(rows[i:i + SORT_RUN], key=_KEY))
        yield
    merged = heapq.merge(*runs, key=_KEY)
    while True:
        before = len(out)
        out.extend(itertools.islice(merged, MERGE_STEP))
        if len(out) - before < MERGE_STEP:
            return
        yield
