"""Statements on a SQLite *file* rather than on the running store: `memd check`, backup verification.

They open the file read-only through a URI, and a path is not a URI: ``#`` starts a
fragment, ``?`` a query, ``%`` an escape, so a data directory such as ``/srv/a#b`` would
be cut at ``#`` (and SQLite would create an empty database at the cut path). Every
read-only URI in memd is built by :func:`ro_uri`, which escapes the path.
"""

from __future__ import annotations

import os
import pathlib
import sqlite3
from typing import NamedTuple


def ro_uri(path: str) -> str:
    """A read-only SQLite URI for ``path``: percent-escaped (``#``, ``?``, ``%``, spaces, non-ASCII)."""
    return pathlib.Path(os.path.abspath(path)).as_uri() + "?mode=ro"


def connect_ro(path: str) -> sqlite3.Connection:
    """A read-only connection to an existing file (never creates one)."""
    return sqlite3.connect(ro_uri(path), uri=True)


class FileCheck(NamedTuple):
    problems: list[str]  # integrity_check's lines; ["ok"] when sound
    schema_version: int
    flushed_lsn: int | None  # None: no meta row
    keys: int  # rows in ``keys`` (Redis keys, expired ones included)


def check_file(path: str) -> FileCheck:
    """Integrity, schema version, flushed LSN and key count of a store file; raises sqlite3.Error."""
    conn = connect_ro(path)
    try:
        problems = [str(r[0]) for r in conn.execute("PRAGMA integrity_check")]
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        row = conn.execute("SELECT value FROM meta WHERE name = 'flushed_lsn'").fetchone()
        keys = int(conn.execute("SELECT count(*) FROM keys").fetchone()[0])
    finally:
        conn.close()
    return FileCheck(problems, version, None if row is None else int(row[0]), keys)


def schema_version(path: str) -> int:
    """The schema version of a store file (0: an empty file)."""
    conn = connect_ro(path)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()
