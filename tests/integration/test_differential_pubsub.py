"""Differential test of pub/sub: a real memd daemon against a real redis-server 7.0, several clients each.

Pub/sub is about what *each* client receives, so a step here is a command
(or a pipelined batch) sent by one named client (A, B, C, D), and after it
every client is synchronised with ``PING <token>``: the frames it received
before its token's pong are what it got from that step, and must be the
same on both servers, byte for byte, in RESP2 (subscriber mode, arrays) and
RESP3 (``>`` pushes). A client inside MULTI is synchronised after its EXEC.

Where Redis's order comes from a hash table it is compared as a set:
UNSUBSCRIBE / SUNSUBSCRIBE without arguments (a client's channels, then the
falling counts in order), pattern messages of one publish across patterns,
and PUBSUB CHANNELS / SHARDCHANNELS. The daemon runs with ``fsync = always``,
so replies to writes wait for their fsync while pushes arrive.
redis-server is a hard requirement: without it this test fails, it does not skip.
"""

from __future__ import annotations

import io
import itertools
import random
import socket
from collections.abc import Iterator

import pytest

from tests.integration.daemon import Daemon
from tests.integration.diffkit import cmd, redis_server, split_corpus
from tests.integration.test_differential_handlers import pack, read_reply

pytestmark = pytest.mark.timeout(120)

CLIENTS = "ABCD"
TIMEOUT = 10.0
_tokens = itertools.count()


@pytest.fixture(scope="module")
def redis_socket() -> Iterator[str]:
    with redis_server("rpsub-") as path:
        yield path


@pytest.fixture(scope="module")
def memd_socket() -> Iterator[str]:
    d = Daemon(fsync="always").start()
    try:
        yield d.socket
    finally:
        d.cleanup()


# ---- frames -------------------------------------------------------------------------------------

def parse(raw: bytes) -> object:
    """A raw reply as (type byte, value) tuples, nested: enough to reorder what Redis orders by hash."""
    f = io.BytesIO(raw)

    def one() -> object:
        line = f.readline()
        kind, rest = line[:1], line[1:-2]
        if kind in b"*>~":
            n = int(rest)
            return (kind, None) if n < 0 else (kind, tuple(one() for _ in range(n)))
        if kind == b"$":
            n = int(rest)
            return (kind, None) if n < 0 else (kind, f.read(n + 2)[:-2])
        return (kind, rest)
    return one()


def _items(frame: object) -> tuple[object, ...]:
    kind, value = frame  # type: ignore[misc]
    return value if kind in (b"*", b">") and isinstance(value, tuple) else ()


def _kind_of(frame: object) -> bytes:
    items = _items(frame)
    return items[0][1] if items and items[0][0] == b"$" else b""  # type: ignore[index,return-value]


def normalise(args: list[bytes], frames: list[bytes]) -> list[object]:
    """What may be compared exactly: hash-ordered runs sorted, see the module doc. ``args`` is the
    client's last command (its reply is the last frame), or [] for a client that only listened."""
    parsed = [parse(f) for f in frames]
    name = args[0].lower() if args else b""
    tail: list[object] = []
    if name in (b"unsubscribe", b"sunsubscribe", b"punsubscribe") and len(args) == 1:
        n = 0
        while n < len(parsed) and _kind_of(parsed[-1 - n]) == name:
            n += 1
        run, parsed = parsed[len(parsed) - n:], parsed[:len(parsed) - n]
        tail = [("all", n, sorted(repr(_items(p)[1]) for p in run), [_items(p)[2] for p in run])]
    elif name == b"pubsub" and len(args) > 1 and args[1].lower() in (b"channels", b"shardchannels") and parsed:
        kind, value = parsed.pop()  # type: ignore[misc]
        tail = [(kind, sorted(value or (), key=repr))]
    out: list[object] = []
    run: list[object] = []
    for p in parsed:  # pattern messages of one publish: sorted within their run
        if _kind_of(p) == b"pmessage":
            run.append(p)
            continue
        out += sorted(run, key=repr)
        run = []
        out.append(p)
    return out + sorted(run, key=repr) + tail


