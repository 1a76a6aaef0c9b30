"""SQLite behind the engine: schema, migrations, batch flush, point reads.

Two connections, two jobs:

- the *writer* (aiosqlite, its own thread) runs one flush transaction at a
  time: ``BEGIN IMMEDIATE``, every change of a frozen memtable plus the
  flushed LSN, ``COMMIT`` with ``synchronous=FULL`` so the commit is durable
  before the WAL segments it covers are deleted;
- the *reader* (plain ``sqlite3``, on the event-loop thread) answers point
  reads in microseconds. In WAL journal mode it never waits for the writer,
  and being synchronous it lets a read-modify-write command run start to
  finish without an ``await`` — which is what makes every command atomic.

Keys of every type live in ``keys``; collection elements in ``elems`` keyed
by ``(key, sub)``. Triggers purge a key's elements when the key is deleted or
recreated (``gen`` bumped), so the flush writes one row per changed key and
SQLite does the cascading in C.

This module is the only one that speaks SQL; a second backend would replace
it behind the same small surface (``open``, ``close``, the ``get_*``/``scan``
reads, ``flush``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import operator
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import aiosqlite
import anyio

from memd.engine.memtable import DELETED, Memtable
from memd.engine.records import T_LIST, T_NONE, T_STRING, T_ZSET
from memd.errors import QueryError, StoreError

log = logging.getLogger("memd.store")

_csqlite: Any
_csqlite_error = ""
try:
    from memd import _sqlite as _csqlite  # C: FTS5 ranking, GIL-free executemany; optional (pyproject.toml)
except ImportError as _exc:  # no compiler or SQLite headers at install time
    _csqlite = None
    _csqlite_error = str(_exc)

SCHEMA_VERSION = 4
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024
BUSY_TIMEOUT_MS = 5000
READER_CACHE_KIB = 64 * 1024
SEARCH_MAX_CANDIDATES = 20_000  # beyond this a second try costs more than ranking and joining every match
SEARCH_THREADS = 2  # concurrent slow reads (searches) off the event loop; more would only queue for the cores
READER_MMAP_BYTES = 256 << 20  # file-backed pages count in RSS: keep the watchdog's view bounded

# The keys table's columns, and the triggers that purge a collection's elements when its key is
# deleted or recreated: v1 creates them, v4 rebuilds the table around them.
_KEYS_COLUMNS = """
    key BLOB PRIMARY KEY,
    type INTEGER NOT NULL,
    value BLOB,
    expires_at INTEGER,
    count INTEGER NOT NULL DEFAULT 0,
    lo INTEGER NOT NULL DEFAULT 0,
    hi INTEGER NOT NULL DEFAULT 0,
    gen INTEGER NOT NULL DEFAULT 0
"""
_KEYS_INDEX_AND_TRIGGERS = """CREATE INDEX keys_expiry ON keys (expires_at) WHERE expires_at IS NOT NULL;
CREATE TRIGGER keys_purge_on_delete AFTER DELETE ON keys WHEN old.type > 1
BEGIN DELETE FROM elems WHERE key = old.key; END;
CREATE TRIGGER keys_purge_on_reset AFTER UPDATE OF gen ON keys WHEN old.type > 1 AND new.gen != old.gen
BEGIN DELETE FROM elems WHERE key = old.key; END;
"""

_V1 = f"""
CREATE TABLE meta (name TEXT PRIMARY KEY, value);
CREATE TABLE keys ({_KEYS_COLUMNS});
CREATE TABLE elems (
    key BLOB NOT NULL,
    sub BLOB NOT NULL,
    value BLOB,
    score REAL,
    PRIMARY KEY (key, sub)
);
CREATE INDEX elems_score ON elems (key, score, sub) WHERE score IS NOT NULL;
{_KEYS_INDEX_AND_TRIGGERS}CREATE TABLE mem_items (
    ns TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT,
    version INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    expires_at INTEGER,
    PRIMARY KEY (ns, key)
);
INSERT INTO meta (name, value) VALUES ('flushed_lsn', 0);
"""

# The text FTS5 indexes for a memory: its JSON's string values at any depth, not its field names.
_TEXT_OF = "(SELECT group_concat(t.value, ' ') FROM json_tree({}) AS t WHERE t.type = 'text')"

# v2: agent memory (MEM.*): TTL durations, version history, full-text search. The FTS table is
# contentless (the JSON stays in mem_items only) and keyed by mem_items' rowid. The flush keeps
# it in step with single-row VALUES statements, not triggers: FTS5 flushes its pending terms at
# every statement savepoint, and a trigger (or INSERT ... SELECT) opens one per row, which
# measured 4x slower (169 vs 38 us per 1 KB memory).
_V2 = f"""
ALTER TABLE mem_items ADD COLUMN ttl INTEGER;
CREATE INDEX mem_items_updated ON mem_items (updated_at);
CREATE INDEX mem_items_expiry ON mem_items (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE mem_history (
    ns TEXT NOT NULL,
    key TEXT NOT NULL,
    version INTEGER NOT NULL,
    value TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    superseded_at INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    PRIMARY KEY (ns, key, version)
) WITHOUT ROWID;
CREATE INDEX mem_history_age ON mem_history (superseded_at);
CREATE VIRTUAL TABLE mem_fts USING fts5 (body, ns, content='', tokenize='porter unicode61 remove_diacritics 2');
INSERT INTO mem_fts (rowid, body, ns) SELECT m.rowid, coalesce({_TEXT_OF.format("m.value")}, ''), memd_ns_tokens(m.ns) FROM mem_items AS m WHERE m.value IS NOT NULL;
"""

# A memory's FILTER view: its top-level members, with every value ``fields`` cannot hold exactly and
# cheaply (objects, arrays, fractional reals, booleans, null, numbers beyond 2^53, strings over 64
# characters) replaced by the placeholder ``[]``; an integral real is kept as the integer it equals
# (5.0 as 5: FILTER compares numbers by value, and a FILTER token for 5 must find it). A filter
# reads this ~60-byte object instead of parsing the whole ~1 KB value (3.6 us per json_extract of
# the value, measured), and goes to the value only for a placeholder. A value SQLite cannot parse
# is kept whole, so a filter fails on it as it always did.
_FIELDS_OF = """CASE WHEN {v} IS NULL THEN NULL WHEN NOT json_valid({v}) THEN {v} ELSE (
    SELECT json_group_object(e.key, CASE
        WHEN e.type = 'integer' AND e.value BETWEEN -9007199254740991 AND 9007199254740991 THEN e.value
        WHEN e.type = 'real' AND e.value BETWEEN -9007199254740991 AND 9007199254740991
            AND e.value = CAST(e.value AS INTEGER) THEN CAST(e.value AS INTEGER)
        WHEN e.type = 'text' AND length(e.value) <= 64 THEN e.value
        ELSE json_array() END)
    FROM json_each({v}) AS e) END"""  # (BETWEEN, not abs(): abs(-2^63) is an SQL error, and -2^63 valid JSON)

# v3: the ``fields`` column (above), for every memory already stored; an index that answers a filter
# search under a prefix without reading a single ~1 KB row it then rejects (a rare filter over 10,000
# memories: 26 ms through the primary key and the rows, 13 ms through this index); and the FTS index
# rebuilt with a third column ``f``: a token per (field, value) ``fields`` holds exactly, so an
# equality FILTER narrows a search inside FTS5 (see field_tokens).
_V3 = f"""
ALTER TABLE mem_items ADD COLUMN fields TEXT;
UPDATE mem_items SET fields = {_FIELDS_OF.format(v="mem_items.value")} WHERE value IS NOT NULL;
CREATE INDEX mem_items_filter ON mem_items (ns, updated_at, key, expires_at, fields) WHERE value IS NOT NULL;
DROP TABLE mem_fts;
CREATE VIRTUAL TABLE mem_fts USING fts5 (body, ns, f, content='', tokenize='porter unicode61 remove_diacritics 2');
INSERT INTO mem_fts (rowid, body, ns, f) SELECT m.rowid, CASE WHEN json_valid(m.value) THEN coalesce({_TEXT_OF.format("m.value")}, '') ELSE '' END, memd_ns_tokens(m.ns), memd_field_tokens(m.fields) FROM mem_items AS m WHERE m.value IS NOT NULL
"""

# v4: ``keys`` becomes a WITHOUT ROWID table, clustered on its key. A rowid table with a BLOB
# primary key is two B-trees (the rows by rowid, and the key's index), and every flushed key went
# into both. Raw executemany of 1,000,000 200-byte rows in batches of 100,000: 117k -> 166k rows/s
# in key order, 83k -> 108k at random. Nothing refers to the rowid of ``keys``.
_V4 = f"""
DROP TRIGGER keys_purge_on_delete;
DROP TRIGGER keys_purge_on_reset;
DROP INDEX keys_expiry;
CREATE TABLE keys_v4 ({_KEYS_COLUMNS}) WITHOUT ROWID;
INSERT INTO keys_v4 (key, type, value, expires_at, count, lo, hi, gen)
    SELECT key, type, value, expires_at, count, lo, hi, gen FROM keys;
DROP TABLE keys;
ALTER TABLE keys_v4 RENAME TO keys;
{_KEYS_INDEX_AND_TRIGGERS}"""

# Each entry upgrades the schema from version i to i+1 (index 0: empty -> 1).
MIGRATIONS: list[str] = [_V1, _V2, _V3, _V4]

_UPSERT_KEY = """
INSERT INTO keys (key, type, value, expires_at, count, lo, hi, gen) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0)
ON CONFLICT (key) DO UPDATE SET type = excluded.type, value = excluded.value, expires_at = excluded.expires_at,
    count = excluded.count, lo = excluded.lo, hi = excluded.hi, gen = keys.gen + ?8
