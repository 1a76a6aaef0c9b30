"""Differential test: the memd daemon against a real redis-server 7.0, over real sockets, byte for byte.

Unlike test_differential_handlers.py (memd's handlers in-process), this
drives a real ``python -m memd serve`` process: the same command sequences go
over Unix sockets to it and to redis-server, on RESP2 and RESP3 connections
(``HELLO 3`` first; its own reply differs by design and is not compared),
and the raw replies must be equal. The corpus, random generator and reply
comparison are imported from test_differential_handlers.py; this file adds
what only a server has: pipelined batches (one write, many replies),
MULTI/EXEC/DISCARD and WATCH on a connection, connection commands, inline
commands and protocol errors (the reply bytes until the server closes).

Unordered replies (SMEMBERS, HGETALL, KEYS...) are compared after sorting,
also inside EXEC arrays; SCAN as the set of keys of a whole iteration.
redis-server is a hard requirement: without it this test fails, it does not skip.
"""

from __future__ import annotations

import io
import os
import random
import socket
from collections.abc import Iterator

import pytest

from tests.integration.daemon import Daemon
from tests.integration.diffkit import corpus_over_daemon, random_over_daemon, run_lines, scan_keys, send
from tests.integration.test_differential_handlers import Pair as HandlerPair
from tests.integration.test_differential_handlers import (  # noqa: F401  (redis_socket is a fixture)
    _random_command,
    cmd,
    corpus_blocks,
    pack,
    read_reply,
    redis_socket,
    same,
)

pytestmark = pytest.mark.timeout(60)

SEEDS = int(os.environ.get("MEMD_DIFF_SERVER_SEEDS", "12"))
STEPS = 250
TIMEOUT = 10.0


@pytest.fixture(scope="module")
def memd_socket() -> Iterator[str]:
    d = Daemon(fsync="everysec").start()
    try:
        yield d.socket
    finally:
        d.cleanup()


# ---- one connection, raw RESP -----------------------------------------------------------------

class Conn:
    """A raw RESP connection; replies are returned exactly as received."""

    def __init__(self, path: str, protocol: int) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(path)
        self.f = self.sock.makefile("rb")
        if protocol == 3:
            hello = self.call([b"HELLO", b"3"])  # not compared: server name, version, id differ
            assert hello.startswith(b"%"), hello

    def call(self, args: list[bytes]) -> bytes:
        self.sock.sendall(pack(args))
        return read_reply(self.f)

    def pipeline(self, cmds: list[list[bytes]]) -> list[bytes]:
        """All commands in one write, then all replies."""
        self.sock.sendall(b"".join(pack(c) for c in cmds))
        return [read_reply(self.f) for _ in cmds]

    def close(self) -> None:
        self.f.close()
        self.sock.close()


def split_array(raw: bytes) -> list[bytes] | None:
    """The raw elements of an array reply (None if it is not a non-null array)."""
    if not raw.startswith(b"*") or raw.startswith(b"*-1"):
        return None
    f = io.BytesIO(raw)
    n = int(f.readline()[1:-2])
    return [read_reply(f) for _ in range(n)]