# ---- clients --------------------------------------------------------------------------------------

class Client:
    """One raw connection; ``collect`` returns every frame received up to the sync token's pong."""

    def __init__(self, path: str, protocol: int) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(path)
        self.f = self.sock.makefile("rb")
        self.in_multi = False
        if protocol == 3:
            self.sock.sendall(pack([b"HELLO", b"3"]))
            assert read_reply(self.f).startswith(b"%")

    def send(self, cmds: list[list[bytes]]) -> None:
        self.sock.sendall(b"".join(pack(c) for c in cmds))

    def collect(self, token: bytes) -> list[bytes]:
        self.sock.sendall(pack([b"PING", token]))
        frames: list[bytes] = []
        bulk = b"$%d\r\n%b\r\n" % (len(token), token)
        while True:
            frame = read_reply(self.f)
            if frame == bulk or frame == b"*2\r\n$4\r\npong\r\n" + bulk:
                return frames
            frames.append(frame)

    def close(self) -> None:
        self.f.close()
        self.sock.close()


class Room:
    """The same named clients on both servers; mismatches are collected to show them all."""

    def __init__(self, redis_path: str, memd_path: str, protocol: int) -> None:
        self.protocol = protocol
        self.redis = {n: Client(redis_path, protocol) for n in CLIENTS}
        self.memd = {n: Client(memd_path, protocol) for n in CLIENTS}
        self.mismatches: list[str] = []
        self.count = 0

    def step(self, who: str, cmds: list[list[bytes]], where: str) -> None:
        """``who`` sends ``cmds`` in one write on both servers; then every client's frames are compared."""
        for side in (self.redis, self.memd):
            side[who].send(cmds)
        for c in cmds:
            name = c[0].lower()
            if name == b"multi":
                self.redis[who].in_multi = True
            elif name in (b"exec", b"discard"):
                self.redis[who].in_multi = False
        for name in CLIENTS:
            if self.redis[name].in_multi and name == who:
                continue  # synchronised after its EXEC (a PING now would be queued)
            token = b"sync-%d" % next(_tokens)
            try:
                expected = self.redis[name].collect(token)
                got = self.memd[name].collect(token)
            except (TimeoutError, ConnectionError) as exc:
                raise AssertionError(f"[{where} resp{self.protocol}] {who}: {cmds!r}: client {name} did not answer "
                                     f"its sync ({exc!r}); so far:\n" + "\n".join(self.mismatches[:30])) from exc
            args = cmds[-1] if name == who else []
            self.count += 1
            if normalise(args, expected) != normalise(args, got):
                self.mismatches.append(f"[{where} resp{self.protocol}] {who}: {cmds!r}; client {name} got\n"
                                       f"    redis: {expected!r}\n    memd:  {got!r}")

    def close(self) -> None:
        for c in [*self.redis.values(), *self.memd.values()]:
            c.close()

    def assert_clean(self) -> None:
        assert not self.mismatches, f"{len(self.mismatches)} of {self.count} client views differ:\n" + \
            "\n".join(self.mismatches[:30])


def room(redis_socket: str, memd_socket: str, protocol: int) -> Room:
    r = Room(redis_socket, memd_socket, protocol)
    r.step("A", [cmd("FLUSHALL")], "setup")
    return r


# ---- corpus: each block on fresh connections; a line is "CLIENT: command" or "CLIENT: cmd ;; cmd" --------

