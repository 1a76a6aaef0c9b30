"""memd on a Python whose ``sqlite3`` carries its own copy of SQLite, as python-build-standalone's
(uv, mise, rye) and pysqlite3-binary's do: memd._sqlite must notice that the connections belong
to another copy of the library, leave their handles alone, and memd must work on the pure-Python
paths (FTS5's bm25(), sqlite3's executemany) and say so when it is ready.

The situation is built with pysqlite3-binary, a sqlite3-compatible module with SQLite linked into
it, put in place of ``sqlite3`` before memd is imported. The probe itself, in one process, is
tested in tests/unit/test_csqlite.py.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator

import pysqlite3.dbapi2 as foreign_sqlite3
import pytest
import redis

from tests.integration.daemon import Daemon

pytestmark = pytest.mark.timeout(120)

# ``python -c`` in place of ``python -m memd``: pysqlite3 becomes ``sqlite3`` for memd, aiosqlite and all
AS_SQLITE3 = ("import runpy, sys, pysqlite3.dbapi2 as d; sys.modules['sqlite3'] = sys.modules['sqlite3.dbapi2'] = d; "
              "sys.argv[0] = 'memd'; runpy.run_module('memd', run_name='__main__', alter_sys=True)")


@pytest.fixture
def foreign_daemon() -> Iterator[Daemon]:
    d = Daemon(fsync="always")
    assert d.args[1:3] == ["-m", "memd"]
    d.args[1:3] = ["-c", AS_SQLITE3]
    try:
        yield d
    finally:
        d.cleanup()


def _ready_message(d: Daemon) -> str:
    """The last ``ready`` log line's message (the log is one JSON object a line).

    The socket accepts before that line is written: wait for it (bounded).
    """
    deadline = time.monotonic() + 30
    while True:
        messages = [json.loads(line)["msg"] for line in d.log().splitlines() if '"msg": "ready ' in line]
        if messages:
            return str(messages[-1])
        assert time.monotonic() < deadline, d.log()
        time.sleep(0.02)


def test_memd_works_on_the_pure_python_paths_and_says_why(foreign_daemon: Daemon) -> None:
    d = foreign_daemon.start()
    ready = _ready_message(d)
    assert "search_ranking=\"bm25 (memd._sqlite not used: Python's sqlite3 runs another copy of SQLite, " \
           f"{foreign_sqlite3.sqlite_version} (its module: " in ready, ready
    assert "the flush uses sqlite3's executemany" in ready, ready
    r = redis.Redis(unix_socket_path=d.socket, socket_timeout=10)
    try:
        pipe = r.pipeline(transaction=False)
        for i in range(2000):  # many rows per flush statement: the path memd._sqlite.executemany would take
            pipe.set(f"k{i}", f"v{i}")
        pipe.rpush("list", *[str(i) for i in range(300)])
        for i in range(300):
            pipe.execute_command("MEM.PUT", "notes", f"filler{i}", json.dumps({"text": f"sushi rice number {i}"}))
        pipe.execute_command("MEM.PUT", "notes", "once", json.dumps({"text": "ramen noodles broth pork egg onion"}))
        pipe.execute_command("MEM.PUT", "notes", "many", json.dumps({"text": "ramen ramen ramen ramen noodles broth"}))
        pipe.execute()
        r.execute_command("MEMD.FLUSH")
    finally:
        r.close()
    assert d.stop() == 0, d.log()

    # restarted, nothing is left in the buffer: every read below comes from the SQLite file
    d.start()
    r = redis.Redis(unix_socket_path=d.socket, socket_timeout=10)
    try:
        assert r.mget([f"k{i}" for i in range(2000)]) == [f"v{i}".encode() for i in range(2000)]
        assert r.lrange("list", 0, -1) == [str(i).encode() for i in range(300)]
        found = [json.loads(x) for x in r.execute_command("MEM.SEARCH", "notes", "QUERY", "ramen")]
        assert [m["key"] for m in found] == ["many", "once"], found
        assert found[0]["score"] > found[1]["score"] > 0, found
        assert len(r.execute_command("MEM.SEARCH", "notes", "QUERY", "sushi", "LIMIT", "1000")) == 300
    finally:
        r.close()
    assert d.stop() == 0, d.log()
    assert "Traceback" not in d.log(), d.log()

    # the file the other SQLite wrote is sound for this one too
    db = sqlite3.connect(os.path.join(d.data_dir, "memd.sqlite3"))
    try:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert db.execute("SELECT count(*) FROM mem_items WHERE ns LIKE 'notes%'").fetchone()[0] >= 302
    finally:
        db.close()
