"""The SQLite store's schema and its migrations (``PRAGMA user_version``).

Keys of every type live in ``keys``; collection elements in ``elems`` keyed by
``(key, sub)``. Triggers purge a key's elements when the key is deleted or recreated
(``gen`` bumped), so the flush writes one row per changed key and SQLite does the
cascading in C. Memories live in ``mem_items`` (with ``mem_history`` and the FTS5 index
``mem_fts``). Each migration runs in one transaction.

A migration can run for minutes on a big store (v4 rebuilds the keys table in one
statement), and under systemd a start that says nothing for TimeoutStartSec= is killed
and restarted, into the same migration: a restart loop. So ``migrate`` reports progress
while SQLite works, through SQLite's progress handler, which the VM calls every
PROGRESS_STEPS instructions inside even a single long statement; the daemon turns each
report into STATUS= and EXTEND_TIMEOUT_USEC=. A report is evidence of progress: a
migration stuck on a lock makes none, and systemd's timeout still applies to it.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable

from memd.errors import StoreError
from memd.store.tokens import field_tokens, fields_of, ns_tokens, text_of

SCHEMA_VERSION = 7
BUSY_TIMEOUT_MS = 5000
MIGRATION_PROGRESS_SECONDS = 1.0  # at most one progress report per this many seconds (read at each migrate)
# VM instructions between two looks at the clock: tens of microseconds of SQLite work, so a report is
# never late by more than that, and the GIL is taken back only a few thousand times a second
PROGRESS_STEPS = 100_000

log = logging.getLogger("memd.store")

# Called with (from_version, to_version, seconds since the migration began), from the thread running it.
MigrationProgress = Callable[[int, int, float], None]

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
TEXT_OF = "(SELECT group_concat(t.value, ' ') FROM json_tree({}) AS t WHERE t.type = 'text')"

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
INSERT INTO mem_fts (rowid, body, ns) SELECT m.rowid, coalesce({TEXT_OF.format("m.value")}, ''), memd_ns_tokens(m.ns) FROM mem_items AS m WHERE m.value IS NOT NULL;
"""

# A memory's FILTER view: its top-level members, with every value ``fields`` cannot hold exactly and
# cheaply (objects, arrays, fractional reals, booleans, null, numbers beyond 2^53, strings over 64
# characters) replaced by the placeholder ``[]``; an integral real is kept as the integer it equals
# (5.0 as 5: FILTER compares numbers by value, and a FILTER token for 5 must find it). A filter
# reads this ~60-byte object instead of parsing the whole ~1 KB value (3.6 us per json_extract of
# the value, measured), and goes to the value only for a placeholder. A value SQLite cannot parse
# is kept whole, so a filter fails on it as it always did.
FIELDS_OF = """CASE WHEN {v} IS NULL THEN NULL WHEN NOT json_valid({v}) THEN {v} ELSE (
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
UPDATE mem_items SET fields = {FIELDS_OF.format(v="mem_items.value")} WHERE value IS NOT NULL;
CREATE INDEX mem_items_filter ON mem_items (ns, updated_at, key, expires_at, fields) WHERE value IS NOT NULL;
DROP TABLE mem_fts;
CREATE VIRTUAL TABLE mem_fts USING fts5 (body, ns, f, content='', tokenize='porter unicode61 remove_diacritics 2');
INSERT INTO mem_fts (rowid, body, ns, f) SELECT m.rowid, CASE WHEN json_valid(m.value) THEN coalesce({TEXT_OF.format("m.value")}, '') ELSE '' END, memd_ns_tokens(m.ns), memd_field_tokens(m.fields) FROM mem_items AS m WHERE m.value IS NOT NULL
"""

# v4: ``keys`` becomes a WITHOUT ROWID table, clustered on its key. A rowid table with a BLOB
# primary key is two B-trees (the rows by rowid, and the key's index), and every flushed key went
# into both. Raw executemany of 1,000,000 200-byte rows in batches of 100,000: 117k -> 166k rows/s
# in key order, 83k -> 108k at random. Nothing refers to the rowid of ``keys``.
# The copy reads the old table straight through and sorts by key (an external merge sort in
# bounded memory) so the new B-tree is filled leaf after leaf. Read in rowid order, the keys
# arrive in flush order, each insert lands on a random leaf and, once the table outgrows the page
# cache, every row costs page reads and rewrites: 1,000,000 keys took 18.3 s of CPU that way, 7.5 s
# through the key index (a random table read per key), 4.6 s sorted (benchmarks/bench_bigstore.py).
_V4 = f"""
DROP TRIGGER keys_purge_on_delete;
DROP TRIGGER keys_purge_on_reset;
DROP INDEX keys_expiry;
CREATE TABLE keys_v4 ({_KEYS_COLUMNS}) WITHOUT ROWID;
INSERT INTO keys_v4 (key, type, value, expires_at, count, lo, hi, gen)
    SELECT key, type, value, expires_at, count, lo, hi, gen FROM keys NOT INDEXED ORDER BY key;
DROP TABLE keys;
ALTER TABLE keys_v4 RENAME TO keys;
{_KEYS_INDEX_AND_TRIGGERS}"""