CORPUS = r"""
# subscribe, publish, counts, duplicates
A: SUBSCRIBE news sport
A: SUBSCRIBE news
B: PUBLISH news hello
B: PUBLISH sport ""
B: PUBLISH nobody x
A: UNSUBSCRIBE news nothere
B: PUBLISH news gone
A: UNSUBSCRIBE
A: UNSUBSCRIBE
A: PUNSUBSCRIBE
A: SUNSUBSCRIBE
# unsubscribe-all with several channels, and messages to many
A: SUBSCRIBE c1 c2 c3 c4 c5
B: SUBSCRIBE c3 c9
C: SUBSCRIBE c3
D: PUBLISH c3 fan-out
D: PUBSUB NUMSUB c3 c1 c9 nope c3
D: PUBSUB NUMSUB
D: PUBSUB CHANNELS
D: PUBSUB CHANNELS c[1-3]
D: PUBSUB CHANNELS *9
A: UNSUBSCRIBE
D: PUBLISH c3 again
D: PUBSUB CHANNELS
# patterns: glob with escapes, classes, ?
A: PSUBSCRIBE news.* h?llo h[ae]llo h[^e]llo h\*llo [a-c]x *
B: PSUBSCRIBE news.*
C: PUBLISH news.tech m1
C: PUBLISH hello m2
C: PUBLISH hallo m3
C: PUBLISH hxllo m4
C: PUBLISH h*llo m5
C: PUBLISH bx m6
C: PUBLISH dx m7
C: PUBLISH "" m8
C: PUBSUB NUMPAT
C: PUBSUB NUMSUB news.*
A: PUNSUBSCRIBE h?llo nothere
C: PUBSUB NUMPAT
A: PUNSUBSCRIBE
C: PUBSUB NUMPAT
B: PUNSUBSCRIBE news.*
C: PUBSUB NUMPAT
# channel and pattern both match: two messages, counted twice
A: SUBSCRIBE ev
A: PSUBSCRIBE e*
A: PSUBSCRIBE e*
B: PUBLISH ev both
A: UNSUBSCRIBE ev
B: PUBLISH ev pattern-only
# the subscriber mode's errors (RESP2) and commands that still run
A: SUBSCRIBE x
A: GET k
A: SET k v
A: CLIENT GETNAME
A: CLIENT NOSUCH
A: CLIENT SETNAME
A: CONFIG GET maxmemory
A: MULTI ;; DISCARD
A: NOSUCHCOMMAND
A: GET
A: PING
A: PING hi
A: PING a b
A: PSUBSCRIBE y*
A: SSUBSCRIBE s
A: UNSUBSCRIBE x
A: PUNSUBSCRIBE y*
A: GET k
A: SUNSUBSCRIBE
A: GET k
A: PING
# RESET leaves subscriber mode quietly
A: SUBSCRIBE r1 r2
A: PSUBSCRIBE r*
A: RESET
B: PUBLISH r1 after-reset
B: PUBSUB NUMSUB r1 r2
B: PUBSUB NUMPAT
A: PING
A: GET k
# shard channels: their own namespace, no patterns
A: SSUBSCRIBE s1 s2
B: SUBSCRIBE s1
C: PSUBSCRIBE s*
D: SPUBLISH s1 shard
D: PUBLISH s1 plain
D: SPUBLISH s3 none
D: PUBSUB SHARDCHANNELS
D: PUBSUB SHARDCHANNELS s1
D: PUBSUB SHARDNUMSUB s1 s2 s3
D: PUBSUB CHANNELS
A: SUNSUBSCRIBE s1 zz
A: SUNSUBSCRIBE
A: SUNSUBSCRIBE
# PUBSUB's own errors and help
A: PUBSUB
A: PUBSUB NOSUCH
A: PUBSUB NUMPAT x
A: PUBSUB CHANNELS a b
A: PUBSUB SHARDCHANNELS a b
A: PUBSUB HELP
A: PUBSUB HELP x
A: PUBLISH
A: PUBLISH a
A: PUBLISH a b c
A: SPUBLISH a
A: SUBSCRIBE
A: PSUBSCRIBE
A: SSUBSCRIBE
# PUBLISH inside MULTI, SUBSCRIBE inside MULTI, SSUBSCRIBE refused there
B: SUBSCRIBE tx
A: MULTI
A: SET k 1
A: PUBLISH tx in-multi
A: PUBLISH tx second
A: INCR k
A: EXEC
C: MULTI
C: SUBSCRIBE m1 m2
C: GET k
C: EXEC
A: PUBLISH m1 to-c
C: MULTI
C: SSUBSCRIBE nope
C: EXEC
C: UNSUBSCRIBE
# pipelined: subscribe and publish in one write, messages between replies
A: SUBSCRIBE p ;; PING ;; UNSUBSCRIBE p ;; PING
B: SUBSCRIBE p
C: SET w 1 ;; PUBLISH p one ;; INCR w ;; PUBLISH p two ;; GET w
B: UNSUBSCRIBE p ;; SUBSCRIBE q ;; PUBSUB NUMSUB p q
# channels are global, not per database
A: SELECT 2 ;; SUBSCRIBE g
B: SELECT 5 ;; PUBLISH g from-db5 ;; PUBSUB NUMSUB g ;; PUBSUB CHANNELS g
C: PSUBSCRIBE g*
B: SELECT 0 ;; PUBLISH g from-db0
# CLIENT REPLY SKIP: subscription replies are pushes and still arrive
A: CLIENT REPLY SKIP ;; SUBSCRIBE quiet
B: PUBLISH quiet shh
A: UNSUBSCRIBE quiet
"""