"""
_UPDATE_META = "UPDATE keys SET expires_at = ?2, count = ?3, lo = ?4, hi = ?5 WHERE key = ?1"
_DELETE_KEY = "DELETE FROM keys WHERE key = ?"
_UPSERT_ELEM = "INSERT OR REPLACE INTO elems (key, sub, value, score) VALUES (?, ?, ?, ?)"
_DELETE_ELEM = "DELETE FROM elems WHERE key = ? AND sub = ?"
_TRIM_LIST = "DELETE FROM elems WHERE key = ?1 AND (sub < ?2 OR sub >= ?3)"
# An UPSERT, not INSERT OR REPLACE: REPLACE would give the row a new rowid behind the index's back.
_UPSERT_MEM = f"""
INSERT INTO mem_items (ns, key, value, version, created_at, updated_at, expires_at, ttl, fields)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, {_FIELDS_OF.format(v="?3")})
ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value, version = excluded.version,
    created_at = excluded.created_at, updated_at = excluded.updated_at, expires_at = excluded.expires_at,
    ttl = excluded.ttl, fields = excluded.fields
"""
# The version SQLite holds goes to history when this flush ends it: ?3 when, ?4 by a delete,
# ?5 the memtable's version, ?6 whether the memtable ends with a delete (same version then).
# A version that expired first ended at its expiry, not by the delete.
_ARCHIVE_MEM = """
INSERT OR REPLACE INTO mem_history (ns, key, version, value, created_at, updated_at, superseded_at, deleted)
SELECT ns, key, version, value, created_at, updated_at,
    CASE WHEN expires_at IS NOT NULL AND expires_at < ?3 THEN expires_at ELSE ?3 END,
    CASE WHEN expires_at IS NOT NULL AND expires_at < ?3 THEN 0 ELSE ?4 END
