"""memd._sqlite: its ranking function must give FTS5's bm25() scores bit for bit, its executemany
must do what sqlite3's does, both must be in use, and only on connections of a sqlite3 module
proven to run the same SQLite (pysqlite3-binary plays one that carries its own copy).

CI builds the extension (.ci/run installs SQLite's headers); a missing build fails here loudly
instead of leaving memd silently on the slower paths.
"""

from __future__ import annotations

import random
import shlex
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
import types
from pathlib import Path

import pysqlite3._sqlite3
import pysqlite3.dbapi2 as foreign_sqlite3
import pytest

from memd import _sqlite
from memd.store import csqlite
from memd.store.schema import migrate

WORDS = ["lighthouse", "keeper", "tide", "harbor", "storm", "lantern", "rope", "gull", "anchor", "mist"]


def test_the_extension_is_built_and_chosen(tmp_path: Path) -> None:
    path = str(tmp_path / "db")
    migrate(path)
    assert csqlite.ext is not None, csqlite.ranking_status()
    assert csqlite.ranking_function(path) == "memd_bm25", csqlite.ranking_status()
    conn = sqlite3.connect(path)
    assert csqlite.bulk_file(conn) == conn.execute("PRAGMA database_list").fetchone()[2]
    conn.close()


def test_this_python_is_proven_to_share_memd_sqlite_library() -> None:
    """The other half: with the Python's own sqlite3 the probe finds one library, so the fast paths stay on."""
    same, detail = _sqlite.link_check(sqlite3)
    assert same, detail
    assert f"runs the SQLite memd._sqlite is linked to: {sqlite3.sqlite_version}" in detail
    assert csqlite.load(sqlite3) == (_sqlite, "")


def test_a_sqlite3_module_with_its_own_sqlite_is_detected_and_its_handles_left_alone() -> None:
    same, detail = _sqlite.link_check(foreign_sqlite3)
    assert not same
    assert f"runs another copy of SQLite, {foreign_sqlite3.sqlite_version} (its module: " in detail, detail
    assert "pysqlite3" in detail and sqlite3.sqlite_version in detail, detail
    assert csqlite.load(foreign_sqlite3) == (None, f"memd._sqlite not used: {detail}")
    conn = foreign_sqlite3.connect(":memory:")
    name = conn.execute("PRAGMA database_list").fetchone()[2]
    with pytest.raises(TypeError, match="link_check proved"):
        _sqlite.register_rank(conn, name, "mem_fts_docsize")
    with pytest.raises(TypeError, match="link_check proved"):
        _sqlite.executemany(conn, name, "SELECT ?", [(1,), (2,)])
    conn.close()
    # the Python's own sqlite3 stays proven
    assert _sqlite.link_check(sqlite3)[0]
    assert csqlite.load(sqlite3)[0] is _sqlite


def test_anything_unproven_is_a_mismatch() -> None:
    """This SQLite opens the connection but the object does not start with its handle; or nothing opens."""

    class Connection:  # a Python object: no sqlite3* where CPython's Connection keeps it
        def __init__(self, inner: sqlite3.Connection) -> None:
            self.inner = inner

        def close(self) -> None:
            self.inner.close()

    wrapped = types.ModuleType("wrapped_sqlite3")
    wrapped.Connection = Connection  # type: ignore[attr-defined]
    wrapped.connect = lambda name: Connection(sqlite3.connect(name))  # type: ignore[attr-defined]
    same, detail = _sqlite.link_check(wrapped)
    assert not same
    assert detail.startswith(f"Python's sqlite3 runs this SQLite {sqlite3.sqlite_version} (")
    assert detail.endswith(") but its Connection object does not start with the database handle"), detail
    with pytest.raises(TypeError, match="link_check proved"):
        _sqlite.executemany(Connection(sqlite3.connect(":memory:")), "", "SELECT ?", [(1,), (2,)])

    def cannot_open(name: str) -> None:
        raise OSError("read-only file system")

    broken = types.ModuleType("broken_sqlite3")
    broken.Connection = sqlite3.Connection  # type: ignore[attr-defined]
    broken.connect = cannot_open  # type: ignore[attr-defined]
    assert _sqlite.link_check(broken) == (False, "the sqlite3 module cannot open :memory: (read-only file system)")
    assert _sqlite.link_check(types.ModuleType("empty")) == (False, "the sqlite3 module has no Connection type")