def _lines(block: list[str]) -> Iterator[tuple[str, list[list[bytes]]]]:
    for line in block:
        who, _, rest = line.partition(":")
        yield who.strip(), [cmd(part) for part in rest.split(";;")]


@pytest.mark.parametrize("protocol", [2, 3], ids=["resp2", "resp3"])
def test_corpus(redis_socket: str, memd_socket: str, protocol: int) -> None:
    """Every block of the corpus on fresh connections (subscriptions die with them)."""
    blocks = split_corpus(CORPUS)
    mismatches: list[str] = []
    count = 0
    for n, block in enumerate(blocks):
        r = room(redis_socket, memd_socket, protocol)
        try:
            for who, cmds in _lines(block):
                r.step(who, cmds, f"block {n}: {block[0][:40]}")
        finally:
            r.close()
        mismatches += r.mismatches
        count += r.count
    assert not mismatches, f"{len(mismatches)} of {count} client views differ:\n" + "\n".join(mismatches[:30])


def test_mixed_protocols(redis_socket: str, memd_socket: str) -> None:
    """RESP2 and RESP3 subscribers of one channel each get their own framing; HELLO switches mid-subscription."""
    r = room(redis_socket, memd_socket, 2)
    try:
        for side in (r.redis, r.memd):
            side["B"].send([[b"HELLO", b"3"]])
            assert read_reply(side["B"].f).startswith(b"%")
        r.step("A", [cmd("SUBSCRIBE mix")], "sub2")
        r.step("B", [cmd("SUBSCRIBE mix"), cmd("PSUBSCRIBE m?x")], "sub3")
        r.step("C", [cmd("PUBLISH mix both")], "pub")
        r.step("B", [cmd("GET k"), cmd("PING")], "resp3 subscriber runs anything")
        for side in (r.redis, r.memd):
            side["B"].send([[b"HELLO", b"2"]])
            read_reply(side["B"].f)  # (differs by design: server name, id)
        r.step("B", [cmd("GET k"), cmd("PING")], "resp2 now: subscriber mode")
        r.step("C", [cmd("PUBLISH mix after-hello")], "pub again")
        r.assert_clean()
    finally:
        r.close()


# ---- seeded random sequences ----------------------------------------------------------------------

CHANNELS = ["a", "b", "ab", "a.b", "news.x", "h*llo", "hello", "[x]", "x", ""]
PATTERNS = ["a*", "?", "news.*", "h[ae]llo", "h\\*llo", "[a-c]*", "*", "\\[x]", "a?b", "[^a]*"]


