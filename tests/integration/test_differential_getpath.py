"""Differential test of the read fast path (memd.readrun): pipelined GET / MGET runs vs redis-server 7.0.

A run of GETs and MGETs in one read skips per-command dispatch; these
pipelines make every reason the per-command path would answer otherwise
appear next to such runs (SET runs, DEL, expiry, keys of another type,
CLIENT REPLY OFF / SKIP, MULTI, SELECT, a RESP2 subscriber, CLIENT PAUSE,
a script past its time limit), on RESP2 and RESP3, with keys in the buffer
and in SQLite, and compare the raw replies byte for byte; then the counters
a client can see (total_commands_processed, errorstats, CLIENT LIST cmd=).
redis-server is a hard requirement: without it this test fails, it does not skip.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.integration.diffkit import cmd
from tests.integration.test_differential_handlers import pack, read_reply, redis_socket  # noqa: F401  (fixture)
from tests.integration.test_differential_server import Conn, Pair, memd_socket  # noqa: F401  (fixture)

pytestmark = pytest.mark.timeout(60)

MARK = b"end-of-pipeline"


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
def pair(request: pytest.FixtureRequest, redis_socket: str, memd_socket: str) -> Iterator[Pair]:  # noqa: F811
    p = Pair(redis_socket, memd_socket, request.param)
    p.run(cmd("FLUSHALL"), "setup")
    try:
        yield p
    finally:
        p.close()


def raw_pipeline(c: Conn, cmds: list[list[bytes]]) -> list[bytes]:
    """Send ``cmds`` and an ECHO marker in one write; every reply up to the marker's, raw.

    CLIENT REPLY OFF / SKIP make the count of replies differ from the count of commands:
    what came back is compared as a whole."""
    c.sock.sendall(b"".join(pack(a) for a in cmds) + pack([b"ECHO", MARK]))
    replies = []
    while True:
        reply = read_reply(c.f)
        if reply == b"$%d\r\n%b\r\n" % (len(MARK), MARK):
            return replies
        replies.append(reply)


def compare_raw(pair: Pair, cmds: list[list[bytes]], where: str) -> None:
    expected, got = raw_pipeline(pair.redis, cmds), raw_pipeline(pair.memd, cmds)
    pair.count += 1
    if expected != got:
        pair.mismatches.append(f"[{where} resp{pair.protocol}] {cmds!r}\n    redis: {expected!r}\n    memd:  {got!r}")


def lines(text: str) -> list[list[bytes]]:
    return [cmd(line) for line in text.strip().splitlines() if line.strip()]


SETUP = """
SET s1 one
SET s2 two
SET s3 three
RPUSH l1 a b
HSET h1 f v
SADD z1 m
"""

READS = """
GET s1
GET s2
GET missing
GET l1
GET s3
MGET s1 missing l1 s2 h1 s3
MGET s1
GET h1
GET s1
get s2
Get s3
MgEt s3 s2
"""

ARITY = """
GET
GET s1
GET s1 s2
MGET
GET s2
"""


@pytest.mark.parametrize("flushed", [False, True], ids=["buffered", "flushed"])
def test_runs_of_reads(pair: Pair, flushed: bool) -> None:
    """GET / MGET runs over strings, missing keys, keys of other types and arity errors; the keys
    in the buffer, or in SQLite after a flush (and a buffer entry over a flushed key)."""
    pair.pipeline(lines(SETUP), "setup")
    if flushed:
        pair.memd_flush()
        pair.pipeline(lines("SET s2 newer\nEXPIRE s3 100"), "over the flush")
    pair.pipeline(lines(READS), "reads")
    pair.pipeline(lines(READS + ARITY + READS), "reads with arity errors")
    pair.assert_clean()


MIXED = """
GET a
SET a 1
GET a
SET b 2
SET c 3
MGET a b c d
DEL a
GET a
MGET a b
SET a x
EXPIRE a 100
GET a
PERSIST a
GET a
LPUSH a l
GET a
MGET a b c
DEL a b c
GET b
INCR c
GET c
APPEND c 5
MGET c
SET d v EX 100
SETRANGE e 2 xy
GET e
GETDEL e
GET e
"""


def test_mixed_with_writes(pair: Pair) -> None:
    """Reads between SET runs, DEL, EXPIRE, type changes and other writes of the same keys."""
    pair.pipeline(lines(MIXED), "mixed")
    pair.pipeline(lines(MIXED), "mixed again")
    pair.memd_flush()
    pair.pipeline(lines(MIXED), "mixed after a flush")
    pair.assert_clean()


def test_expired_keys(pair: Pair) -> None:
    """Keys whose expiry passed read as missing, buffered and flushed alike (and MGET's null)."""
    pair.pipeline(lines("SET x1 v PX 30\nSET x2 v PX 30\nSET keep v\nSET x3 v\nPEXPIRE x3 30"), "setup")
    pair.memd_flush()
    pair.pipeline(lines("SET x4 v PX 30\nSET x5 v\nPEXPIRE x5 30"), "setup buffered")
    time.sleep(0.1)
    pair.pipeline(lines("GET x1\nGET x2\nGET keep\nGET x3\nGET x4\nGET x5\nMGET x1 keep x4 x5\nGET x1"), "expired")
    pair.assert_clean()


def test_databases(pair: Pair) -> None:
    """SELECT between runs: each run reads the database selected before it."""
    pair.pipeline(lines("SET k zero\nSELECT 1\nSET k one\nLPUSH l x\nSELECT 0\nSET l str"), "setup")
    batch = lines("GET k\nGET l\nSELECT 1\nGET k\nGET l\nMGET k l\nSELECT 2\nGET k\nSELECT 0\nMGET k l")
    pair.pipeline(batch, "databases")
    pair.memd_flush()
    pair.pipeline(batch, "databases flushed")
    pair.pipeline(lines("SWAPDB 0 1") + batch + lines("SWAPDB 0 1"), "databases swapped")
    pair.assert_clean()


def test_multi(pair: Pair) -> None:
    """Inside MULTI a GET queues; EXEC answers it; a run right after EXEC reads its writes."""
    batch = lines("""
SET k v
GET k
MULTI
GET k
MGET k nothing
SET k w
GET k
EXEC
GET k
MGET k
MULTI
GET k
GET
GET k
EXEC
GET k
MULTI
GET k
DISCARD
GET k
""")
    pair.pipeline(batch, "multi")
    pair.assert_clean()


def test_client_reply(pair: Pair) -> None:
    """CLIENT REPLY OFF / SKIP / ON around and inside runs of reads (fewer replies than commands)."""
    pair.pipeline(lines("SET a 1\nSET b 2"), "setup")
    compare_raw(pair, lines("""
GET a
CLIENT REPLY OFF
GET a
GET b
MGET a b
CLIENT REPLY ON
GET a
CLIENT REPLY SKIP
GET a
GET b
MGET a b
CLIENT REPLY SKIP
MGET a b
CLIENT REPLY OFF
CLIENT REPLY SKIP
GET a
CLIENT REPLY ON
GET b
"""), "client reply")
    pair.assert_clean()


def test_subscriber(pair: Pair) -> None:
    """A subscribed client: RESP2 refuses GET / MGET (each its error), RESP3 answers them."""
    pair.pipeline(lines("SET a 1"), "setup")
    compare_raw(pair, lines("SUBSCRIBE ch\nGET a\nGET a\nMGET a b\nPING\nGET a\nUNSUBSCRIBE ch\nGET a\nMGET a"),
                "subscriber")
    pair.assert_clean()


def test_random_runs(pair: Pair) -> None:
    """Seeded random pipelines: runs of GET / MGET among SETs, DELs, expiries, other types, SELECT,
    MULTI and CLIENT REPLY, over a small key space; memd flushes now and then."""
    for seed in range(8):
        rng = random.Random(7000 + 10 * seed + pair.protocol)
        pair.run(cmd("FLUSHALL"), f"seed {seed}")
        for n in range(30):
            batch: list[list[bytes]] = []
            db = 0
            for _ in range(rng.randint(1, 40)):
                batch += random_step(rng, db)
                if batch[-1][0] == b"SELECT":
                    db = int(batch[-1][1])
            batch.append([b"SELECT", b"0"])
            compare_raw(pair, batch, f"seed {seed} batch {n}")
            if rng.random() < 0.15:
                pair.memd_flush()
    pair.assert_clean()


def random_step(rng: random.Random, db: int) -> list[list[bytes]]:
    def key() -> bytes:
        return b"k%d" % rng.randrange(8)
    roll = rng.random()
    if roll < 0.45:
        return [[b"GET", key()] for _ in range(rng.randint(1, 6))]
    if roll < 0.55:
        return [[b"MGET", *(key() for _ in range(rng.randint(1, 4)))]]
    if roll < 0.70:
        return [[b"SET", key(), b"v%d" % rng.randrange(100)] for _ in range(rng.randint(1, 4))]
    if roll < 0.74:
        return [[b"DEL", key()]]
    if roll < 0.77:
        return [[b"PEXPIRE", key(), rng.choice([b"0", b"100000"])]]
    if roll < 0.80:
        return [[b"LPUSH", key(), b"x"]]
    if roll < 0.83:
        return [[b"SELECT", b"%d" % (1 - db)]]
    if roll < 0.87:
        return [[b"MULTI"], [b"GET", key()], [b"SET", key(), b"m"], [b"MGET", key(), key()], [b"EXEC"]]
    if roll < 0.90:
        mode = rng.choice([b"OFF", b"SKIP"])
        return [[b"CLIENT", b"REPLY", mode], [b"GET", key()], [b"GET", key()], [b"CLIENT", b"REPLY", b"ON"]]
    if roll < 0.93:
        return [[b"GET"], [b"GET", key(), key()]]
    return [[b"APPEND", key(), b"a"]]


# ---- what a client sees besides the replies ---------------------------------------------------

def info_fields(c: Conn) -> dict[bytes, int]:
    """INFO's total_commands_processed and errorstat_WRONGTYPE (0 until there is one), from one INFO."""
    fields = {b"total_commands_processed": 0, b"errorstat_WRONGTYPE": 0}
    for line in c.call([b"INFO", b"all"]).split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name in fields:
            fields[name] = int(value.split(b"=")[1] if b"=" in value else value)
    return fields


@pytest.mark.parametrize("protocol", [2, 3])
def test_counters_and_client_list(redis_socket: str, memd_socket: str, protocol: int) -> None:  # noqa: F811
    """total_commands_processed and errorstat_WRONGTYPE grow as Redis's do over a run of reads;
    CLIENT LIST shows the run's last command as the client's cmd=."""
    for path in (redis_socket, memd_socket):
        other = Conn(path, 2)
        c = Conn(path, protocol)
        try:
            c.call(cmd("FLUSHALL"))
            c.call(cmd("LPUSH l x"))
            client_id = int(c.call(cmd("CLIENT ID"))[1:-2])
            before = info_fields(other)
            c.pipeline(lines("GET a\nGET l\nMGET a l\nGET l\nMGET a b"))
            after = info_fields(other)
            # 5 reads and the INFO between them
            assert after[b"total_commands_processed"] - before[b"total_commands_processed"] == 6, path
            assert after[b"errorstat_WRONGTYPE"] - before[b"errorstat_WRONGTYPE"] == 2, path
            clients = other.call(cmd("CLIENT LIST")).decode()
            mine = [line for line in clients.splitlines() if f"id={client_id} " in line]
            assert len(mine) == 1 and " cmd=mget " in mine[0], (path, mine)
            c.pipeline(lines("MGET a\nGET a"))
            clients = other.call(cmd("CLIENT LIST")).decode()
            assert f"id={client_id} " in clients and any(
                " cmd=get " in line for line in clients.splitlines() if f"id={client_id} " in line), path
        finally:
            c.close()
            other.close()


def test_object_idletime(memd_socket: str) -> None:  # noqa: F811
    """A GET run records an access (OBJECT IDLETIME drops back to 0), buffered and flushed."""
    c = Conn(memd_socket, 2)
    try:
        c.call(cmd("FLUSHALL"))
        c.pipeline(lines("SET buffered v\nSET flushed v"))
        assert c.call(cmd("MEMD.FLUSH")).startswith(b"+")
        c.call(cmd("SET buffered v2"))
        time.sleep(2.1)
        assert c.pipeline(lines("OBJECT IDLETIME buffered\nOBJECT IDLETIME flushed")) != [b":0\r\n", b":0\r\n"]
        c.pipeline(lines("GET buffered\nGET flushed\nMGET buffered"))
        assert c.pipeline(lines("OBJECT IDLETIME buffered\nOBJECT IDLETIME flushed")) == [b":0\r\n", b":0\r\n"]
    finally:
        c.close()


@pytest.mark.parametrize("mode", ["WRITE", "ALL"])
def test_client_pause(redis_socket: str, memd_socket: str, mode: str) -> None:  # noqa: F811
    """CLIENT PAUSE WRITE lets a run of reads through at once; ALL holds it until the pause ends."""
    for path in (redis_socket, memd_socket):
        other, c = Conn(path, 2), Conn(path, 2)
        try:
            c.call(cmd("SET a 1"))
            assert other.call(cmd(f"CLIENT PAUSE 400 {mode}")) == b"+OK\r\n"
            t0 = time.monotonic()
            replies = c.pipeline(lines("GET a\nMGET a b\nGET a"))
            waited = time.monotonic() - t0
            assert replies == [b"$1\r\n1\r\n", b"*2\r\n$1\r\n1\r\n$-1\r\n", b"$1\r\n1\r\n"], path
            if mode == "ALL":
                assert waited >= 0.3, (path, waited)
            else:
                assert waited < 0.3, (path, waited)
        finally:
            other.call(cmd("CLIENT UNPAUSE"))
            c.close()
            other.close()


def test_busy_script(redis_socket: str, memd_socket: str) -> None:  # noqa: F811
    """While a script runs past lua-time-limit, each GET / MGET of a run is answered -BUSY."""
    for path in (redis_socket, memd_socket):
        runner, c = Conn(path, 2), Conn(path, 2)
        limit = c.call(cmd("CONFIG GET lua-time-limit"))
        try:
            c.call(cmd("SET a 1"))
            assert c.call(cmd("CONFIG SET lua-time-limit 100")) == b"+OK\r\n"
            runner.sock.sendall(pack(cmd("EVAL 'while true do end' 0")))
            deadline = time.monotonic() + 10
            while not c.call(cmd("PING")).startswith(b"-BUSY ") and time.monotonic() < deadline:
                time.sleep(0.02)  # until the script has run past lua-time-limit
            replies = c.pipeline(lines("GET a\nMGET a\nGET a"))
            assert all(r.startswith(b"-BUSY ") for r in replies), (path, replies)
            assert c.call(cmd("SCRIPT KILL")) == b"+OK\r\n"
            assert read_reply(runner.f).startswith(b"-"), path
            assert c.pipeline(lines("GET a\nMGET a")) == [b"$1\r\n1\r\n", b"*1\r\n$1\r\n1\r\n"], path
        finally:
            value = limit.split(b"\r\n")[-2]
            c.call([b"CONFIG", b"SET", b"lua-time-limit", value])
            c.close()
            runner.close()


def test_concurrent_pipelines(redis_socket: str, memd_socket: str) -> None:  # noqa: F811
    """Several clients pipelining GET runs while others write the same keys: every reply is a value
    some SET wrote or a null, and each client's last read after all writes sees the final values."""
    path = memd_socket
    setup = Conn(path, 2)
    setup.call(cmd("FLUSHALL"))
    errors: list[str] = []

    def writer(n: int) -> None:
        c = Conn(path, 2)
        try:
            for r in range(20):
                c.pipeline([[b"SET", b"c%d" % k, b"w%d-%d" % (n, r)] for k in range(16)])
        finally:
            c.close()

    def reader() -> None:
        c = Conn(path, 3)
        try:
            for _ in range(20):
                for reply in c.pipeline([[b"GET", b"c%d" % k] for k in range(16)]):
                    if not (reply == b"_\r\n" or reply.startswith(b"$") and b"\r\nw" in reply):
                        errors.append(repr(reply))
        finally:
            c.close()
    threads = [threading.Thread(target=writer, args=(n,)) for n in range(2)] + \
        [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors[:5]
    setup.pipeline([[b"SET", b"c%d" % k, b"final"] for k in range(16)])
    assert setup.pipeline([[b"GET", b"c%d" % k] for k in range(16)]) == [b"$5\r\nfinal\r\n"] * 16
    setup.close()
