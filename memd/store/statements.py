"""The SQLite store's write statements: a flush's, by kind of row (rows.FlushRows), and compaction's.

Parameters are numbered where a statement reads one twice. Contentless FTS5 deletes an
entry by replaying the exact text it indexed, so indexing and unindexing compute it with
the same SQL (``_FTS_ROW``).
"""

from __future__ import annotations

UPSERT_KEY = """
INSERT INTO keys (db, key, type, value, expires_at, count, lo, hi, gen) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0)
ON CONFLICT (db, key) DO UPDATE SET type = excluded.type, value = excluded.value, expires_at = excluded.expires_at,
    count = excluded.count, lo = excluded.lo, hi = excluded.hi, gen = keys.gen + ?9
"""
UPDATE_META = "UPDATE keys SET expires_at = ?3, count = ?4, lo = ?5, hi = ?6 WHERE db = ?1 AND key = ?2"
DELETE_KEY = "DELETE FROM keys WHERE db = ? AND key = ?"
UPSERT_ELEM = "INSERT OR REPLACE INTO elems (db, key, sub, value, score) VALUES (?, ?, ?, ?, ?)"
DELETE_ELEM = "DELETE FROM elems WHERE db = ? AND key = ? AND sub = ?"
TRIM_LIST = "DELETE FROM elems WHERE db = ?1 AND key = ?2 AND (sub < ?3 OR sub >= ?4)"
# FLUSHDB / FLUSHALL: a database's keys, elements first (else the purge trigger runs once per collection)
WIPE_ELEMS = "DELETE FROM elems WHERE db = ?"
WIPE_KEYS = "DELETE FROM keys WHERE db = ?"
# SWAPDB's map from Redis's database numbers to physical ones (JSON), stored by the flush after a swap
SET_DBMAP = "INSERT OR REPLACE INTO meta (name, value) VALUES ('dbmap', ?)"
# An UPSERT, not INSERT OR REPLACE: REPLACE would give the row a new rowid behind the index's back.
UPSERT_MEM = f"""
INSERT INTO mem_items (ns, key, value, version, created_at, updated_at, expires_at, ttl, fields)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value, version = excluded.version,
    created_at = excluded.created_at, updated_at = excluded.updated_at, expires_at = excluded.expires_at,
    ttl = excluded.ttl, fields = excluded.fields
"""
# The version SQLite holds goes to history when this flush ends it: ?3 when, ?4 by a delete,
# ?5 the memtable's version, ?6 whether the memtable ends with a delete (same version then).
# A version that expired first ended at its expiry, not by the delete.
ARCHIVE_MEM = """
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
# (memd_text: a value that is not JSON is indexed as no text, rather than failing the flush)
_FTS_ROW = (f"(SELECT m.rowid {_LIVE_MEM}), "
            f"(SELECT memd_text(m.value) {_LIVE_MEM}), "
            f"(SELECT ?3 {_LIVE_MEM}), "
            f"(SELECT memd_field_tokens(m.fields) {_LIVE_MEM})")
UNINDEX_MEM = f"INSERT INTO mem_fts (mem_fts, rowid, body, ns, f) VALUES ('delete', {_FTS_ROW})"
# Indexing takes the text and tokens the flush computed (rows.flush_rows, with tokens.index_entry: the
# same functions on the same value) rather than calling back into Python from SQLite, which would take
# the GIL once per memory.
INDEX_MEM = f"INSERT INTO mem_fts (rowid, body, ns, f) VALUES ((SELECT m.rowid {_LIVE_MEM}), ?4, ?3, ?5)"


# The current row (if any) and the highest archived version of each (ns, key) pair bound (?1 ?2, ?3 ?4...):
# what a run of MEM.PUTs needs to number its versions (mem_items' version is NULL: no row; the last column
# is the highest version of either, 0 for none, so the caller does no arithmetic per pair). A VALUES
# list, 2x faster than json_each over a JSON array; callers bind MEM_HEADS_MAX pairs at most and pad to
# a power of two (repeating a pair), so a few plans serve every run.
MEM_HEADS_MAX = 256
_MEM_HEADS = """
SELECT q.column1, q.column2, m.value, m.version, m.created_at, m.updated_at, m.expires_at, m.ttl,
    max(coalesce(m.version, 0),
        coalesce((SELECT max(h.version) FROM mem_history AS h WHERE h.ns = q.column1 AND h.key = q.column2), 0))
FROM (VALUES {}) AS q LEFT JOIN mem_items AS m ON m.ns = q.column1 AND m.key = q.column2
"""


def mem_heads(pairs: int) -> str:
    """MEM_HEADS's statement for ``pairs`` (ns, key) pairs."""
    return _MEM_HEADS.format(",".join(["(?,?)"] * pairs))


TOMBSTONE_MEM = ("UPDATE mem_items SET value = NULL, fields = NULL, updated_at = expires_at, expires_at = NULL, "
                  "ttl = NULL "
                  "WHERE ns = ? AND key = ?")
# Retention: the newest ?1 archived versions of each memory, and none that ended before ?2.
PRUNE_HISTORY = """
DELETE FROM mem_history WHERE superseded_at < ?2 OR (ns, key, version) IN (
    SELECT ns, key, version FROM (
        SELECT ns, key, version, row_number() OVER (PARTITION BY ns, key ORDER BY version DESC) AS n
        FROM mem_history) WHERE n > ?1)
"""
HISTORY_MEM = """
INSERT OR REPLACE INTO mem_history (ns, key, version, value, created_at, updated_at, superseded_at, deleted)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
"""
# Vector indexes and vectors (schema v6). A prefix "" is every namespace; otherwise the label-wise
# range of filters.UNDER.
_VECTORS_UNDER = "(?1 = '' OR (v.ns >= ?1 AND v.ns < ?1 || '/' AND (v.ns = ?1 OR v.ns > ?1 || '.')))"
DROP_VECTORS_UNDER = f"DELETE FROM mem_vectors AS v WHERE {_VECTORS_UNDER}"
# An index's vectors at start: those of live memories, grouped by memory, in the order they were written.
LOAD_VECTORS = ("SELECT v.ns, v.key, v.path, v.vec, m.expires_at FROM mem_vectors AS v "
                "JOIN mem_items AS m ON m.ns = v.ns AND m.key = v.key "
                f"WHERE m.value IS NOT NULL AND {_VECTORS_UNDER} ORDER BY v.ns, v.key, v.id")
DROP_INDEX = "DELETE FROM mem_indexes WHERE prefix = ?"
PUT_INDEX = "INSERT OR REPLACE INTO mem_indexes (prefix, dims, distance, fields) VALUES (?, ?, ?, ?)"
DELETE_VECTORS = "DELETE FROM mem_vectors WHERE ns = ? AND key = ?"
INSERT_VECTOR = "INSERT INTO mem_vectors (ns, key, path, vec) VALUES (?, ?, ?, ?)"
SET_FLUSHED_LSN = "UPDATE meta SET value = ? WHERE name = 'flushed_lsn'"

# rows.FlushRows, field by field: the statement that writes each kind of row
FLUSH = (WIPE_ELEMS, WIPE_KEYS, SET_DBMAP, DELETE_KEY, UPSERT_KEY, UPDATE_META, UPSERT_ELEM, DELETE_ELEM, TRIM_LIST,
         ARCHIVE_MEM, UNINDEX_MEM, HISTORY_MEM, UPSERT_MEM, INDEX_MEM, DROP_VECTORS_UNDER, DROP_INDEX, PUT_INDEX,
         DELETE_VECTORS, INSERT_VECTOR)