class Pair(HandlerPair):
    """memd and Redis on one protocol; mismatches are collected, not raised, to show them all.

    ``reap_redis`` and ``scan_all`` come from the in-process differential test's pair.
    """

    def __init__(self, redis_path: str, memd_path: str, protocol: int) -> None:  # noqa: PLW0231
        self.redis = Conn(redis_path, protocol)
        self.memd = Conn(memd_path, protocol)
        self.protocol = protocol
        self.mismatches: list[str] = []
        self.count = 0
        self.queued: list[bytes] | None = None  # names of commands queued since MULTI

    # comparing one reply, aware of MULTI: EXEC's array is compared element by element
    def _check(self, args: list[bytes], expected: bytes, got: bytes, where: str) -> None:
        self.count += 1
        name = args[0].lower()
        ok = same(name, expected, got)
        if name == b"multi" and expected == b"+OK\r\n":
            self.queued = []
        elif name == b"discard" and self.queued is not None and expected == b"+OK\r\n":
            self.queued = None
        elif name == b"exec" and self.queued is not None:
            names, self.queued = self.queued, None
            a, b = split_array(expected), split_array(got)
            if a is not None and b is not None and len(a) == len(b) == len(names):
                ok = all(same(n, x, y) for n, x, y in zip(names, a, b))
        elif self.queued is not None and expected == b"+QUEUED\r\n":
            self.queued.append(name)
        if not ok:
            self.mismatches.append(f"[{where} resp{self.protocol}] {args!r}\n    redis: {expected!r}\n"
                                   f"    memd:  {got!r}")

    def run(self, args: list[bytes], where: str) -> None:
        if args[0].lower() == b"dbsize" and self.queued is None:
            self.reap_redis()
        self._check(args, self.redis.call(args), self.memd.call(args), where)

    def pipeline(self, cmds: list[list[bytes]], where: str) -> None:
        if any(c[0].lower() == b"dbsize" for c in cmds):
            self.reap_redis()
        expected, got = self.redis.pipeline(cmds), self.memd.pipeline(cmds)
        for j, (args, x, y) in enumerate(zip(cmds, expected, got)):
            self._check(args, x, y, f"{where} #{j}")

    def memd_flush(self) -> None:
        """Move memd's buffer to SQLite (not compared) so later reads merge layers."""
        reply = self.memd.call([b"MEMD.FLUSH"])
        assert not reply.startswith(b"-"), reply

    def close(self) -> None:
        self.redis.close()
        self.memd.close()

    def assert_clean(self) -> None:
        assert not self.mismatches, f"{len(self.mismatches)} of {self.count} replies differ:\n" + \
            "\n".join(self.mismatches[:40])


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
def pair(request: pytest.FixtureRequest, redis_socket: str, memd_socket: str) -> Iterator[Pair]:
    p = Pair(redis_socket, memd_socket, request.param)
    p.run(cmd("FLUSHALL"), "setup")
    try:
        yield p
    finally:
        p.close()


# ---- random commands, transactions and batches -----------------------------------------------

NOT_IN_MULTI = {"SCAN", "DBSIZE"}  # a page of SCAN is order-dependent; DBSIZE needs Redis reaped first


def single(rng: random.Random, *, in_multi: bool = False) -> list[bytes]:
    while True:
        command = _random_command(rng)
        if isinstance(command, tuple):  # a whole SCAN iteration: not one command
            continue
        if in_multi and command[0] in NOT_IN_MULTI:
            continue
        return [a.encode("utf-8") for a in command]


def transaction(rng: random.Random) -> list[list[bytes]]:
    """[WATCH k...] MULTI cmd... EXEC|DISCARD (WATCH never conflicts with another client)."""
    cmds: list[list[bytes]] = []
    if rng.random() < 0.4:
        cmds.append([b"WATCH", *(b"k%d" % rng.randrange(5) for _ in range(rng.randint(1, 2)))])
        if rng.random() < 0.2:
            cmds.append([b"UNWATCH"])
    cmds.append([b"MULTI"])
    cmds += [single(rng, in_multi=True) for _ in range(rng.randint(0, 5))]
    if rng.random() < 0.05:
        cmds.append([b"GET"])  # arity error while queuing: EXECABORT
    cmds.append([b"EXEC"] if rng.random() < 0.85 else [b"DISCARD"])
    return cmds


# ---- tests: commands one by one ----------------------------------------------------------------

def test_corpus(pair: Pair) -> None:
    """The handlers test's edge-case corpus, one command per round trip."""
    corpus_over_daemon(pair, corpus_blocks(), flush_every=23, after_block=scan_keys(b"3"))


def test_corpus_pipelined(pair: Pair) -> None:
    """The same corpus, each block as one pipelined write."""
    corpus_over_daemon(pair, corpus_blocks(), pipelined=True, after_block=scan_keys(b"5"))