FROM mem_items WHERE ns = ?1 AND key = ?2 AND value IS NOT NULL AND (version < ?5 OR ?6)
"""
# The live row's index entry, in and out. Contentless FTS5 deletes by replaying the exact text
# indexed, so both sides compute it with the same SQL; with no live row both values are NULL,
# which FTS5 takes as a no-op.
_LIVE_MEM = "FROM mem_items AS m WHERE m.ns = ?1 AND m.key = ?2 AND m.value IS NOT NULL"
# (json_valid: a value SQLite's JSON functions refuse is indexed as no text, rather than failing the flush)
_FTS_ROW = (f"(SELECT m.rowid {_LIVE_MEM}), "
            f"(SELECT CASE WHEN json_valid(m.value) THEN coalesce({_TEXT_OF.format('m.value')}, '') ELSE '' END "
            f"{_LIVE_MEM}), "
            f"(SELECT ?3 {_LIVE_MEM}), "
            f"(SELECT memd_field_tokens(m.fields) {_LIVE_MEM})")
_UNINDEX_MEM = f"INSERT INTO mem_fts (mem_fts, rowid, body, ns, f) VALUES ('delete', {_FTS_ROW})"
_INDEX_MEM = f"INSERT INTO mem_fts (rowid, body, ns, f) VALUES ({_FTS_ROW})"


def ns_tokens(ns: str) -> str:
    """FTS tokens for a namespace and each of its label prefixes (``a``, ``a.b``...).

    The ``ns`` column lets a search under a prefix intersect posting lists in
    FTS5 instead of ranking every match and filtering afterwards: 2-4x faster
    for common words when the prefix holds a tenth of the memories. Hashes,
    because the tokenizer would split labels at '-' and '.'.
    """
    labels = ns.split(".")
    return " ".join(_prefix_token(".".join(labels[:i])) for i in range(1, len(labels) + 1))


def _prefix_token(prefix: str) -> str:
    return "n" + hashlib.blake2b(prefix.encode(), digest_size=8).hexdigest()


def _kept(value: Any) -> str | int | None:
    """What ``fields`` holds for a memory whose field equals ``value`` (see _FIELDS_OF); None: the placeholder."""
    if isinstance(value, str):
        return value if len(value) <= _FIELDS_MAX_TEXT else None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer() \
            and abs(value) < _SAFE_INT:
        return int(value)
    return None


def _field_token(field: str, value: str | int) -> str:
    kind = "s" if isinstance(value, str) else "i"
    return "f" + hashlib.blake2b(f"{field}\0{kind}{value}".encode(), digest_size=8).hexdigest()


def field_tokens(fields: str | None) -> str:
    """FTS tokens for the ``f`` column: one per top-level field ``fields`` holds exactly.

    With them an equality FILTER becomes posting lists FTS5 intersects with the query
    (and the namespace prefix), so a rare filter on a common word ranks a few hundred
    matches instead of tens of thousands and checks each against the filter. The SQL
    condition stays the judge; tokens only narrow. A value ``fields`` could not parse
    (kept whole, see _FIELDS_OF) gets none.
    """
    if not fields:
        return ""
    try:
        members = json.loads(fields)
    except ValueError:
        return ""
    if not isinstance(members, dict):
        return ""
    return " ".join(_field_token(k, v) for k, v in members.items() if _kept(v) is not None)


def _filter_match(conds: list[Cond]) -> str:
    """FTS5 terms on the ``f`` column that every memory matching ``conds`` has ('' if none)."""
    terms = []
    for field, op, value in conds:
        if op not in ("$eq", "$in"):
            continue
        kept = [_kept(v) for v in (value if op == "$in" else [value])]
        if kept and all(k is not None for k in kept):  # not when a value is one fields does not keep
            terms.append("f : (" + " OR ".join(_field_token(field, k) for k in kept if k is not None) + ")")
    return " AND ".join(terms)


_TOMBSTONE_MEM = ("UPDATE mem_items SET value = NULL, fields = NULL, updated_at = expires_at, expires_at = NULL, "
                  "ttl = NULL "
                  "WHERE ns = ? AND key = ?")
# Retention: the newest ?1 archived versions of each memory, and none that ended before ?2.
_PRUNE_HISTORY = """
DELETE FROM mem_history WHERE superseded_at < ?2 OR (ns, key, version) IN (
    SELECT ns, key, version FROM (
        SELECT ns, key, version, row_number() OVER (PARTITION BY ns, key ORDER BY version DESC) AS n
        FROM mem_history) WHERE n > ?1)
"""
_HISTORY_MEM = """
INSERT OR REPLACE INTO mem_history (ns, key, version, value, created_at, updated_at, superseded_at, deleted)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
"""

T = TypeVar("T")
KeyRow = tuple[int, bytes | None, int | None, int, int, int]  # type, value, expires_at, count, lo, hi
MemRow = tuple[str | None, int, int, int, int | None, int | None]  # value, version, created, updated, expires, ttl
Cond = tuple[str, str, Any]  # a MEM.SEARCH filter: (top-level field, $op, JSON value)
SearchRow = tuple[str, str, str, int, int, int, int | None, int | None, float | None]
_SEARCH_COLUMNS = "i.ns, i.key, i.value, i.version, i.created_at, i.updated_at, i.expires_at, i.ttl"  # SearchRow[:8]


_SQL_OPS = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
_JSON_CLASS = {dict: "'object'", list: "'array'", str: "'text'"}


Scope = tuple[tuple[str, bool], ...]  # (namespace prefix, readable), longest prefix first
# One index range, [prefix, prefix + '/'), then the exact test: the namespace itself or "prefix.*"
# ('/' follows '.'; the range also holds "prefix-x", which the test drops). An OR of the two at the
# top level would make SQLite read two ranges through the primary key and miss the covering index.
_UNDER = "(i.ns >= ? AND i.ns < ? AND (i.ns = ? OR i.ns > ?))"


def _under_params(prefix: str) -> list[str]:
    return [prefix, prefix + "/", prefix, prefix + "."]


def _scope_sql(scope: Scope) -> tuple[str, list[Any]]:
    """Readable or not by the longest covering prefix, as in the access rules; uncovered: readable."""
    whens = " ".join(f"WHEN {_UNDER} THEN ?" for _ in scope)
    return f"(CASE {whens} ELSE 1 END)", [p for prefix, ok in scope for p in (*_under_params(prefix), int(ok))]


def _field(field: str) -> tuple[str, str, str]:
    """SQL for a top-level field's JSON type and value, and the parameter both take.

    A JSON path (fast) for names JSON stores unescaped; SQLite's paths compare
    the raw, escaped key text and cannot quote a '"', so other names go
    through json_each, whose ``key`` column is unescaped.
    """
    if '"' in field or "\\" in field or any(ord(c) < 0x20 for c in field):
        return ("(SELECT type FROM json_each(i.value) WHERE key = ?)",
                "(SELECT value FROM json_each(i.value) WHERE key = ?)", field)
    return "json_type(i.value, ?)", "json_extract(i.value, ?)", '$."' + field + '"'


def _eq_sql(field: str, value: Any) -> tuple[str, list[Any]]:
    """JSONB-like equality of a top-level field with a JSON value: same JSON type, same value."""
    t, v, p = _field(field)
    if value is None:  # JSON null, or no such field
        return f"coalesce({t}, 'null') = 'null'", [p]
    if value is True or value is False:
        return f"{t} = ?", [p, "true" if value else "false"]
    if isinstance(value, (int, float)):
        return f"({t} IN ('integer', 'real') AND {v} = ?)", [p, p, value]
    if isinstance(value, str):
        return f"({t} = 'text' AND {v} = ?)", [p, p, value]
    # CASE, not AND: inside NOT/coalesce SQLite evaluates both sides of an AND, and a string
    # (json_extract gives its bare text) would reach memd_json_eq, which parses JSON
    return (f"(CASE WHEN {t} = {_JSON_CLASS[type(value)]} THEN memd_json_eq({v}, ?) ELSE 0 END)",
            [p, p, json.dumps(value)])


def _value_cond_sql(cond: Cond) -> tuple[str, list[Any]]:
    """A filter condition read from the memory's whole JSON value (``i.value``)."""
    field, op, value = cond
    if op == "$eq":
        return _eq_sql(field, value)
    if op == "$ne":
        sql, params = _eq_sql(field, value)
        return f"NOT coalesce({sql}, 0)", params
    if op == "$in":
        if not value:
            return "0", []
        parts = [_eq_sql(field, x) for x in value]
        return "(" + " OR ".join(part[0] for part in parts) + ")", [x for part in parts for x in part[1]]
    t, v, p = _field(field)
    kind = "'text'" if isinstance(value, str) else "'integer', 'real'"
    return f"({t} IN ({kind}) AND {v} {_SQL_OPS[op]} ?)", [p, p, value]


