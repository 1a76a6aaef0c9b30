"""memd._sqlite, the optional C extension: whether it loads and works here, and what it gives.

It gives two things on a sqlite3 connection: ``memd_bm25``, FTS5's bm25 scores 2x faster,
and an ``executemany`` that keeps the GIL released for a whole batch (sqlite3's takes it
back after every row). Either may be missing (no compiler or SQLite headers at install
time) or fail on this Python; then the store uses FTS5's ``bm25()`` and sqlite3's
``executemany`` and says so at start-up.

The extension reads the ``sqlite3*`` out of sqlite3's connection objects and calls the
libsqlite3 it was built against. That is only sound when Python's ``sqlite3`` runs that very
copy of SQLite. Debian's and pyenv's Pythons link ``_sqlite3`` to the system libsqlite3;
python-build-standalone (what uv, mise and rye install) and pysqlite3-binary carry a copy of
their own, and handing their handles to another copy is undefined behaviour. So the extension
is used only after its ``link_check`` has proved, with a probe that never touches a foreign
handle, that both sides share one library (the method is described at the top of
memd/_sqlite.c). Anything else, including an error in the probe, means the slower paths.
"""

from __future__ import annotations

import logging
import sqlite3
from types import ModuleType
from typing import Any

from memd.store.schema import connect

log = logging.getLogger("memd.store")


def load(sqlite_module: ModuleType) -> tuple[ModuleType | None, str]:
    """``(memd._sqlite, "")`` if it is built and runs the SQLite ``sqlite_module`` runs; else ``(None, why)``.

    ``why`` is one phrase for logs and INFO. Which SQLite a loaded module calls cannot change
    while the process runs: one answer at import is enough.
    """
    try:
        from memd import _sqlite
    except ImportError as exc:  # no compiler or SQLite headers at install time (optional, see pyproject.toml)
        return None, f"memd._sqlite not built: {exc}"
    try:
        same, detail = _sqlite.link_check(sqlite_module)
    except Exception as exc:  # unknown is a mismatch: never guess that a handle is ours
        return None, f"memd._sqlite not used: its SQLite check failed ({type(exc).__name__}: {exc})"
    if not same:
        return None, f"memd._sqlite not used: {detail}"
    return _sqlite, ""


ext: Any  # the C module, or None
_error: str  # why it is None
ext, _error = load(sqlite3)


def main_file(conn: sqlite3.Connection) -> str:
    """The file name SQLite reports for ``conn``: what memd._sqlite checks a handle against."""
    return str(conn.execute("PRAGMA database_list").fetchone()[2])


def ranking_function(path: str) -> str:
    """``memd_bm25`` (memd._sqlite: FTS5's bm25 scores, 2x faster) if it loads and works here, else ``bm25``."""
    global _error
    if ext is None:
        return "bm25"
    try:
        conn = connect(path)
        try:
            ext.register_rank(conn, main_file(conn), "mem_fts_docsize")
            conn.execute("SELECT memd_bm25(mem_fts) FROM mem_fts WHERE mem_fts MATCH 'x' LIMIT 1").fetchall()
        finally:
            conn.close()
    except (RuntimeError, TypeError, sqlite3.Error) as exc:
        _error = str(exc)
        return "bm25"
    return "memd_bm25"


def bulk_file(conn: sqlite3.Connection) -> str | None:
    """The file name memd._sqlite.executemany checks ``conn`` against, if it works on it; else None.

    Without it the flush uses sqlite3's executemany, which takes the GIL back after every row.
    """
    if ext is None:
        return None
    name = main_file(conn)
    try:
        ext.executemany(conn, name, "SELECT ?", [(1,), (2,)])
    except (RuntimeError, TypeError, sqlite3.Error) as exc:
        log.warning("flush_bulk_unavailable error=%r (the flush uses sqlite3's executemany)", str(exc))
        return None
    return name


def ranking_status() -> str:
    """One line for logs and INFO: which ranking function searches use, and why."""
    if ext is None:
        return f"bm25 ({_error}; FTS ranking is about 2x slower, the flush uses sqlite3's executemany)"
    if _error:
        return f"bm25 (memd._sqlite failed: {_error}; FTS ranking is about 2x slower)"
    return "memd_bm25 (memd._sqlite)"