def test_random_sequences(pair: Pair) -> None:
    """Seeded random commands over a small key space, with transactions and pipelined batches."""
    def step(rng: random.Random, where: str) -> None:
        roll = rng.random()
        if roll < 0.08:
            for args in transaction(rng):
                pair.run(args, where + " tx")
        elif roll < 0.16:
            batch: list[list[bytes]] = []
            while len(batch) < rng.randint(2, 10):
                batch += transaction(rng) if rng.random() < 0.2 else [single(rng)]
            pair.pipeline(batch, where + " batch")
        else:
            send(pair, _random_command(rng), where)
    random_over_daemon(pair, step, seeds=SEEDS, steps=STEPS, seed_base=1000, flush_chance=0.02,
                       after_seed=scan_keys(b"2"))


def test_pipeline_of_50(pair: Pair) -> None:
    """50 commands in one sendall, every type and a transaction among them; all 50 replies compared."""
    rng = random.Random(50 + pair.protocol)
    pair.run(cmd("MSET k0 1 k1 abc"), "setup")
    batch = [cmd("RPUSH k2 a b c"), cmd("HSET k3 f0 v f1 w"), cmd("SADD k4 m0 m1"), cmd("ZADD k5 1 m0 2 m1"),
             cmd("MULTI"), cmd("INCR k0"), cmd("LPOP k2"), cmd("HGETALL k3"), cmd("EXEC")]
    while len(batch) < 50:
        batch.append(single(rng))
    pair.pipeline(batch, "pipeline of 50")
    pair.assert_clean()


CONNECTION_CORPUS = r"""
PING
PING hello
PING a b
ECHO hi
ECHO
ECHO a b
SELECT 0
SELECT 16
SELECT -1
SELECT x
SELECT
CLIENT GETNAME
CLIENT SETNAME myname
CLIENT GETNAME
CLIENT SETNAME "bad name"
NOSUCHCOMMAND
EXEC
DISCARD
UNWATCH
WATCH
MULTI
SET tx 1
INCR tx
GET tx
ECHO inside
PING
EXEC
MULTI
MULTI
SET tx 2
DISCARD
GET tx
MULTI
EXEC
MULTI
SET tx 3
GET
EXEC
GET tx
MULTI
NOSUCH
SET tx 4
EXEC
GET tx
MULTI
HSET tx f v
INCR tx
LPUSH tx a
EXEC
MULTI
WATCH tx
SET tx 5
EXEC
WATCH tx other
GET tx
MULTI
SET tx 6
EXEC
WATCH tx
SET tx 7
MULTI
SET tx 8
EXEC
GET tx
WATCH tx
UNWATCH
SET tx 9
MULTI
GET tx
EXEC
WATCH nokey
MULTI
SET nokey 1
EXEC
WATCH tx
DISCARD
MULTI
SET tx 10
DISCARD
SET tx 11
MULTI
GET tx
EXEC
MULTI
SELECT 0
CLIENT GETNAME
EXEC
"""


def test_connection_and_transactions(pair: Pair) -> None:
    """Connection commands, MULTI/EXEC/DISCARD, WATCH (only this client writes), errors."""
    lines = [line for line in CONNECTION_CORPUS.strip().splitlines() if line.strip()]
    for line in lines:
        pair.run(cmd(line), "connection corpus")
    pair.pipeline([cmd(line) for line in lines], "connection corpus pipelined")
    pair.assert_clean()


ERROR_WORDING = r"""
NOSUCHCOMMAND a b
MULTI
NOSUCH x
EXEC
CLIENT SETNAME
CLIENT NOSUCHSUB
"""


def test_error_wording(pair: Pair) -> None:
    """Unknown commands and CLIENT subcommand errors, worded exactly as Redis 7.0 words them."""
    run_lines(pair, ERROR_WORDING, "error wording")
    pair.assert_clean()


# ---- tests: raw bytes, protocol errors ----------------------------------------------------------

QUIT = b"*1\r\n$4\r\nQUIT\r\n"