_SAFE_INT = 1 << 53  # the bound _FIELDS_OF keeps integers under
_FIELDS_MAX_TEXT = 64  # and the longest string it keeps


def _member(rendered: str, params: list[Any], then: str = "") -> tuple[str, list[Any]]:
    """Whether ``i.fields`` holds the member ``rendered`` (SQL for its text, e.g. ``"k":"v"``) at the top level.

    A substring test, exact because of how ``fields`` is written (flat: nested values are the
    placeholder) and because the field name holds no quote or backslash (callers ensure it):
    preceded by '{' or ',', a '"' can only open a member's name, and a quote inside a string
    is always escaped. ``then`` is what must follow (',' or '}' after a number). instr() on a
    ~60-byte string costs a fraction of what parsing it as JSON does (about 1 us a call).
    """
    tests = [f"instr(i.fields, '{lead}' || {rendered}{f' || {follow!r}' if follow else ''})"
             for lead in "{," for follow in (then or [""])]
    return "(" + " OR ".join(tests) + ")", params * len(tests)


def _fields_eq(field: str, value: Any) -> tuple[str, list[Any]]:
    """``fields`` holds ``field`` equal to ``value``: SQL, params (always false for values it never holds)."""
    kept = _kept(value)
    if isinstance(kept, str):
        return _member("json_quote(?) || ':' || json_quote(?)", [field, kept])
    if kept is not None:
        return _member("json_quote(?) || ':' || ?", [field, str(kept)], then=",}")
    return "0", []


def _cond_sql(cond: Cond) -> tuple[str, list[Any]]:
    """A filter condition, read from ``i.fields`` and from ``i.value`` only where that holds a placeholder.

    Equality tests are substring tests on the ~60-byte ``fields`` (see :func:`_member`);
    ranges parse it as JSON. Either way the ~1 KB value is parsed only for a placeholder.
    Filter-only search over 10,000 memories under a prefix with a 0.4% filter: 45 -> 13 ms.
    """
    field, op, value = cond
    if '"' in field or "\\" in field or any(ord(c) < 0x20 for c in field):
        return _value_cond_sql(cond)  # not expressible as a JSON path: the value's json_each does it
    placeholder = _member("json_quote(?) || ':[]'", [field])
    if op in ("$eq", "$ne", "$in"):
        values = value if op == "$in" else [value]
        hits = [_fields_eq(field, x) for x in values]
        exact_sql, exact_params = _value_cond_sql((field, "$in", values))
        whens = " ".join(f"WHEN {sql} THEN 1" for sql, _ in hits if sql != "0")
        if None in values:  # null matches a missing field; a JSON null itself is a placeholder
            present = _member("json_quote(?) || ':'", [field])
            other, other_params = f"NOT {present[0]}", present[1]
        else:
            other, other_params = "0", []
        sql = (f"CASE {whens} WHEN {placeholder[0]} THEN coalesce({exact_sql}, 0) ELSE {other} END")
        params = [*(x for sql_, ps in hits if sql_ != "0" for x in ps), *placeholder[1], *exact_params,
                  *other_params]
        return (f"NOT {sql}" if op == "$ne" else sql), params
    exact_sql, exact_params = _value_cond_sql(cond)
    path = '$."' + field + '"'
    if isinstance(value, str):
        kept = "t GLOB '\"*' THEN json_extract(t, '$')"
    else:
        kept = "t GLOB '[-0-9]*' THEN CAST(t AS INTEGER)"
    return (f"(SELECT CASE WHEN t = '[]' THEN coalesce({exact_sql}, 0) WHEN {kept} {_SQL_OPS[op]} ? ELSE 0 END "
            "FROM (SELECT i.fields -> ? AS t))", [*exact_params, value, path])