# v5: a memory's ``fields`` and its indexed text are computed by memd_fields / memd_text (tokens.py),
# not by SQLite's JSON functions, which cut a string at its first NUL: ``{"a": "x\u0000y zebra"}`` was
# filtered as if ``a`` were "x" and indexed as the single word "x". Every memory's ``fields`` is
# rewritten and the index rebuilt: contentless FTS5 removes an entry by replaying the text indexed,
# so every entry must have been indexed by the function that will remove it.
_V5 = """
UPDATE mem_items SET fields = memd_fields(value) WHERE value IS NOT NULL;
DROP TABLE mem_fts;
CREATE VIRTUAL TABLE mem_fts USING fts5 (body, ns, f, content='', tokenize='porter unicode61 remove_diacritics 2');
INSERT INTO mem_fts (rowid, body, ns, f) SELECT m.rowid, memd_text(m.value), memd_ns_tokens(m.ns), memd_field_tokens(m.fields) FROM mem_items AS m WHERE m.value IS NOT NULL
"""

# v6: semantic recall. ``mem_indexes`` holds the vector indexes declared (MEM.INDEX CREATE), one per
# namespace prefix; ``mem_vectors`` the embeddings of each memory's current version, one row per
# (memory, path), written in the flush transaction that writes the memory. Searches run on an
# in-memory index loaded from this table at start (memd.store.vectors); SQLite is what it is rebuilt
# from, so the two cannot disagree after a crash.
_V6 = """
CREATE TABLE mem_indexes (prefix TEXT PRIMARY KEY, dims INTEGER NOT NULL, distance TEXT NOT NULL, fields TEXT NOT NULL);
CREATE TABLE mem_vectors (id INTEGER PRIMARY KEY, ns TEXT NOT NULL, key TEXT NOT NULL, path TEXT NOT NULL, vec BLOB NOT NULL);
CREATE INDEX mem_vectors_item ON mem_vectors (ns, key)
"""

# v7: databases (Redis's SELECT). ``keys`` and ``elems`` gain a ``db`` column, first in their primary
# keys, so each database is one contiguous range of both B-trees: a point read is one seek as before,
# SCAN and DBSIZE read their database's range, FLUSHDB deletes one range. The number is the physical
# database; SWAPDB swaps entries of the map from Redis's numbers to these, kept in ``meta`` as
# ``dbmap`` (JSON, absent: the identity) by the flush that follows it. Every key stored so far is
# database 0's. Both tables are rebuilt, read in key order (see v4 for why sorted).
_KEYS_COLUMNS_V7 = """
    db INTEGER NOT NULL,
    key BLOB NOT NULL,
    type INTEGER NOT NULL,
    value BLOB,
    expires_at INTEGER,
    count INTEGER NOT NULL DEFAULT 0,
    lo INTEGER NOT NULL DEFAULT 0,
    hi INTEGER NOT NULL DEFAULT 0,
    gen INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (db, key)
"""
_V7 = f"""
DROP TRIGGER keys_purge_on_delete;
DROP TRIGGER keys_purge_on_reset;
DROP INDEX keys_expiry;
DROP INDEX elems_score;
CREATE TABLE keys_v7 ({_KEYS_COLUMNS_V7}) WITHOUT ROWID;
INSERT INTO keys_v7 (db, key, type, value, expires_at, count, lo, hi, gen)
    SELECT 0, key, type, value, expires_at, count, lo, hi, gen FROM keys NOT INDEXED ORDER BY key;
DROP TABLE keys;
ALTER TABLE keys_v7 RENAME TO keys;
CREATE TABLE elems_v7 (
    db INTEGER NOT NULL,
    key BLOB NOT NULL,
    sub BLOB NOT NULL,
    value BLOB,
    score REAL,
    PRIMARY KEY (db, key, sub)
);
INSERT INTO elems_v7 (db, key, sub, value, score) SELECT 0, key, sub, value, score FROM elems ORDER BY key, sub;
DROP TABLE elems;
ALTER TABLE elems_v7 RENAME TO elems;
CREATE INDEX elems_score ON elems (db, key, score, sub) WHERE score IS NOT NULL;
CREATE INDEX keys_expiry ON keys (expires_at) WHERE expires_at IS NOT NULL;
CREATE TRIGGER keys_purge_on_delete AFTER DELETE ON keys WHEN old.type > 1
BEGIN DELETE FROM elems WHERE db = old.db AND key = old.key; END;
CREATE TRIGGER keys_purge_on_reset AFTER UPDATE OF gen ON keys WHEN old.type > 1 AND new.gen != old.gen
BEGIN DELETE FROM elems WHERE db = old.db AND key = old.key; END
"""

