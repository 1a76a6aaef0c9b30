"""Protocol and connection limits of a real memd daemon (server.* in the config).

A daemon started with small limits (max_clients 5, max_bulk_bytes 1KiB,
max_args 100, max_inline_bytes 1KiB, max_pending_bytes 64KiB): breaking a
limit gets an error reply worded as Redis words it, then only that
connection is closed; another connection, open all along, keeps being
served. Slow or stalled clients (unread replies, unterminated frames) do not
hold others up. A second daemon with the default limits takes a 100k-argument
command. Every socket operation has a timeout.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.integration.daemon import Daemon, short_tmpdir

pytestmark = pytest.mark.timeout(20)

TIMEOUT = 5.0
SMALL_LIMITS = """\
[server]
max_clients = 5
max_bulk_bytes = "1KiB"
max_args = 100
max_inline_bytes = "1KiB"
max_pending_bytes = "64KiB"
"""


def pack(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in args)


# ---- daemons -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_daemon() -> Iterator[Daemon]:
    base = short_tmpdir()
    config = os.path.join(base, "memd.toml")
    with open(config, "w") as f:
        f.write(SMALL_LIMITS)
    d = Daemon(config=config, base=base).start()
    try:
        yield d
    finally:
        d.cleanup()


@pytest.fixture(scope="module")
def default_daemon() -> Iterator[Daemon]:
    d = Daemon().start()
    try:
        yield d
    finally:
        d.cleanup()


@pytest.fixture
def small(small_daemon: Daemon) -> str:
    """The small-limits daemon's socket, once connections of earlier tests are gone (max_clients is 5)."""
    wait_clients(small_daemon.socket, 1)
    return small_daemon.socket


# ---- socket helpers ------------------------------------------------------------------------------

def connect(path: str, timeout: float = TIMEOUT) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    return s


