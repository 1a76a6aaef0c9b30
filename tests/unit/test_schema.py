"""Schema migrations of the keys table (the memories' are in test_memories.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from memd.store import schema as store_mod
from memd.store.schema import migrate
from memd.store.tokens import field_tokens, ns_tokens


def v3_file(path: str) -> sqlite3.Connection:
    """A database exactly as a v3 memd left it."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    conn.create_function("memd_ns_tokens", 1, ns_tokens)
    conn.create_function("memd_field_tokens", 1, field_tokens)
    for migration in store_mod.MIGRATIONS[:3]:
        for statement in migration.split(";\n"):
            if statement.strip():
                conn.execute(statement)
    conn.execute("PRAGMA user_version = 3")
    return conn


KEYS = [(b"s", 1, b"value", None, 0, 0, 0, 0), (b"h", 3, None, 1_900_000_000_000, 2, 0, 0, 5),
        (b"\x00bin\xff", 1, b"\x01", 1_800_000_000_000, 0, 0, 0, 0)]
ELEMS = [(b"h", b"f1", b"x", None), (b"h", b"f2", b"y", None)]


def test_v3_keys_table_becomes_without_rowid_in_database_0_keeping_rows_index_and_cascades(tmp_path: Path) -> None:
    """v4 made ``keys`` WITHOUT ROWID; v7 put every key and element in database 0 (``db`` leads both keys)."""
    path = str(tmp_path / "db")
    conn = v3_file(path)
    assert "WITHOUT ROWID" not in conn.execute("SELECT sql FROM sqlite_master WHERE name = 'keys'").fetchone()[0]
    conn.executemany("INSERT INTO keys VALUES (?, ?, ?, ?, ?, ?, ?, ?)", KEYS)
    conn.executemany("INSERT INTO elems VALUES (?, ?, ?, ?)", ELEMS)
    conn.close()

    assert migrate(path) == 3
    conn = sqlite3.connect(path, isolation_level=None)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == store_mod.SCHEMA_VERSION == 7
    assert "WITHOUT ROWID" in conn.execute("SELECT sql FROM sqlite_master WHERE name = 'keys'").fetchone()[0]
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert sorted(conn.execute("SELECT * FROM keys").fetchall()) == sorted((0, *k) for k in KEYS)
    assert conn.execute("SELECT * FROM elems ORDER BY sub").fetchall() == [(0, *e) for e in ELEMS]
    # the expiry index is back, and compaction's query uses it
    plan = conn.execute("EXPLAIN QUERY PLAN SELECT key FROM keys WHERE expires_at <= 1850000000000").fetchall()
    assert any("keys_expiry" in row[-1] for row in plan), plan
    # the cascades are back: recreating a collection (gen bumped) and deleting it purge its elements
    # ... each for its own database only: database 1's same-named hash keeps its elements
    conn.execute("INSERT INTO keys (db, key, type, count) VALUES (1, ?, 3, 2)", (b"h",))
    conn.executemany("INSERT INTO elems VALUES (1, ?, ?, ?, ?)", ELEMS)
    conn.execute("UPDATE keys SET gen = gen + 1 WHERE db = 0 AND key = ?", (b"h",))
    assert conn.execute("SELECT db, count(*) FROM elems GROUP BY db").fetchall() == [(1, 2)]
    conn.executemany("INSERT INTO elems VALUES (0, ?, ?, ?, ?)", ELEMS)
    conn.execute("DELETE FROM keys WHERE db = 0 AND key = ?", (b"h",))
    assert conn.execute("SELECT db, count(*) FROM elems GROUP BY db").fetchall() == [(1, 2)]
    conn.execute("DELETE FROM keys WHERE db = 1 AND key = ?", (b"h",))
    assert conn.execute("SELECT count(*) FROM elems").fetchone()[0] == 0
    # a sorted set's range read in database 1 walks the score index
    plan = conn.execute("EXPLAIN QUERY PLAN SELECT score, sub FROM elems WHERE db = 1 AND key = ? AND score >= 0 "
                        "ORDER BY score, sub LIMIT 10", (b"z",)).fetchall()
    assert any("elems_score" in row[-1] for row in plan), plan
    conn.close()
    assert migrate(path) == 7  # and a second open changes nothing


def test_new_file_is_created_at_v7(tmp_path: Path) -> None:
    path = str(tmp_path / "db")
    assert migrate(path) == 0
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 7
    assert "WITHOUT ROWID" in conn.execute("SELECT sql FROM sqlite_master WHERE name = 'keys'").fetchone()[0]
    assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental, set before the first table
    conn.close()


def test_v4_memories_with_nul_get_exact_fields_and_text(tmp_path: Path) -> None:
    """v4 computed ``fields`` and the indexed text with SQLite's JSON functions, which cut strings at NUL."""
    path = str(tmp_path / "db")
    conn = v3_file(path)
    for statement in store_mod.MIGRATIONS[3].split(";\n"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 4")
    value = '{"a": "x\\u0000y zebra", "b": 1}'
    conn.execute("INSERT INTO mem_items (ns, key, value, version, created_at, updated_at, fields) "
                 f"VALUES ('ns', 'k', ?, 1, 1, 1, {store_mod.FIELDS_OF.format(v='?1')})", (value,))
    conn.execute("INSERT INTO mem_fts (rowid, body, ns, f) SELECT rowid, "
                 f"{store_mod.TEXT_OF.format('value')}, '', memd_field_tokens(fields) FROM mem_items")
    assert conn.execute("SELECT fields FROM mem_items").fetchone()[0] == '{"a":"x","b":1}'  # what v4 did
    assert conn.execute("SELECT rowid FROM mem_fts WHERE mem_fts MATCH 'zebra'").fetchall() == []
    conn.close()
    assert migrate(path) == 4
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT fields FROM mem_items").fetchone()[0] == '{"a":"x\\u0000y zebra","b":1}'
    assert conn.execute("SELECT rowid FROM mem_fts WHERE mem_fts MATCH 'zebra'").fetchall() == [(1,)]
    assert conn.execute("INSERT INTO mem_fts (mem_fts) VALUES ('integrity-check')").fetchall() == []
    conn.close()


def test_v4_copies_the_keys_in_one_sorted_pass(tmp_path: Path) -> None:
    """Read in rowid (flush) order, each insert into the new key-clustered table lands on a random leaf:
    on a big store, page reads and rewrites for every key. A straight scan and a sort fill it in order."""
    conn = v3_file(str(tmp_path / "db"))
    copy = next(s for s in store_mod.MIGRATIONS[3].split(";\n") if s.strip().startswith("CREATE TABLE keys_v4"))
    select = next(s for s in store_mod.MIGRATIONS[3].split(";\n") if "INSERT INTO keys_v4" in s)
    conn.execute(copy)
    plan = [row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + select).fetchall()]
    conn.close()
    assert any(step == "SCAN keys" for step in plan), plan  # the table itself, not through its key index
    assert "USE TEMP B-TREE FOR ORDER BY" in plan, plan