# Each entry upgrades the schema from version i to i+1 (index 0: empty -> 1).
MIGRATIONS: list[str] = [_V1, _V2, _V3, _V4, _V5, _V6, _V7]


def register_functions(conn: sqlite3.Connection) -> None:
    """The Python functions the schema's migrations and the flush's statements call."""
    conn.create_function("memd_ns_tokens", 1, ns_tokens, deterministic=True)
    conn.create_function("memd_field_tokens", 1, field_tokens, deterministic=True)
    conn.create_function("memd_fields", 1, fields_of, deterministic=True)
    conn.create_function("memd_text", 1, text_of, deterministic=True)


def connect(path: str) -> sqlite3.Connection:
    """A connection in autocommit mode that waits for a lock (up to BUSY_TIMEOUT_MS) rather than fail at once."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return conn


def migrate(path: str, progress: MigrationProgress | None = None, *, interval: float | None = None) -> int:
    """Create or upgrade the schema; return the version found before.

    ``progress`` is called at most once per ``interval`` seconds (default
    MIGRATION_PROGRESS_SECONDS) while an upgrade runs, with the step's versions and
    the seconds since the upgrade began; a fast upgrade makes no call. It runs in
    the caller's thread, inside SQLite's progress handler: it must be quick, and
    whatever it raises is logged, never passed to SQLite (that would abort the
    migration).
    """
    conn = connect(path)
    register_functions(conn)
    try:
        found = conn.execute("PRAGMA user_version").fetchone()[0]
        if found > SCHEMA_VERSION:
            raise StoreError(
                f"{path} has schema version {found}; this memd knows up to {SCHEMA_VERSION}: "
                "run a newer memd or restore a backup made by this version")
        if found == 0:
            # must precede the first table: auto_vacuum cannot be switched on later without VACUUM
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        if found == SCHEMA_VERSION:
            conn.execute("PRAGMA journal_mode = WAL")
            return int(found)
        # An upgrade runs with a rollback journal, WAL after. In WAL mode every page a rebuild writes
        # goes to the -wal file first (again each time the small cache spills it), and the COMMIT's
        # checkpoint then copies them all into the database, a step SQLite's progress handler does not
        # see. v3 -> v4 of 2,000,000 keys: COMMIT 8.4 s through the WAL, 1.5 s with a rollback journal
        # (the new pages are written in place; only pages the file held before are journaled). It needs
        # the only connection: memd holds the data directory's lock; should another process read the
        # file anyway, the mode stays WAL, which is slower but as correct.
        conn.execute("PRAGMA journal_mode = DELETE")
        t0 = time.monotonic()
        if found:  # a new file is not an upgrade: nothing to say
            log.info("schema_migration_begin path=%s from=%d to=%d", path, found, SCHEMA_VERSION)
        reporter = _Reporter(progress, MIGRATION_PROGRESS_SECONDS if interval is None else interval, t0)
        if progress is not None:
            conn.set_progress_handler(reporter, PROGRESS_STEPS)
        for version in range(found, SCHEMA_VERSION):
            reporter.step = (version, version + 1)
            conn.execute("BEGIN IMMEDIATE")
            for statement in MIGRATIONS[version].split(";\n"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        conn.set_progress_handler(None, 0)
        conn.execute("PRAGMA journal_mode = WAL")
        if found:
            log.info("schema_migration_done path=%s from=%d to=%d seconds=%.3f reports=%d", path, found,
                     SCHEMA_VERSION, time.monotonic() - t0, reporter.reports)
        return int(found)
    finally:
        conn.close()


class _Reporter:
    """SQLite's progress handler for ``migrate``: calls ``progress`` at most once per ``interval`` seconds.

    Returns None (false) always: a true value would make SQLite abort the statement.
    """

    def __init__(self, progress: MigrationProgress | None, interval: float, t0: float) -> None:
        self.progress = progress
        self.interval = interval
        self.t0 = t0
        self.next = t0 + interval
        self.step = (0, 0)
        self.reports = 0
        self.failed = False

    def __call__(self) -> None:
        now = time.monotonic()
        if now < self.next or self.progress is None:
            return
        self.next = now + self.interval
        self.reports += 1
        try:
            self.progress(self.step[0], self.step[1], now - self.t0)
        except Exception as exc:  # noqa: BLE001 - raised into SQLite it would abort the migration
            if not self.failed:  # once: it is called again every interval
                log.warning("schema_migration_progress_failed error=%r (the migration goes on)", str(exc))
            self.failed = True