def recv_exactly(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    return data


def recv_line(s: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = s.recv(1)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    return data


def until_close(s: socket.socket) -> bytes:
    """Everything the server sends until it closes; a server that never closes fails (timeout)."""
    chunks = []
    while True:
        try:
            data = s.recv(65536)
        except ConnectionResetError:  # closed with our unread request bytes still queued
            data = b""
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def send_ignoring_close(s: socket.socket, data: bytes) -> None:
    """Send what the server may refuse halfway (it closes after its error reply)."""
    try:
        s.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass


def ping(s: socket.socket, within: float = 2.0) -> None:
    """PING on an open connection: +PONG within ``within`` seconds."""
    start = time.monotonic()
    s.sendall(b"*1\r\n$4\r\nPING\r\n")
    assert recv_line(s) == b"+PONG\r\n"
    elapsed = time.monotonic() - start
    assert elapsed < within, f"PONG took {elapsed:.2f} s"


def client_count(path: str) -> int:
    s = connect(path)
    try:
        s.sendall(pack(b"CLIENT", b"LIST"))
        header = recv_line(s)
        assert header.startswith(b"$"), header
        body = recv_exactly(s, int(header[1:-2]) + 2)
        return len(body[:-2].splitlines())
    finally:
        s.close()


def wait_clients(path: str, n: int, timeout: float = 5.0) -> None:
    """Until the daemon counts ``n`` clients (the probe included): closes are noticed asynchronously."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            count = client_count(path)
        except (ConnectionError, AssertionError):
            count = -1  # refused (max_clients): earlier connections are still being torn down
        if count == n:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"daemon still counts {count} clients, expected {n}")
        time.sleep(0.02)


def assert_refused(s: socket.socket, error: bytes) -> None:
    """The connection gets exactly ``error`` (one line), then is closed."""
    assert until_close(s) == error


# ---- max_clients ---------------------------------------------------------------------------------

def test_max_clients(small: str) -> None:
    conns = [connect(small) for _ in range(5)]
    try:
        for c in conns:
            ping(c)
        extra = connect(small)
        try:
            assert_refused(extra, b"-ERR max number of clients reached\r\n")
        finally:
            extra.close()
        for c in conns:  # the five already admitted are still served
            ping(c)
        conns.pop().close()
        deadline = time.monotonic() + TIMEOUT  # the freed slot is reusable once the close is noticed
        while True:
            again = connect(small)
            again.sendall(b"*1\r\n$4\r\nPING\r\n")
            reply = recv_line(again)
            if reply == b"+PONG\r\n":
                conns.append(again)
                break
            again.close()
            assert reply == b"-ERR max number of clients reached\r\n", reply
            assert time.monotonic() < deadline, "the slot of a closed client was never freed"
            time.sleep(0.02)
        for c in conns:
            ping(c)
    finally:
        for c in conns:
            c.close()


# ---- request size limits -------------------------------------------------------------------------

def test_max_bulk_bytes(small: str) -> None:
    other = connect(small)
    bad = connect(small)
    try:
        bad.sendall(pack(b"ECHO", b"x" * 1024))  # exactly the limit: fine
        assert recv_line(bad) == b"$1024\r\n" and recv_exactly(bad, 1026) == b"x" * 1024 + b"\r\n"
        bad.sendall(b"*2\r\n$4\r\nECHO\r\n$1025\r\n")  # refused on the header, before any payload
        assert_refused(bad, b"-ERR Protocol error: invalid bulk length\r\n")
        ping(other)
    finally:
        bad.close()
        other.close()


def test_max_bulk_bytes_with_payload(small: str) -> None:
    """A too-big value sent whole: the same error, the rest of the payload is not waited for."""
    other = connect(small)
    bad = connect(small)
    try:
        send_ignoring_close(bad, pack(b"SET", b"k", b"v" * 5000) + pack(b"PING"))
        assert_refused(bad, b"-ERR Protocol error: invalid bulk length\r\n")
        ping(other)
        other.sendall(pack(b"EXISTS", b"k"))
        assert recv_line(other) == b":0\r\n"
    finally:
        bad.close()
        other.close()


def test_max_args(small: str) -> None:
    other = connect(small)
    bad = connect(small)
    try:
        bad.sendall(pack(b"DEL", *(b"k%d" % i for i in range(99))))  # 100 arguments: fine
        assert recv_line(bad) == b":0\r\n"
        send_ignoring_close(bad, pack(b"DEL", *(b"k%d" % i for i in range(100))))  # 101
        assert_refused(bad, b"-ERR Protocol error: invalid multibulk length\r\n")
        ping(other)
    finally:
        bad.close()
        other.close()


def test_100k_arguments_refused_by_small_max_args(small: str) -> None:
    other = connect(small)
    bad = connect(small)
    try:
        send_ignoring_close(bad, pack(b"DEL", *(b"key:%d" % i for i in range(100_000))))
        assert_refused(bad, b"-ERR Protocol error: invalid multibulk length\r\n")
        ping(other)
    finally:
        bad.close()
        other.close()


def test_max_inline_bytes(small: str) -> None:
    other = connect(small)
    try:
        ok = connect(small)
        try:
            ok.sendall(b"ECHO " + b"y" * 1019 + b"\r\n")  # a 1024-byte line: fine
            assert recv_line(ok) == b"$1019\r\n" and recv_exactly(ok, 1021) == b"y" * 1019 + b"\r\n"
        finally:
            ok.close()
        for payload in (b"ECHO " + b"y" * 1020 + b"\r\n",  # 1025 bytes, with its newline
                        b"ECHO " + b"y" * 3000):  # no newline, then silence: refused without waiting
            bad = connect(small)
            try:
                send_ignoring_close(bad, payload)
                assert_refused(bad, b"-ERR Protocol error: too big inline request\r\n")
            finally:
                bad.close()
            ping(other)
        # the same line limit guards RESP headers (Redis's words for them)
        for payload, error in ((b"*" + b"1" * 3000, b"-ERR Protocol error: too big mbulk count string\r\n"),
                               (b"*1\r\n$" + b"1" * 3000, b"-ERR Protocol error: too big bulk count string\r\n")):
            bad = connect(small)
            try:
                send_ignoring_close(bad, payload)
                assert_refused(bad, error)
            finally:
                bad.close()
            ping(other)
    finally:
        other.close()


# ---- slow and stalled clients --------------------------------------------------------------------

class Flooder(threading.Thread):
    """Writes a pipeline of commands as fast as the daemon takes them and never reads a reply."""

    def __init__(self, path: str, frame: bytes, *, max_bytes: int, seconds: float) -> None:
        super().__init__(daemon=True)
        self.sock = connect(path)
        self.sock.settimeout(0.2)
        self.chunk = frame * (65536 // len(frame) + 1)
        self.max_bytes = max_bytes
        self.seconds = seconds
        self.sent = 0
        self.stalled = False  # no byte taken for a whole second: the daemon stopped reading
        self.error: BaseException | None = None

    def run(self) -> None:
        deadline = time.monotonic() + self.seconds
        last_progress = time.monotonic()
        try:
            while self.sent < self.max_bytes and time.monotonic() < deadline:
                offset = self.sent % len(self.chunk)
                try:
                    n = self.sock.send(self.chunk[offset:])
                except TimeoutError:
                    if time.monotonic() - last_progress > 1.0:
                        self.stalled = True
                        return
                    continue
                self.sent += n
                last_progress = time.monotonic()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


def test_slow_reader_does_not_block_others(small: str) -> None:
    """Pipelined writes and reads from a client that never reads: another client gets PONG promptly."""
    setup = connect(small)
    setup.sendall(pack(b"SET", b"big", b"v" * 1000))
    assert recv_line(setup) == b"+OK\r\n"
    setup.close()
    frame = pack(b"SET", b"k", b"v") + pack(b"GET", b"big")
    flooder = Flooder(small, frame, max_bytes=4 << 20, seconds=4.0)
    other = connect(small)
    try:
        flooder.start()
        pings = 0
        while flooder.is_alive():
            ping(other, within=1.0)
            pings += 1
            time.sleep(0.05)
        assert flooder.error is None, flooder.error
        assert flooder.sent > 64 * 1024, "the flood never got going"
        assert pings >= 3
        ping(other, within=1.0)
    finally:
        flooder.sock.close()
        other.close()


def test_slow_reader_memory_is_bounded(small: str) -> None:
    """A client that pipelines GETs and never reads their replies: the daemon stops reading from it.

    max_pending_bytes = 64KiB bounds the unanswered bytes held per client;
    replies that cannot be sent are unanswered too. Each 32-byte GET here
    asks for ~1 KiB of reply: if the daemon kept reading, a 4 MiB flood
    would pile ~130 MiB of replies up in its memory.
    """
    setup = connect(small)
    setup.sendall(pack(b"SET", b"big", b"v" * 1000))
    assert recv_line(setup) == b"+OK\r\n"
    setup.close()
    flooder = Flooder(small, pack(b"GET", b"big"), max_bytes=4 << 20, seconds=6.0)
    other = connect(small)
    try:
        flooder.run()  # in this thread: until the daemon stops taking bytes, 4 MiB, or 6 s
        assert flooder.error is None, flooder.error
        ping(other, within=1.0)
        assert flooder.stalled and flooder.sent < 2 << 20, (
            f"the daemon took {flooder.sent} bytes of GETs from a client that reads no reply "
            f"(~{flooder.sent // 32 * 1009 >> 20} MiB of replies held): max_pending_bytes does not stop it")
    finally:
        flooder.sock.close()
        other.close()


def test_unterminated_frames_do_not_block_others(small: str) -> None:
    stalled = [connect(small) for _ in range(3)]
    other = connect(small)
    try:
        stalled[0].sendall(b"*2\r\n$3\r\nGET\r\n")  # then silence
        stalled[1].sendall(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1000\r\n" + b"x" * 500)  # half a value
        stalled[2].sendall(b"ECHO half-an-inline-li")  # no newline
        for _ in range(5):
            ping(other, within=1.0)
        other.sendall(pack(b"SET", b"k", b"other") + pack(b"GET", b"k"))
        assert recv_line(other) == b"+OK\r\n" and recv_line(other) == b"$5\r\n"
        assert recv_exactly(other, 7) == b"other\r\n"
        # the stalled frames were kept, not dropped: completing them gets their replies
        stalled[0].sendall(b"$1\r\nk\r\n")
        assert recv_line(stalled[0]) == b"$5\r\n" and recv_exactly(stalled[0], 7) == b"other\r\n"
        stalled[1].sendall(b"x" * 500 + b"\r\n")
        assert recv_line(stalled[1]) == b"+OK\r\n"
        stalled[2].sendall(b"ne\r\n")
        assert recv_line(stalled[2]) == b"$19\r\n" and recv_exactly(stalled[2], 21) == b"half-an-inline-line\r\n"
        ping(other)
    finally:
        for s in (*stalled, other):
            s.close()


# ---- default limits ------------------------------------------------------------------------------

def test_100k_arguments_with_default_limits(default_daemon: Daemon) -> None:
    """DEL of 100,000 keys (one 100,001-argument command) is served under the default max_args."""
    keys = [b"key:%d" % i for i in range(100_000)]
    s = connect(default_daemon.socket, timeout=15)
    other = connect(default_daemon.socket)
    try:
        s.sendall(pack(b"MSET", *(x for k in keys[::2] for x in (k, b"v"))))  # 50,000 pairs
        assert recv_line(s) == b"+OK\r\n"
        s.sendall(pack(b"DBSIZE"))
        assert recv_line(s) == b":50000\r\n"
        s.sendall(pack(b"DEL", *keys))
        assert recv_line(s) == b":50000\r\n"
        s.sendall(pack(b"DBSIZE"))
        assert recv_line(s) == b":0\r\n"
        ping(other)
    finally:
        s.close()
        other.close()
