"""Databases exactly as an older memd left them, with rows in their keys table."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from memd.store import schema
from memd.store.tokens import field_tokens, ns_tokens

KeyRow = tuple[bytes, int, bytes | None, int | None, int, int, int, int]


def old_store(path: str, version: int, keys: Iterable[KeyRow] = ()) -> None:
    """Create ``path`` at schema ``version`` (1..SCHEMA_VERSION) by the migrations up to it, and add ``keys``."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.execute("PRAGMA synchronous = OFF")  # test data: no fsync per DDL statement
        conn.create_function("memd_ns_tokens", 1, ns_tokens)
        conn.create_function("memd_field_tokens", 1, field_tokens)
        for migration in schema.MIGRATIONS[:version]:
            for statement in migration.split(";\n"):
                if statement.strip():
                    conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {version}")
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO keys VALUES (?, ?, ?, ?, ?, ?, ?, ?)", keys)
        conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode = WAL")  # as memd leaves every store
    finally:
        conn.close()


def string_keys(n: int) -> list[KeyRow]:
    """``n`` string keys ``key:00000000``... with 100-byte values, every tenth with an expiry."""
    return [(b"key:%08d" % i, 1, b"v" * 100, 1_900_000_000_000 + i if i % 10 == 0 else None, 0, 0, 0, 0)
            for i in range(n)]