def _random_step(rng: random.Random, *, ordered: bool = False) -> list[list[bytes]]:
    """One random command; ``ordered``: none whose reply Redis orders by hash (they go last in a batch)."""
    while True:
        step = _draw(rng)
        if not ordered or not _hash_ordered(step[0]):
            return step


def _hash_ordered(args: list[bytes]) -> bool:
    return len(args) == 1 and args[0] in (b"UNSUBSCRIBE", b"SUNSUBSCRIBE") or args[:2] == [b"PUBSUB", b"CHANNELS"]


def _draw(rng: random.Random) -> list[list[bytes]]:
    def some(pool: list[str], k: int = 3) -> list[str]:
        return rng.sample(pool, rng.randint(1, k))

    roll = rng.random()
    if roll < 0.15:
        words = ["SUBSCRIBE", *some(CHANNELS)]
    elif roll < 0.25:
        words = ["PSUBSCRIBE", *some(PATTERNS)]
    elif roll < 0.30:
        words = ["SSUBSCRIBE", *some(CHANNELS)]
    elif roll < 0.38:
        words = ["UNSUBSCRIBE", *(some(CHANNELS) if rng.random() < 0.6 else [])]
    elif roll < 0.44:
        words = ["PUNSUBSCRIBE", *(some(PATTERNS) if rng.random() < 0.6 else [])]
    elif roll < 0.47:
        words = ["SUNSUBSCRIBE", *(some(CHANNELS) if rng.random() < 0.6 else [])]
    elif roll < 0.70:
        words = ["PUBLISH", rng.choice(CHANNELS), f"m{rng.randrange(1000)}"]
    elif roll < 0.74:
        words = ["SPUBLISH", rng.choice(CHANNELS), f"s{rng.randrange(1000)}"]
    elif roll < 0.80:
        words = ["PUBSUB", "NUMSUB", *some(CHANNELS, 4)]
    elif roll < 0.83:
        words = ["PUBSUB", "NUMPAT"]
    elif roll < 0.86:
        words = ["PUBSUB", "CHANNELS", *([rng.choice(PATTERNS)] if rng.random() < 0.5 else [])]
    elif roll < 0.90:
        words = ["SET", "k", str(rng.randrange(10))]
    elif roll < 0.94:
        words = ["GET", "k"]
    else:
        words = ["PING", *(["x"] if rng.random() < 0.5 else [])]
    return [[w.encode() for w in words]]


@pytest.mark.parametrize("protocol", [2, 3], ids=["resp2", "resp3"])
def test_random_sequences(redis_socket: str, memd_socket: str, protocol: int) -> None:
    """Seeded random subscribe / publish / introspection steps by four clients; transactions and
    pipelined batches among them; each client's view compared after every step."""
    r = room(redis_socket, memd_socket, protocol)
    try:
        for seed in range(6):
            rng = random.Random(7000 + 10 * seed + protocol)
            for n in range(60):
                who = rng.choice(CLIENTS)
                roll = rng.random()
                if roll < 0.1:  # a transaction publishing (a RESP2 subscriber's MULTI is refused: compared too)
                    body = [_random_step(rng, ordered=True)[0] for _ in range(rng.randint(1, 3))]
                    cmds = [[b"MULTI"], *body, [b"EXEC"]]
                elif roll < 0.2:
                    cmds = [c for _ in range(rng.randint(1, 4)) for c in _random_step(rng, ordered=True)]
                    cmds += _random_step(rng)
                else:
                    cmds = _random_step(rng)
                r.step(who, cmds, f"seed {seed} step {n}")
            for name in CLIENTS:  # back to no subscriptions for the next seed
                r.step(name, [[b"RESET"]], f"seed {seed} end")
        r.assert_clean()
    finally:
        r.close()