def json_equal(a: Any, b: Any) -> bool:
    """Deep JSON equality where true is not 1 (PostgreSQL JSONB's rule, not Python's)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(json_equal, a, b))
    if isinstance(a, (int, float)):
        return isinstance(b, (int, float)) and a == b
    return type(a) is type(b) and a == b


RECENT_FIRST_BUDGET_SECONDS = 0.004


def _recent_first(reader: sqlite3.Connection, sql: str, params: list[Any]) -> list[Any] | None:
    """Try a no-query search under a prefix by walking the recency index; None if it takes too long.

    Two plans, each bad where the other is good: walking ``updated_at``
    newest first stops after LIMIT matches (fast when matches are common,
    slow when they are rare), while reading the whole prefix by key and
    sorting costs the prefix's size every time. ``+i.ns`` steers SQLite to
    the first; a progress handler gives up on it after a few milliseconds
    and the caller runs the second. Worst case: the budget plus the second.
    """
    deadline = time.perf_counter() + RECENT_FIRST_BUDGET_SECONDS
    reader.set_progress_handler(lambda: time.perf_counter() > deadline, 2000)
    try:
        return reader.execute(sql, params).fetchall()
    except sqlite3.OperationalError as exc:
        if "interrupt" not in str(exc):
            raise
        return None
    finally:
        reader.set_progress_handler(None, 0)


def _json_eq(a: str | None, b: str | None) -> int:
    return int(a is not None and b is not None and json_equal(json.loads(a), json.loads(b)))


def list_sub(pos: int) -> bytes:
    """A list position as a sub-key that sorts like the integer (offset binary)."""
    return (pos + (1 << 63)).to_bytes(8, "big")


def _main_file(conn: sqlite3.Connection) -> str:
    """The file name SQLite reports for ``conn``: what memd._sqlite checks a handle against."""
    return str(conn.execute("PRAGMA database_list").fetchone()[2])


def _ranking_function(path: str) -> str:
    """``memd_bm25`` (memd._sqlite: FTS5's bm25 scores, 2x faster) if it loads and works here, else ``bm25``."""
    global _csqlite_error
    if _csqlite is None:
        return "bm25"
    try:
        conn = _connect(path)
        try:
            _csqlite.register_rank(conn, _main_file(conn), "mem_fts_docsize")
            conn.execute("SELECT memd_bm25(mem_fts) FROM mem_fts WHERE mem_fts MATCH 'x' LIMIT 1").fetchall()
        finally:
            conn.close()
    except (RuntimeError, TypeError, sqlite3.Error) as exc:
        _csqlite_error = str(exc)
        return "bm25"
    return "memd_bm25"


def _bulk_file(conn: sqlite3.Connection) -> str | None:
    """The file name memd._sqlite.executemany checks ``conn`` against, if it works on it; else None.

    Without it the flush uses sqlite3's executemany, which takes the GIL back after every row.
    """
    if _csqlite is None:
        return None
    name = _main_file(conn)
    try:
        _csqlite.executemany(conn, name, "SELECT ?", [(1,), (2,)])
    except (RuntimeError, TypeError, sqlite3.Error) as exc:
        log.warning("flush_bulk_unavailable error=%r (the flush uses sqlite3's executemany)", str(exc))
        return None
    return name


def ranking_status() -> str:
    """One line for logs and INFO: which ranking function searches use, and why."""
    if _csqlite is None:
        return f"bm25 (memd._sqlite not built: {_csqlite_error}; FTS ranking is about 2x slower)"
    if _csqlite_error:
        return f"bm25 (memd._sqlite failed: {_csqlite_error}; FTS ranking is about 2x slower)"
    return "memd_bm25 (memd._sqlite)"


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return conn


def migrate(path: str) -> int:
    """Create or upgrade the schema; return the version found before."""
    conn = _connect(path)
    conn.create_function("memd_ns_tokens", 1, ns_tokens, deterministic=True)  # v2 indexes existing memories
    conn.create_function("memd_field_tokens", 1, field_tokens, deterministic=True)  # v3 too
    try:
        found = conn.execute("PRAGMA user_version").fetchone()[0]
        if found > SCHEMA_VERSION:
            raise StoreError(
                f"{path} has schema version {found}; this memd knows up to {SCHEMA_VERSION}: "
                "run a newer memd or restore a backup made by this version")
        if found == 0:
            # must precede the first table: auto_vacuum cannot be switched on later without VACUUM
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.execute("PRAGMA journal_mode = WAL")
        for version in range(found, SCHEMA_VERSION):
            conn.execute("BEGIN IMMEDIATE")
            for statement in MIGRATIONS[version].split(";\n"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        return int(found)
    finally:
        conn.close()


class Store:
    """The SQLite file: migrations at open, sync point reads, async flushes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._reader: sqlite3.Connection | None = None
        self._writer: aiosqlite.Connection | None = None
        self._pool: list[sqlite3.Connection] = []  # read connections for in_thread()
        self._pool_limiter = anyio.CapacityLimiter(SEARCH_THREADS)
        self._rank = "bm25"  # FTS5's own, until open() finds memd._sqlite working
        self._bulk: str | None = None  # the writer's file name for memd._sqlite.executemany, if that works
        self.flushed_lsn = 0

    async def open(self) -> None:
        try:
            migrate(self.path)
            self._rank = _ranking_function(self.path)
            self._reader = self._open_reader()
            writer = await aiosqlite.connect(self.path, isolation_level=None)
            try:  # aiosqlite internals: its thread's queue and its sqlite3 connection
                self._bulk = await writer._execute(_bulk_file, writer._conn)
            except AttributeError:
                self._bulk = None
            await writer.create_function("memd_field_tokens", 1, field_tokens, deterministic=True)
            await writer.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            await writer.execute("PRAGMA synchronous = FULL")
            await writer.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
            self._writer = writer
        except sqlite3.Error as exc:
            await self.close()
            raise StoreError(f"cannot open {self.path}: {exc}; run `memd check` on the data directory") from exc
        row = self.reader.execute("SELECT value FROM meta WHERE name = 'flushed_lsn'").fetchone()
        if row is None:  # (the caller closes the store)
            raise StoreError(f"{self.path} is damaged: its meta table has no flushed LSN")
        self.flushed_lsn = int(row[0])

    async def close(self) -> None:
        if self._writer is not None:
            await self._writer.close()
            self._writer = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        while self._pool:
            self._pool.pop().close()

    def ranking(self) -> str:
        """Which FTS ranking function searches use, and why (for the start-up log)."""
        return "memd_bm25 (memd._sqlite)" if self._rank == "memd_bm25" else ranking_status()

    @property
    def reader(self) -> sqlite3.Connection:
        if self._reader is None:
            raise StoreError("store is closed")
        return self._reader

    # ---- reads (synchronous, event-loop thread) ---------------------------------

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """Reads inside see one state of the file: a flush commits before all of them or after.

        Needed by reads that combine several statements arithmetically (DBSIZE): the
        writer commits in its own thread while the loop thread reads.
        """
        reader = self.reader
        if reader.in_transaction:
            yield
            return
        reader.execute("BEGIN")
        try:
            yield
        finally:
            reader.execute("COMMIT")

    def get_key(self, key: bytes) -> KeyRow | None:
        row = self.reader.execute(
            "SELECT type, value, expires_at, count, lo, hi FROM keys WHERE key = ?", (key,)).fetchone()
        return row  # type: ignore[no-any-return]

    def get_elem(self, key: bytes, sub: bytes) -> Any:
        row = self.reader.execute("SELECT value, score FROM elems WHERE key = ? AND sub = ?", (key, sub)).fetchone()
        if row is None:
            return None
        return row[0] if row[1] is None else row[1]

    def iter_elems(self, key: bytes, sub_from: bytes | None = None, sub_to: bytes | None = None
                   ) -> Iterator[tuple[bytes, Any]]:
        """Elements of a key in sub order, optionally in ``[sub_from, sub_to)``."""
        if sub_from is None:
            cur = self.reader.execute("SELECT sub, value, score FROM elems WHERE key = ? ORDER BY sub", (key,))
        else:
            cur = self.reader.execute(
                "SELECT sub, value, score FROM elems WHERE key = ? AND sub >= ? AND sub < ? ORDER BY sub",
                (key, sub_from, sub_to))
        for sub, value, score in cur:
            yield sub, (value if score is None else score)

    def scan_keys(self, after: bytes | None, limit: int) -> list[tuple[bytes, int, int | None]]:
        """Up to ``limit`` keys sorted after ``after``: (key, type, expires_at)."""
        if after is None:
            cur = self.reader.execute("SELECT key, type, expires_at FROM keys ORDER BY key LIMIT ?", (limit,))
        else:
            cur = self.reader.execute(
                "SELECT key, type, expires_at FROM keys WHERE key > ? ORDER BY key LIMIT ?", (after, limit))
        return cur.fetchall()

    def count_live_keys(self, now_ms: int) -> int:
        row = self.reader.execute(
            "SELECT count(*) FROM keys WHERE expires_at IS NULL OR expires_at > ?", (now_ms,)).fetchone()
        return int(row[0])

    def get_mem(self, ns: str, key: str) -> MemRow | None:
        return self.reader.execute(  # type: ignore[no-any-return]
            "SELECT value, version, created_at, updated_at, expires_at, ttl FROM mem_items WHERE ns = ? AND key = ?",
            (ns, key)).fetchone()

    def mem_last_version(self, ns: str, key: str) -> int:
        """The highest version SQLite knows for a memory, current or archived (0: none)."""
        row = self.reader.execute(
            "SELECT max(v) FROM (SELECT version AS v FROM mem_items WHERE ns = ?1 AND key = ?2 "
            "UNION ALL SELECT max(version) FROM mem_history WHERE ns = ?1 AND key = ?2)", (ns, key)).fetchone()
        return int(row[0] or 0)

    def search_mem(self, prefix: str, query: str | None, conds: list[Cond], limit: int, offset: int,
                   now_ms: int, scope: Scope = (), conn: sqlite3.Connection | None = None) -> list[SearchRow]:
        """Live memories under ``prefix`` matching the FTS5 ``query`` and ``conds``, ranked.

        Rows: (ns, key, value, version, created_at, updated_at, expires_at, ttl, score); the
        score is BM25 turned positive (higher is better), None without a query. ``scope``
        leaves out what the caller may not read. Raises :class:`QueryError` when FTS5
        cannot parse ``query``.
        """
        reader = conn or self.reader
        params: list[Any] = [now_ms]
        where = ["i.value IS NOT NULL", "(i.expires_at IS NULL OR i.expires_at > ?)"]
        if prefix:
            where.append(_UNDER)
            params += _under_params(prefix)
        if scope:
            sql, sparams = _scope_sql(scope)
            where.append(sql)
            params += sparams
        for cond in conds:
            sql, cparams = _cond_sql(cond)
            where.append(sql)
            params += cparams
        # The prefix's token and the equality filters' tokens narrow the match inside FTS5; the
        # SQL conditions stay the judge (a query like 'x) OR (y' could widen the MATCH, never the result).
        narrow = [f"ns : {_prefix_token(prefix)}"] if prefix else []
        if filter_match := _filter_match(conds):
            narrow.append(filter_match)
        if query is None:
            order = "ORDER BY i.updated_at DESC, i.ns, i.key LIMIT ? OFFSET ?"
            sql = (f"SELECT {_SEARCH_COLUMNS}, NULL "
                   f"FROM mem_items AS i WHERE {' AND '.join(where)} {order}")
            params += [limit, offset]
            if prefix or filter_match:
                recent = _recent_first(reader, sql.replace(_UNDER, _UNDER.replace("i.ns", "+i.ns"), 1), params)
                if recent is not None:
                    return recent
            if filter_match:  # the walk found few matches: FTS5 lists them (0.4% of 100,000: 1 ms)
                sql = (f"SELECT {_SEARCH_COLUMNS}, NULL FROM mem_fts JOIN mem_items AS i ON i.rowid = mem_fts.rowid "
                       f"WHERE mem_fts MATCH ? AND {' AND '.join(where)} {order}")
                params.insert(0, " AND ".join(narrow))
            return self._run_search(reader, sql, params, query)
        params.insert(0, " AND ".join([*narrow, f"body : ({query})"]))
        params += [limit, offset]
        # Without a FILTER or access rules nearly every match is live, so a few extra candidates do;
        # with them, enough that a filter keeping one memory in eight usually fills the page.
        # A second try sizes the candidates from the first one's yield (a filter keeping 1 in 60: ~900
        # candidates, not all 27,000 matches); a filter that kept none goes straight to the full plan.
        need = limit + offset
        top = 8 * need + 32 if conds or scope else 2 * need + 16
        for _ in range(2):
            rows, kept = self._ranked_from_top(reader, where, params, need, top, query)
            if rows is not None:
                return rows[offset:]
            if not kept or top > SEARCH_MAX_CANDIDATES:
                break
            top = math.ceil(need * top / kept * 3) + 32  # 3x: a yield of 1 or 2 is a rough estimate
        sql = (f"SELECT {_SEARCH_COLUMNS}, -f.s "
               f"FROM ({self._ranked_matches}) AS f "
               f"JOIN mem_items AS i ON i.rowid = f.r WHERE {' AND '.join(where)} "
               "ORDER BY f.s, i.ns, i.key LIMIT ? OFFSET ?")
        return self._run_search(reader, sql, params, query)

    def _ranked_from_top(self, reader: sqlite3.Connection, where: list[str], params: list[Any], need: int,
                         top: int, query: str) -> tuple[list[SearchRow] | None, int]:
        """The first ``need`` ranked rows, joining only FTS5's ``top`` best matches to ``mem_items``.

        Returns (rows, candidates kept); rows is None when the candidates cannot prove the answer.

        Joining every match to its ~1 KB row to check it (live, in scope, FILTER) cost more than
        ranking it: a word in 27% of 100,000 memories, 17 ms ranked, 64 ms ranked and joined.
        The best ``top`` suffice when the last row kept ranks strictly above the worst candidate:
        every match outside the candidates ranks at or below that one, so none can come before
        or tie with a row kept. Otherwise the caller ranks and joins everything.
        """
        sql = (f"WITH f AS MATERIALIZED ({self._ranked_matches} ORDER BY s LIMIT {top}) "
               f"SELECT {_SEARCH_COLUMNS}, -f.s, "
               f"(SELECT max(s) FROM f), (SELECT count(*) FROM f) "
               f"FROM f JOIN mem_items AS i ON i.rowid = f.r WHERE {' AND '.join(where)} "
               "ORDER BY f.s, i.ns, i.key LIMIT ?")
        rows = self._run_search(reader, sql, [*params[:-2], need], query)
        if not rows:
            return None, 0  # no match at all, or none kept: the full plan settles it
        worst, candidates = rows[0][9], rows[0][10]
        if candidates < top or (len(rows) == need and -rows[-1][8] < worst):
            return [row[:9] for row in rows], len(rows)
        return None, len(rows)

    @property
    def _ranked_matches(self) -> str:
        """SQL: every FTS5 match as (r: rowid, s: BM25, lower is better), the body column weighted alone."""
        return f"SELECT rowid AS r, {self._rank}(mem_fts, 1, 0, 0) AS s FROM mem_fts WHERE mem_fts MATCH ?"

    @staticmethod
    def _run_search(reader: sqlite3.Connection, sql: str, params: list[Any], query: str | None) -> list[Any]:
        try:
            return reader.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            # the statement is ours; only the query text can make it fail to prepare or run,
            # short of a broken database (which every other read reports too)
            if query is not None and not any(w in str(exc) for w in ("disk", "locked", "corrupt", "memory")):
                raise QueryError(str(exc)) from None
            raise

    def mem_namespaces(self, prefix: str, now_ms: int, conn: sqlite3.Connection | None = None) -> list[str]:
        """Distinct namespaces under ``prefix`` ("" = all) holding at least one live memory, sorted."""
        live = "i.value IS NOT NULL AND (i.expires_at IS NULL OR i.expires_at > ?)"
        reader = conn or self.reader
        if prefix:
            cur = reader.execute(
                f"SELECT DISTINCT i.ns FROM mem_items AS i WHERE {_UNDER} AND {live} ORDER BY i.ns",
                (*_under_params(prefix), now_ms))
        else:
            cur = reader.execute(f"SELECT DISTINCT i.ns FROM mem_items AS i WHERE {live} ORDER BY i.ns", (now_ms,))
        return [row[0] for row in cur]

    async def in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a read ``fn(*args, conn=...)`` in a worker thread on a pooled read connection.

        For reads that can take milliseconds (FTS ranking over many matches, filter scans):
        on the event loop they would stall every other client; sqlite3 releases the GIL
        while it steps, so here they run beside the loop. One statement reads one
        committed state, so no snapshot is needed.
        """
        def run() -> T:
            conn = self._pool.pop() if self._pool else self._open_reader()
            try:
                return fn(*args, conn=conn)
            finally:
                if self._reader is None:  # the store closed meanwhile: nobody will close it later
                    conn.close()
                else:
                    self._pool.append(conn)
        return await anyio.to_thread.run_sync(run, limiter=self._pool_limiter)

    def _open_reader(self) -> sqlite3.Connection:
        reader = _connect(self.path)
        reader.execute("PRAGMA query_only = 1")
        # point reads run on the event loop: keep hot pages in memory and skip read() syscalls
        # (measured: 12.4 -> 8.5 us per point read of a 180k-key table)
        reader.execute(f"PRAGMA cache_size = -{READER_CACHE_KIB}")
        reader.execute(f"PRAGMA mmap_size = {READER_MMAP_BYTES}")
        reader.create_function("memd_json_eq", 2, _json_eq, deterministic=True)
        if _csqlite is not None and self._rank == "memd_bm25":
            _csqlite.register_rank(reader, _main_file(reader), "mem_fts_docsize")
        return reader

    def mem_history(self, ns: str, key: str, keep: int, since_ms: int, limit: int | None
                    ) -> list[tuple[int, str, int, int, int, int]]:
        """Archived versions newest first, within retention: the newest ``keep``, ended after ``since_ms``.

        Rows: (version, value, created_at, updated_at, superseded_at, deleted).
        """
        n = keep if limit is None else min(keep, limit)
        return self.reader.execute(
            "SELECT version, value, created_at, updated_at, superseded_at, deleted FROM mem_history "
            "WHERE ns = ? AND key = ? AND superseded_at > ? ORDER BY version DESC LIMIT ?",
            (ns, key, since_ms, n)).fetchall()

    # ---- flush ---------------------------------------------------------------

    async def flush(self, table: Memtable) -> None:
        """Write a frozen memtable and its LSN in one durable transaction."""
        assert table.frozen
        self._db()
        # one pass over the frozen table, off the event loop (it is immutable now)
        batches = await anyio.to_thread.run_sync(flush_statements, table)
        wipe = [("DELETE FROM elems", [()]), ("DELETE FROM keys", [()])] if table.flushall else []
        await self._write([*wipe, *batches, ("UPDATE meta SET value = ? WHERE name = 'flushed_lsn'", [(table.max_lsn,)])])
        self.flushed_lsn = table.max_lsn

    def copy_to(self, dest: str) -> int:
        """Copy the database to ``dest`` as of one commit; return that copy's flushed LSN.

        Runs in a worker thread on two connections of its own. SQLite's backup
        API in a single step holds one read transaction on the source: in WAL
        mode a flush committing meanwhile neither waits for it nor restarts
        it. The copy is switched to a rollback journal so it is one
        self-contained file (the next open by memd turns WAL back on).
        """
        src = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        dst = sqlite3.connect(dest, isolation_level=None)
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode = DELETE")
            return int(dst.execute("SELECT value FROM meta WHERE name = 'flushed_lsn'").fetchone()[0])
        finally:
            dst.close()
            src.close()

    # ---- compaction (the caller holds the engine's flush lock: no flush interleaves) ----------

    def expired_keys(self, now_ms: int, limit: int) -> list[bytes]:
        return [r[0] for r in self.reader.execute(
            "SELECT key FROM keys WHERE expires_at IS NOT NULL AND expires_at <= ? LIMIT ?", (now_ms, limit))]

    def expired_memories(self, now_ms: int, limit: int) -> list[tuple[str, str]]:
        return self.reader.execute(  # type: ignore[no-any-return]
            "SELECT ns, key FROM mem_items WHERE expires_at IS NOT NULL AND expires_at <= ? AND value IS NOT NULL "
            "LIMIT ?", (now_ms, limit)).fetchall()

    async def purge(self, keys: list[bytes], expired: list[tuple[str, str]]) -> None:
        """Delete expired keys (triggers take their elements); archive and unindex expired memories
        (their version ends at its expiry) and leave a tombstone: it keeps the version count, so a
        later put never reuses a version number, in one transaction."""
        fts = [(*ident, ns_tokens(ident[0])) for ident in expired]
        archive = [(*ident, 1 << 62, 0, 1 << 62, 0) for ident in expired]  # ended at their expiry (the CASE)
        await self._write([(_DELETE_KEY, [(k,) for k in keys]), (_ARCHIVE_MEM, archive), (_UNINDEX_MEM, fts),
                           (_TOMBSTONE_MEM, expired)])

    async def prune_history(self, keep: int, before_ms: int) -> int:
        """Drop archived versions beyond the newest ``keep`` per memory or ended before ``before_ms``."""
        db = self._db()
        async with db.execute("SELECT count(*) FROM mem_history") as cur:
            n0 = (await cur.fetchone())[0]  # type: ignore[index]
        await self._write([(_PRUNE_HISTORY, [(keep, before_ms)])])
        async with db.execute("SELECT count(*) FROM mem_history") as cur:
            return int(n0 - (await cur.fetchone())[0])  # type: ignore[index]

    async def checkpoint(self, truncate_over: int) -> str:
        """Checkpoint SQLite's WAL: PASSIVE always; TRUNCATE when the file grew past ``truncate_over``
        bytes and no reader holds it (a busy TRUNCATE is skipped, not waited for)."""
        db = self._db()
        await db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        wal = self.path + "-wal"
        if not os.path.exists(wal) or os.path.getsize(wal) <= truncate_over:
            return "passive"
        await db.execute("PRAGMA busy_timeout = 0")
        try:
            async with db.execute("PRAGMA wal_checkpoint(TRUNCATE)") as cur:
                busy = (await cur.fetchone())[0]  # type: ignore[index]
        finally:
            await db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        return "truncate-busy" if busy else "truncate"

    async def vacuum(self) -> int:
        """Return free pages to the file system (incremental vacuum), refresh planner stats; pages freed.

        Run it before :meth:`checkpoint`: in WAL mode the file shrinks when the checkpoint
        copies the truncated database back.
        """
        db = self._db()
        async with db.execute("PRAGMA freelist_count") as cur:
            free = int((await cur.fetchone())[0])  # type: ignore[index]
        # it frees one page per step and returns no rows, so execute() would free just one page;
        # executescript() (sqlite3_exec) steps it to the end
        await db.executescript("PRAGMA incremental_vacuum;")
        await db.execute("PRAGMA optimize")
        self.reader.execute("PRAGMA shrink_memory")
        return free

    def disk_bytes(self) -> int:
        """The database file plus its -wal file."""
        return sum(os.path.getsize(p) for p in (self.path, self.path + "-wal") if os.path.exists(p))

    def _db(self) -> aiosqlite.Connection:
        if self._writer is None:
            raise StoreError("store is closed")
        return self._writer

    async def _write(self, groups: list[tuple[str, list[tuple[Any, ...]]]]) -> None:
        """One BEGIN IMMEDIATE transaction of executemany groups (empty ones skipped).

        Shielded: a cancelled ``await`` would not stop the SQL in aiosqlite's
        thread and would leave a transaction open for the next writer.
        """
        db = self._db()
        groups = [(sql, rows) for sql, rows in groups if rows]
        if not groups:
            return
        with anyio.CancelScope(shield=True):
            await db.execute("BEGIN IMMEDIATE")
            try:
                for sql, rows in groups:
                    if self._bulk is not None and len(rows) > 1:
                        # in aiosqlite's own thread (its queue keeps statements in order) on its connection
                        await db._execute(_csqlite.executemany, db._conn, self._bulk, sql, rows)
                    else:
                        await db.executemany(sql, rows)
                await db.execute("COMMIT")
            except BaseException:
                await db.execute("ROLLBACK")
                raise

    async def execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """One statement on the writer connection (maintenance, tests)."""
        db = self._writer
        if db is None:
            raise StoreError("store is closed")
        cur = await db.execute(sql, params)
        return list(await cur.fetchall())


_FIRST = operator.itemgetter(0)


def flush_statements(table: Memtable) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """Every row a flush writes, grouped by statement, in the order they must run, in ONE pass.

    Key rows come before element rows: recreating a key (``gen`` bumped)
    fires the trigger that purges its old elements, and only then may the
    new elements go in. Empty groups are left out (no thread hop for them).
    """
    deletes: list[tuple[Any, ...]] = []
    upserts: list[tuple[Any, ...]] = []
    metas: list[tuple[Any, ...]] = []
    elems: list[tuple[Any, ...]] = []
    elem_deletes: list[tuple[Any, ...]] = []
    trims: list[tuple[Any, ...]] = []
    for k, e in table.entries.items():  # (memory order: looking each key up in key order took 2x longer)
        type_ = e.type
        if type_ == T_STRING and e.reset:  # most rows: a string written whole (its count/lo/hi are 0)
            upserts.append((k, T_STRING, e.value, e.expires_at, 0, 0, 0, 1))
            continue
        if type_ == T_NONE:
            deletes.append((k,))
            continue
        if e.reset:
            upserts.append((k, type_, e.value, e.expires_at, e.count, e.lo, e.hi, 1))
        else:
            metas.append((k, e.expires_at, e.count, e.lo, e.hi))
        if type_ == T_LIST:
            lo, hi = list_sub(e.lo), list_sub(e.hi)
            if not e.reset:
                trims.append((k, lo, hi))
        if not e.elems:
            continue
        zset = type_ == T_ZSET
        for sub, v in e.elems.items():
            if v is DELETED:
                if not e.reset:
                    elem_deletes.append((k, sub))
            elif type_ == T_LIST and not lo <= sub < hi:
                continue  # a list position trimmed or popped away
            elif zset:
                elems.append((k, sub, None, v))
            else:
                elems.append((k, sub, v, None))
    for rows in (deletes, upserts, metas, elems, elem_deletes, trims):
        rows.sort(key=_FIRST)  # in key order: SQLite's B-trees take them 25-35% faster than at random
    archives: list[tuple[Any, ...]] = []
    history: list[tuple[Any, ...]] = []
    idents: list[tuple[str, str, str]] = []
    mems: list[tuple[Any, ...]] = []
    live: list[tuple[str, str, str]] = []
    for ident, m in table.mem.items():
        at, deleted = m.ended_below
        archives.append((*ident, at, deleted, m.version, m.value is None))
        if m.history:
            history.extend((*ident, *h) for h in m.history)
        fts = (*ident, ns_tokens(ident[0]))
        idents.append(fts)
        mems.append((*ident, m.value, m.version, m.created_at, m.updated_at, m.expires_at, m.ttl))
        if m.value is not None:
            live.append(fts)
    # archive and unindex first: they read the row the upsert then overwrites; the memtable's own
    # history rows (exact end times) replace what archiving inferred for the same version
    groups = [(_DELETE_KEY, deletes), (_UPSERT_KEY, upserts), (_UPDATE_META, metas), (_UPSERT_ELEM, elems),
              (_DELETE_ELEM, elem_deletes), (_TRIM_LIST, trims), (_ARCHIVE_MEM, archives), (_UNINDEX_MEM, idents),
              (_HISTORY_MEM, history), (_UPSERT_MEM, mems), (_INDEX_MEM, live)]
    return [(sql, rows) for sql, rows in groups if rows]
