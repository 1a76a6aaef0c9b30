"""Several clients on memd and on redis-server at once: what blocking commands need to be compared.

A blocking command's outcome is either a reply or "parked"; which one, and
which client a later push serves, is the behaviour under test. Each side
(:class:`Side`) has numbered client connections plus a control connection
that reads ``CLIENT LIST`` (flags=b) to tell a parked client from a slow
one, so no step sleeps to guess. :class:`MultiPair` sends each step to
Redis then to memd and compares the outcomes, then *settles*: every client
that is no longer parked on a side gets its reply read and compared.

Both servers serve parked clients synchronously inside the command that
made a key ready (before that command's own reply leaves), so once the
pusher's reply is read, CLIENT LIST already tells who was served.
"""

from __future__ import annotations

import select
import socket
import time

from tests.integration.diffkit import cmd
from tests.integration.test_differential_handlers import pack, same

TIMEOUT = 10.0
_LINE_TYPES = b"+-:_,#("


def reply_end(buf: bytes | bytearray, i: int = 0) -> int | None:
    """Where the RESP2/RESP3 reply starting at ``i`` ends, or None if it is not complete yet."""
    nl = buf.find(b"\r\n", i)
    if nl < 0:
        return None
    kind, head = buf[i:i + 1], buf[i + 1:nl]
    after = nl + 2
    if kind in (b"$", b"=", b"!"):
        n = int(head)
        if n < 0:
            return after
        return after + n + 2 if len(buf) >= after + n + 2 else None
    if kind in (b"*", b"~", b">", b"%", b"|"):
        n = int(head)
        if n < 0:
            return after
        n *= 2 if kind in (b"%", b"|") else 1
        for _ in range(n):
            end = reply_end(buf, after)
            if end is None:
                return None
            after = end
        return after
    assert kind and kind in _LINE_TYPES, buf[i:i + 40]
    return after


class Client:
    """A raw connection with its own buffer: replies are read whole, and whether one is waiting is
    known without blocking (a buffered file object could hide one in its buffer)."""

    def __init__(self, path: str, protocol: int = 2) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(path)
        self.buf = bytearray()
        if protocol == 3:
            assert self.call(cmd("HELLO 3")).startswith(b"%")
        self.id = int(self.call(cmd("CLIENT ID"))[1:-2])

    def send(self, cmds: list[list[bytes]]) -> None:
        self.sock.sendall(b"".join(pack(c) for c in cmds))

    def ready(self, wait: float = 0.0) -> bool:
        """Whether a whole reply is waiting (after up to ``wait`` seconds)."""
        deadline = time.monotonic() + wait
        while True:
            if reply_end(self.buf) is not None:
                return True
            left = deadline - time.monotonic()
            readable, _, _ = select.select([self.sock], [], [], max(left, 0))
            if not readable:
                return False
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed by the server")
            self.buf += data

    def read(self) -> bytes:
        if not self.ready(TIMEOUT):
            raise TimeoutError(f"no reply within {TIMEOUT} s")
        end = reply_end(self.buf)
        assert end is not None
        out = bytes(self.buf[:end])
        del self.buf[:end]
        return out

    def call(self, args: list[bytes]) -> bytes:
        self.send([args])
        return self.read()

    def close(self) -> None:
        self.sock.close()


class Side:
    """One server: numbered clients and a control connection."""

    def __init__(self, path: str, protocol: int, clients: int) -> None:
        self.path, self.protocol = path, protocol
        self.control = Client(path)
        self.clients: list[Client | None] = [Client(path, protocol) for _ in range(clients)]

    def parked(self) -> set[int]:
        """The clients (by number) CLIENT LIST shows parked (flags with b)."""
        raw = self.control.call(cmd("CLIENT LIST"))
        ids = set()
        for line in raw.split(b"\r\n", 1)[1].decode().splitlines():
            fields = dict(f.split("=", 1) for f in line.split(" ") if "=" in f)
            if "b" in fields.get("flags", ""):
                ids.add(int(fields["id"]))
        return {n for n, c in enumerate(self.clients) if c is not None and c.id in ids}

    def outcome(self, n: int) -> bytes | None:
        """The reply client ``n`` gets for the command it sent last, or None once it is parked."""
        client = self.clients[n]
        assert client is not None
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            if client.ready(0.002):
                return client.read()
            if n in self.parked():
                # parked by a later command of its pipeline: the replies before it were written before
                # the server answered the control connection, so they are readable now
                return client.read() if client.ready(0.0) else None
        raise TimeoutError(f"client {n}: neither a reply nor parked after {TIMEOUT} s")

    def substitute(self, args: list[bytes]) -> list[bytes]:
        """``$n`` in an argument: client ``n``'s id on this server (CLIENT UNBLOCK $1)."""
        out = []
        for a in args:
            if a.startswith(b"$") and a[1:].isdigit():
                client = self.clients[int(a[1:])]
                a = b"%d" % (client.id if client is not None else 0)
            out.append(a)
        return out

    def close(self) -> None:
        for c in self.clients:
            if c is not None:
                c.close()
        self.control.close()