# run in a child: it loads this module built against pysqlite3's SQLite, and the Python's sqlite3 beside it
OTHER_BUILD_CHILD = """
import importlib.util, sqlite3, sys
import pysqlite3.dbapi2 as foreign
spec = importlib.util.spec_from_file_location("_sqlite", sys.argv[1])
m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)
same, detail = m.link_check(sqlite3)
assert not same and f"runs another copy of SQLite, {sqlite3.sqlite_version} (its module: " in detail, detail
same, detail = m.link_check(foreign)
assert same and f"runs the SQLite memd._sqlite is linked to: {foreign.sqlite_version} (" in detail, detail
try:
    m.executemany(sqlite3.connect(":memory:"), "", "SELECT ?", [(1,), (2,)])
    raise AssertionError("a connection of the unproven sqlite3 was accepted")
except TypeError as exc:
    assert "link_check proved" in str(exc), exc
conn = foreign.connect(":memory:", isolation_level=None)
name = conn.execute("PRAGMA database_list").fetchone()[2]
conn.execute("CREATE VIRTUAL TABLE f USING fts5(body)")
m.executemany(conn, name, "INSERT INTO f VALUES (?)", [("tide " * (i % 7 + 1) + "gull " * (i % 3),) for i in range(300)])
m.register_rank(conn, name, "f_docsize")
rows = conn.execute("SELECT rowid, bm25(f), memd_bm25(f) FROM f WHERE f MATCH 'tide OR gull'").fetchall()
assert len(rows) == 300 and all(want == got for _, want, got in rows), rows[:3]
print("ok", len(rows))
"""


def test_a_build_against_another_sqlite_accepts_that_copy_only(tmp_path: Path) -> None:
    """The probe finds the library actually called, not the system one: this module built against
    pysqlite3-binary's SQLite (as against another libsqlite3 file) refuses the Python's own sqlite3
    and works on pysqlite3's connections, with bm25() scores bit for bit."""
    compiler = shlex.split(str(sysconfig.get_config_var("CC") or "cc"))
    assert shutil.which(compiler[0]), f"no C compiler ({compiler[0]}): install gcc"
    source = Path(_sqlite.__file__).with_name("_sqlite.c")
    assert source.is_file(), f"{source} is missing: the test builds it against another SQLite"
    other_sqlite = str(pysqlite3._sqlite3.__file__)  # it exports the sqlite3_* API of its SQLite
    built = tmp_path / "_sqlite.so"
    subprocess.run([*compiler, "-shared", "-fPIC", "-O1", f"-I{sysconfig.get_paths()['include']}", str(source),
                    "-o", str(built), other_sqlite, "-lm"], check=True, timeout=120)
    child = subprocess.run([sys.executable, "-c", OTHER_BUILD_CHILD, str(built)], capture_output=True, text=True,
                           timeout=60)
    assert child.returncode == 0, child.stdout + child.stderr
    assert child.stdout.strip() == "ok 300"


def test_executemany_writes_what_sqlite3_executemany_writes(tmp_path: Path) -> None:
    rows = [(1, 2.5, "text", b"\x00blob\xff", None), (-(1 << 63), -0.0, "été \u2028 \x01", b"", None),
            ((1 << 63) - 1, 1e300, "", b"x" * 5000, 7)]
    results = []
    for use_c in (False, True):
        path = str(tmp_path / f"db{use_c}")
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("CREATE TABLE t (a, b, c, d, e)")
        sql = "INSERT INTO t VALUES (?, ?, ?, ?, ?)"
        if use_c:
            assert csqlite.ext is not None
            csqlite.ext.executemany(conn, conn.execute("PRAGMA database_list").fetchone()[2], sql, rows)
        else:
            conn.executemany(sql, rows)
        results.append(conn.execute("SELECT a, typeof(a), b, typeof(b), c, typeof(c), d, typeof(d), e, typeof(e) "
                                    "FROM t ORDER BY rowid").fetchall())
        conn.close()
    assert results[0] == results[1]
    assert len(results[1]) == 3


