"""Differential test of the databases: a real memd daemon against redis-server 7.0, both with 16.

SELECT, MOVE, SWAPDB, FLUSHDB / FLUSHALL, COPY ... DB, DBSIZE, and every key
command's view of the database selected, byte for byte over RESP2 and RESP3:
a fixed corpus (argument errors, each command's edge cases, a transaction
that SELECTs between its commands), then seeded random sequences of
commands spread over four databases, each followed by a comparison of every
database's contents (each key's type and value), with
memd's buffer flushed to SQLite now and then. WATCH across SELECT and SWAPDB
is compared as outcomes of EXEC. A restart of the daemon (SIGKILL under
``fsync=always``) keeps every database's keys and the SWAPDB map.
redis-server is required: missing, the test fails.
"""

from __future__ import annotations

import os
import random
import signal
from collections.abc import Iterator

import pytest

from tests.integration.daemon import Daemon
from tests.integration.diffkit import run_lines, split_corpus
from tests.integration.test_differential_handlers import cmd
from tests.integration.test_differential_server import (  # noqa: F401  (fixtures)
    Conn,
    Pair,
    memd_socket,
    pair,
    redis_socket,
)

pytestmark = pytest.mark.timeout(180)

SEEDS = int(os.environ.get("MEMD_DIFF_SEEDS", "10"))
STEPS = 200
DATABASES = 4  # the random sequences use databases 0..3 (of 16), so keys meet often

CORPUS = r"""
SELECT 0
SELECT 15
SELECT 16
SELECT -1
SELECT x
SELECT 2147483648
SELECT 1 2
SET k db1
SELECT 0
GET k
SET k db0
MOVE k 1
MOVE k 2
MOVE k 0
MOVE nokey 2
MOVE k 16
MOVE k -1
MOVE k x
MOVE k 2147483648
MOVE k
SELECT 2
GET k
TTL k
SELECT 0
SET t v EX 100
MOVE t 3
SELECT 3
TTL t
RPUSH l a b c
HSET h f v g w
ZADD z 1 one 2 two
SADD s m
MOVE l 0
MOVE h 0
MOVE z 0
MOVE s 0
SELECT 0
LRANGE l 0 -1
HGETALL h
ZRANGE z 0 -1 WITHSCORES
SMEMBERS s
DBSIZE
COPY l l DB 5
COPY l l DB 5
COPY l l DB 5 REPLACE
COPY l l
COPY l l DB 0
COPY l l2 DB 0
COPY l l DB 16
COPY l l DB x
COPY nokey l DB 5
SELECT 5
LRANGE l 0 -1
TYPE l
SELECT 0
SWAPDB 0 5
LRANGE l 0 -1
DBSIZE
SWAPDB 0 5
SWAPDB 0 0
SWAPDB 0 16
SWAPDB 16 0
SWAPDB x 0
SWAPDB 0 x
SWAPDB -1 0
SWAPDB 2147483648 0
SWAPDB 0
DBSIZE
SELECT 5
DBSIZE
FLUSHDB
DBSIZE
SELECT 0
DBSIZE
FLUSHDB ASYNC
FLUSHDB SYNC
FLUSHDB BOGUS
DBSIZE
SELECT 3
SET three 3
SELECT 4
SET four 4
FLUSHALL
DBSIZE
SELECT 3
DBSIZE
MULTI
SET a 1
SELECT 6
SET a 6
INCR n
MOVE a 7
SELECT 7
GET a
SWAPDB 6 7
GET a
SELECT 16
EXEC
GET a
SELECT 6
GET a
GET n
SELECT 0
MULTI
SELECT 1
SET inside multi
DISCARD
SELECT 1
GET inside
SELECT 0
"""


def test_database_corpus(pair: Pair) -> None:
    for i, block in enumerate(split_corpus(CORPUS)):
        run_lines(pair, "\n".join(block), f"corpus block {i}")
    pair.run(cmd("FLUSHALL"), "cleanup")
    pair.assert_clean()


# ---- random sequences over several databases ----------------------------------------------

KEYS = ["a", "b", "c", "l", "h", "z"]


def _random_step(rng: random.Random) -> str:
    k = rng.choice(KEYS)
    db = rng.randrange(DATABASES)
    roll = rng.random()
    if roll < 0.15:
        return f"SELECT {db}"
    if roll < 0.3:
        return f"MOVE {k} {db}"
    if roll < 0.38:
        return f"COPY {k} {rng.choice(KEYS)} DB {db}" + rng.choice(["", " REPLACE"])
    if roll < 0.43:
        return f"SWAPDB {db} {rng.randrange(DATABASES)}"
    if roll < 0.45:
        return "FLUSHDB"
    if roll < 0.55:
        return f"SET {k} v{rng.randrange(100)}" + rng.choice(["", "", f" EX {rng.randrange(50, 500)}"])
    if roll < 0.65:
        return f"RPUSH {k} {rng.randrange(10)}"
    if roll < 0.72:
        return f"HSET {k} f{rng.randrange(3)} {rng.randrange(10)}"
    if roll < 0.79:
        return f"ZADD {k} {rng.randrange(10)} m{rng.randrange(5)}"
    if roll < 0.85:
        return f"DEL {k}"
    if roll < 0.9:
        return f"RENAME {k} {rng.choice(KEYS)}"
    return rng.choice(["DBSIZE", f"TYPE {k}", f"EXISTS {k}", f"TTL {k}"])