class MultiPair:
    """Redis and memd driven by the same multi-client steps; mismatches collected."""

    def __init__(self, redis_path: str, memd_path: str, protocol: int, clients: int = 4) -> None:
        self.protocol = protocol
        self.redis = Side(redis_path, protocol, clients)
        self.memd = Side(memd_path, protocol, clients)
        self.parked: set[int] = set()  # clients parked on both sides
        self.pending: dict[int, list[list[bytes]]] = {}  # commands sent behind a parked one, per client
        self.mismatches: list[str] = []
        self.count = 0

    def _compare(self, args: list[bytes], expected: bytes | None, got: bytes | None, where: str) -> bool:
        self.count += 1
        if expected is None or got is None:
            ok = expected is got
        else:
            ok = same(args[0].lower(), expected, got)
        if not ok:
            self.mismatches.append(f"[{where} resp{self.protocol}] {args!r}\n    redis: {expected!r}\n"
                                   f"    memd:  {got!r}")
        return ok

    def step(self, n: int, cmds: list[list[bytes]], where: str) -> None:
        """Client ``n`` sends ``cmds`` in one write; each is answered or parks it; then settle."""
        assert n not in self.parked, f"client {n} is parked"
        for side in (self.redis, self.memd):
            client = side.clients[n]
            assert client is not None
            client.send([side.substitute(c) for c in cmds])
        self._follow(n, list(cmds), where)
        self.settle(where)

    def _follow(self, n: int, cmds: list[list[bytes]], where: str) -> None:
        """Outcomes of client ``n``'s commands in order, until one parks it (the rest wait)."""
        while cmds:
            args = cmds.pop(0)
            expected, got = self.redis.outcome(n), self.memd.outcome(n)
            if not self._compare(args, expected, got, f"{where} client {n}"):
                raise AssertionError("\n".join(self.mismatches))  # the sides diverged: stop here
            if expected is None:
                self.parked.add(n)
                self.pending[n] = [args, *cmds]
                return

    def settle(self, where: str) -> None:
        """Clients no longer parked get their replies read (and their pipelines followed)."""
        while True:
            now_r, now_m = self.redis.parked(), self.memd.parked()
            if now_r != now_m:
                self.mismatches.append(f"[{where} resp{self.protocol}] parked clients differ: redis {sorted(now_r)} "
                                       f"memd {sorted(now_m)}")
                raise AssertionError("\n".join(self.mismatches))
            woken = sorted(self.parked - now_r)
            if not woken:
                return
            for n in woken:
                self.parked.discard(n)
                args, *rest = self.pending.pop(n)
                expected, got = self.redis.clients[n].read(), self.memd.clients[n].read()  # type: ignore[union-attr]
                self._compare(args, expected, got, f"{where} client {n} woken")
                self._follow(n, rest, where)

    def close_client(self, n: int, where: str) -> None:
        """Disconnect client ``n`` on both sides (parked or not) and wait until both servers saw it."""
        for side in (self.redis, self.memd):
            client = side.clients[n]
            assert client is not None
            client.close()
            side.clients[n] = None
        self.parked.discard(n)
        self.pending.pop(n, None)
        for side in (self.redis, self.memd):
            deadline = time.monotonic() + TIMEOUT
            while self._count_parked(side) != len(side.parked()) and time.monotonic() < deadline:
                time.sleep(0.005)  # until the server has seen the disconnect
        self.settle(where)

    @staticmethod
    def _count_parked(side: Side) -> int:
        raw = side.control.call(cmd("INFO clients")).decode()
        return int(raw.split("blocked_clients:")[1].split("\r\n")[0])

    def assert_clean(self) -> None:
        assert not self.mismatches, f"{len(self.mismatches)} of {self.count} outcomes differ:\n" + \
            "\n".join(self.mismatches[:40])

    def close(self) -> None:
        self.redis.close()
        self.memd.close()