def test_executemany_reports_errors_as_sqlite3_does(tmp_path: Path) -> None:
    assert csqlite.ext is not None
    conn = sqlite3.connect(str(tmp_path / "db"), isolation_level=None)
    name = conn.execute("PRAGMA database_list").fetchone()[2]
    conn.execute("CREATE TABLE t (k PRIMARY KEY)")
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        csqlite.ext.executemany(conn, name, "INSERT INTO t VALUES (?)", [(1,), (1,)])
    with pytest.raises(sqlite3.OperationalError, match="takes 1 parameters, rows have 2"):
        csqlite.ext.executemany(conn, name, "INSERT INTO t VALUES (?)", [(1, 2)])
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        csqlite.ext.executemany(conn, name, "INSERT INTO nope VALUES (?)", [(1,), (2,)])
    with pytest.raises(TypeError, match="unsupported parameter type"):
        csqlite.ext.executemany(conn, name, "INSERT INTO t VALUES (?)", [(1,), ([2],)])
    with pytest.raises(OverflowError):
        csqlite.ext.executemany(conn, name, "INSERT INTO t VALUES (?)", [(1 << 64,), (2,)])
    assert conn.execute("SELECT k FROM t").fetchall() == [(1,)]  # autocommit: the first row stayed
    conn.close()


def test_register_refuses_what_is_not_a_connection_or_the_wrong_file(tmp_path: Path) -> None:
    assert csqlite.ext is not None
    conn = sqlite3.connect(str(tmp_path / "db"))
    with pytest.raises(TypeError):
        csqlite.ext.register_rank(object(), "x", "mem_fts_docsize")
    with pytest.raises(RuntimeError, match="handle check failed"):
        csqlite.ext.register_rank(conn, str(tmp_path / "other"), "mem_fts_docsize")
    conn.close()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_scores_equal_fts5_bm25_bit_for_bit(tmp_path: Path, seed: int) -> None:
    """Random documents of varied length (so length normalisation matters), deletions (so the
    docsize rows have gaps), and every query shape: words, AND, OR, NOT, phrases, prefixes,
    column filters and weights."""
    rng = random.Random(seed)
    path = str(tmp_path / "db")
    migrate(path)
    conn = sqlite3.connect(path, isolation_level=None)
    assert csqlite.ext is not None
    csqlite.ext.register_rank(conn, conn.execute("PRAGMA database_list").fetchone()[2], "mem_fts_docsize")
    conn.execute("BEGIN")
    docs = {}
    for rowid in range(1, 401):
        docs[rowid] = (" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 120))), f"n{rowid % 3}")
        conn.execute("INSERT INTO mem_fts (rowid, body, ns) VALUES (?, ?, ?)", (rowid, *docs[rowid]))
    for rowid in rng.sample(range(1, 401), 60):  # contentless: a delete replays the indexed text
        conn.execute("INSERT INTO mem_fts (mem_fts, rowid, body, ns) VALUES ('delete', ?, ?, ?)", (rowid, *docs[rowid]))
    conn.execute("COMMIT")
    assert conn.execute("SELECT count(*) FROM mem_fts_docsize").fetchone()[0] == 340
    queries = ["lighthouse", "tide storm", "tide OR gull", "anchor NOT mist", '"harbor storm"', "lant*",
               "body : keeper", "ns : n1 AND rope", "NEAR(tide gull, 3)"]
    compared = 0
    for q in queries:
        for weights in ("", ", 1, 0", ", 2.5, 0.5"):
            want = conn.execute(f"SELECT rowid, bm25(mem_fts{weights}) FROM mem_fts WHERE mem_fts MATCH ? "
                                "ORDER BY rowid", (q,)).fetchall()
            got = conn.execute(f"SELECT rowid, memd_bm25(mem_fts{weights}) FROM mem_fts WHERE mem_fts MATCH ? "
                               "ORDER BY rowid", (q,)).fetchall()
            assert got == want, (q, weights)
            compared += len(want)
    assert compared > 1000
    conn.close()