# (name, payload, whether the payload itself makes the server close the connection)
RAW_CASES: list[tuple[str, bytes, bool]] = [
    ("inline", b"PING\r\nECHO hi\r\nSET q v\r\nGET q\r\n", False),
    ("inline blanks", b"  PING   x  \r\n\r\n\n \r\nPING\nECHO\t tab\r\n", False),
    ("inline quotes", b'SET q "a b\\x41\\n\\t\\"z"\r\nGET q\r\nSET q \'it\\\'s "x"\'\r\nGET q\r\n', False),
    ("inline empty word", b'ECHO ""\r\nSET "" e\r\nGET ""\r\n', False),
    ("inline quit", b"PING\r\nQUIT\r\nPING\r\n", True),
    ("unbalanced quotes", b'PING\r\nSET q "open\r\n', True),
    ("quote then letter", b'SET q "a"b\r\n', True),
    ("empty arrays", b"*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n", False),
    ("no check after bulk", b"*1\r\n$4\r\nPINGxx*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n", False),
    ("bad multibulk", b"PING\r\n*abc\r\n", True),
    ("multibulk plus", b"*+1\r\n$4\r\nPING\r\n", True),
    ("expected $", b"*2\r\n$3\r\nGET\r\n:1\r\n", True),
    ("negative bulk", b"*1\r\n$-1\r\n", True),
    ("bad bulk", b"*1\r\n$abc\r\n", True),
    ("bulk over 512MiB", b"*2\r\n$3\r\nGET\r\n$536870913\r\n", True),
    ("inline too big", b"PING\r\n" + b"a" * 70_000, True),  # (a long line *with* its newline: Redis's
    ("mbulk count too big", b"*" + b"1" * 70_000, True),    # outcome depends on its read sizes)
    ("bulk count too big", b"*1\r\n$" + b"1" * 70_000, True),
    ("pipeline then error", b"SET q 1\r\nINCR q\r\n*1\r\n$4\r\nINCR\r\n*x\r\nPING\r\n", True),
]


def until_close(c: Conn) -> bytes:
    """Everything the server sends until it closes (the socket timeout fails a server that never does)."""
    chunks = []
    while True:
        data = c.sock.recv(65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


@pytest.mark.parametrize("protocol", [2, 3])
@pytest.mark.parametrize("name,payload,closes", RAW_CASES, ids=[c[0] for c in RAW_CASES])
def test_raw_bytes(redis_socket: str, memd_socket: str, name: str, payload: bytes, closes: bool,
                   protocol: int) -> None:
    """Inline commands, odd framing and protocol errors: every reply byte until the server closes.

    Payloads that leave the connection open are followed by QUIT once their
    replies are read (how many: Redis's answer says), so a pipelined QUIT is
    not what is tested here (see test_pipelined_quit_after_write).
    """
    for path in (redis_socket, memd_socket):
        c = Conn(path, 2)
        c.call(cmd("FLUSHALL"))
        c.close()
    replies: list[bytes] = []
    for path in (redis_socket, memd_socket):
        c = Conn(path, protocol)
        try:
            c.sock.sendall(payload)
            if closes:
                replies.append(until_close(c))
                continue
            if not replies:  # Redis: read to the end, then count its replies
                c.sock.sendall(QUIT)
                replies.append(until_close(c))
                f = io.BytesIO(replies[0])
                n = 0
                while f.tell() < len(replies[0]):
                    read_reply(f)
                    n += 1
                count = n - 1
            else:
                got = b"".join(read_reply(c.f) for _ in range(count))
                c.sock.sendall(QUIT)
                replies.append(got + read_reply(c.f) + until_close(c))
        finally:
            c.close()
    expected, got = replies
    assert got == expected, f"{name}:\n    redis: {expected[:300]!r}\n    memd:  {got[:300]!r}"


@pytest.mark.parametrize("protocol", [2, 3])
def test_pipelined_quit_after_write(redis_socket: str, memd_socket: str, protocol: int) -> None:
    """SET then QUIT in one write: both replies arrive before the close (redis-cli/nc scripts do this)."""
    payload = pack([b"SET", b"qk", b"v"]) + pack([b"GET", b"qk"]) + QUIT
    replies = []
    for path in (redis_socket, memd_socket):
        c = Conn(path, protocol)
        try:
            c.sock.sendall(payload)
            replies.append(until_close(c))
        finally:
            c.close()
    assert replies[1] == replies[0] == b"+OK\r\n$1\r\nv\r\n+OK\r\n", replies
