"""Flush rows: what a frozen memtable becomes in the store, as plain tuples (pure: no SQL).

The row shapes are the store's columns in the order its statements take them; each list
is sorted by key (SQLite's B-trees take rows 25-35% faster in key order than at random).
"""

from __future__ import annotations

import heapq
import json
import operator
from collections.abc import Collection
from typing import Any, NamedTuple

from memd.engine.memtable import DELETED, Entry, Memtable, under
from memd.engine.records import T_LIST, T_NONE, T_STRING, T_ZSET
from memd.store.base import list_sub
from memd.store.tokens import index_entry, ns_tokens

Row = tuple[Any, ...]
_KEY = operator.itemgetter(1)
SORT_RUN = 4096  # rows sorted in one C call (the GIL held throughout): see sorted_by_key


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


def flush_rows(table: Memtable, vector_prefixes: Collection[str] = ()) -> FlushRows:
    """Every row a flush writes, by kind, built in ONE pass over a frozen memtable.

    Pure, so it runs in a worker thread off the event loop (the table is immutable once
    frozen) and any store can write these rows with its own statements.
    ``vector_prefixes``: the prefixes of the vector indexes the store holds; a memory
    written without vectors outside them (and this table's) has no stored vectors to
    delete, and gets no statement for them.
    """
    wipes: list[Row] = []
    deletes: list[Row] = []
    upserts: list[Row] = []
    metas: list[Row] = []
    elems: list[Row] = []
    elem_deletes: list[Row] = []
    trims: list[Row] = []
    for db, table_db in enumerate(table.dbs):  # database by database: each list comes out in (db, key) order
        if table_db.flushall:
            wipes.append((db,))
        if table_db.entries:
            _key_rows(db, table_db.entries, deletes, upserts, metas, elems, elem_deletes, trims)
    archives: list[Row] = []
    history: list[Row] = []
    idents: list[Row] = []
    mems: list[Row] = []
    live: list[Row] = []
    vector_deletes: list[Row] = []
    vectors: list[Row] = []
    indexed = (*vector_prefixes, *table.indexes)
    trust_unstored = not table.committed
    for ident, m in table.mem.items():
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
    puts = [(prefix, *spec) for prefix, spec in sorted(table.indexes.items()) if spec is not None]
    dbmap = [] if table.swapped is None else [(json.dumps(table.swapped),)]
    return FlushRows(wipes, wipes, dbmap, deletes, upserts, metas, elems, elem_deletes, trims, archives, idents,
                     history, mems, live,
                     drops, drops, puts, vector_deletes, vectors)


def _key_rows(db: int, entries: dict[bytes, Entry], deletes: list[Row], upserts: list[Row], metas: list[Row],
              elems: list[Row], elem_deletes: list[Row], trims: list[Row]) -> None:
    """One database's key and element rows, appended to the lists in key order."""
    d: list[Row] = []
    u: list[Row] = []
    m: list[Row] = []
    el: list[Row] = []
    ed: list[Row] = []
    t: list[Row] = []
    for k, e in entries.items():  # (memory order: looking each key up in key order took 2x longer)
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
    for rows, out in ((d, deletes), (u, upserts), (m, metas), (el, elems), (ed, elem_deletes), (t, trims)):
        out.extend(sorted_by_key(rows))  # in key order: SQLite's B-trees take them 25-35% faster than at random


def sorted_by_key(rows: list[Row]) -> list[Row]:
    """``rows`` sorted by their key (second field), without holding the GIL for long.

    A flush runs in a worker thread so that the event loop goes on meanwhile, but one
    ``list.sort`` is one C call that keeps the GIL for its whole length: 280,000 rows in
    random key order (a buffer filled by random writes) took 0.28 s, 1,000,000 took 2.3 s,
    and the loop stalled as long. So runs of :data:`SORT_RUN` rows are sorted (~6 ms each
    on a busy 2-core VM) and merged by ``heapq.merge``, Python code between whose steps the
    interpreter hands the GIL over as usual: ~1.6x the CPU of one sort, no stall.
    """
    if len(rows) <= SORT_RUN:
        rows.sort(key=_KEY)
        return rows
    runs = [sorted(rows[i:i + SORT_RUN], key=_KEY) for i in range(0, len(rows), SORT_RUN)]
    return list(heapq.merge(*runs, key=_KEY))