def _contents(pair: Pair, where: str) -> None:
    """Every database's keys and values, compared (reads only: both sides end where they began)."""
    for db in range(DATABASES):
        pair.run(cmd(f"SELECT {db}"), where)
        pair.run(cmd("DBSIZE"), where)
        for k in KEYS:
            for read in (f"TYPE {k}", f"GET {k}", f"LRANGE {k} 0 -1", f"HGETALL {k}", f"ZRANGE {k} 0 -1 WITHSCORES"):
                pair.run(cmd(read), where)


@pytest.mark.parametrize("seed", range(SEEDS))
def test_random_sequences_over_databases(pair: Pair, seed: int) -> None:
    rng = random.Random(seed)
    for step in range(STEPS):
        pair.run(cmd(_random_step(rng)), f"seed {seed} step {step}")
        if step % 50 == 49:
            pair.memd_flush()
    _contents(pair, f"seed {seed} after")
    pair.run(cmd("FLUSHALL"), "cleanup")
    pair.assert_clean()


# ---- WATCH across databases -----------------------------------------------------------------

@pytest.mark.parametrize("protocol", [2, 3])
def test_watch_across_select_and_swapdb(redis_socket: str, memd_socket: str, protocol: int) -> None:
    scripts = [
        # the same name in another database is another key
        ["S1", "SELECT 1", "SET k v", "WATCH k", "B:SET k other", "EXEC:GET k"],
        # a write to the watched key through another connection that selected its database
        ["S1", "SELECT 1", "SET k v", "WATCH k", "B:SELECT 1", "B:SET k other", "EXEC:GET k"],
        # FLUSHDB of another database leaves the watch alone; of its own, aborts
        ["S1", "SELECT 1", "SET k v", "WATCH k", "B:FLUSHDB", "EXEC:GET k"],
        ["S1", "SELECT 1", "SET k v", "WATCH k", "B:SELECT 1", "B:FLUSHDB", "EXEC:GET k"],
        # SWAPDB: the watched key existed, or exists after the swap, or neither
        ["S1", "SELECT 1", "SET k v", "WATCH k", "B:SWAPDB 1 2", "EXEC:GET k"],
        ["S1", "SELECT 1", "WATCH k", "B:SELECT 2", "B:SET k v", "B:SWAPDB 1 2", "EXEC:GET k"],
        ["S1", "SELECT 1", "WATCH nothere", "B:SWAPDB 1 2", "EXEC:GET k"],
        # watched in one database, then SELECT elsewhere before EXEC: the watch stays on the first
        ["S1", "SELECT 1", "SET k v", "WATCH k", "SELECT 2", "B:SELECT 1", "B:SET k w", "EXEC:GET k"],
        # MOVE away of the watched key aborts; MOVE into its database too
        ["S1", "SET k v", "WATCH k", "B:MOVE k 3", "EXEC:GET k"],
        ["S1", "SELECT 3", "WATCH k", "B:SET k v", "B:MOVE k 3", "EXEC:GET k"],
    ]
    for script in scripts:
        outcomes = []
        for path in (redis_socket, memd_socket):
            a, b = Conn(path, protocol), Conn(path, protocol)
            seen: list[bytes] = []
            try:
                a.call(cmd("FLUSHALL"))
                for step in script[1:]:
                    if step.startswith("B:"):
                        seen.append(b.call(cmd(step[2:])))
                    elif step.startswith("EXEC:"):
                        assert a.call(cmd("MULTI")) == b"+OK\r\n"
                        a.call(cmd(step[5:]))
                        seen.append(a.call(cmd("EXEC")))
                    else:
                        seen.append(a.call(cmd(step)))
                a.call(cmd("FLUSHALL"))
            finally:
                a.close()
                b.close()
            outcomes.append(seen)
        assert outcomes[0] == outcomes[1], (script, outcomes)


# ---- durability ---------------------------------------------------------------------------------

@pytest.fixture
def always_daemon() -> Iterator[Daemon]:
    d = Daemon(fsync="always").start()
    try:
        yield d
    finally:
        d.cleanup()


def test_databases_and_swaps_survive_sigkill(always_daemon: Daemon) -> None:
    """Acknowledged under fsync=always, before and after a flush: every database and the SWAPDB map."""
    c = Conn(always_daemon.socket, 2)
    for line in ("SELECT 1", "SET k one", "RPUSH l a b", "SELECT 2", "SET k two", "MEMD.FLUSH", "SWAPDB 1 2",
                 "SELECT 3", "SET k three", "MOVE k 4", "SELECT 5", "SET k five", "SWAPDB 5 6", "SELECT 0",
                 "FLUSHDB"):
        assert not c.call(cmd(line)).startswith(b"-"), line
    c.close()
    always_daemon.stop(signal.SIGKILL)
    always_daemon.start()
    c = Conn(always_daemon.socket, 2)
    got = {}
    for db in range(8):
        c.call(cmd(f"SELECT {db}"))
        got[db] = (c.call(cmd("GET k")), c.call(cmd("DBSIZE")))
    assert got == {0: (b"$-1\r\n", b":0\r\n"), 1: (b"$3\r\ntwo\r\n", b":1\r\n"), 2: (b"$3\r\none\r\n", b":2\r\n"),
                   3: (b"$-1\r\n", b":0\r\n"), 4: (b"$5\r\nthree\r\n", b":1\r\n"), 5: (b"$-1\r\n", b":0\r\n"),
                   6: (b"$4\r\nfive\r\n", b":1\r\n"), 7: (b"$-1\r\n", b":0\r\n")}
    c.call(cmd("SELECT 2"))
    assert c.call(cmd("LRANGE l 0 -1")) == b"*2\r\n$1\r\na\r\n$1\r\nb\r\n"
    c.close()
