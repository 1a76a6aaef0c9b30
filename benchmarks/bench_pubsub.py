"""Pub/sub fan-out benchmark: one publisher, 50 subscribers of one channel, memd against redis-server.

One command (``python3 benchmarks/bench_pubsub.py``): a fresh ``memd serve`` and a
fresh ``redis-server`` (no persistence: PUBLISH writes nothing) each get
``--subscribers`` raw connections SUBSCRIBEd to one channel and one publisher that
keeps ``--depth`` pipelined batches of ``--batch`` PUBLISHes in flight for
``--seconds``. Everything runs in this one process on one selector (no threads,
so the client's own cost is the same for both servers): the subscribers' sockets
are read in 1 MiB chunks and messages counted by their ``message`` marker.

Reported: messages delivered per second (a PUBLISH to 50 subscribers delivers 50),
from the first batch sent to the last message received, and memd's ratio to Redis.
Target: >= 0.3x Redis. The machine may be shared and noisy: the ratio of the same
run is what counts, and a short run (the default, a few seconds each) is enough.
"""

from __future__ import annotations

import argparse
import os
import selectors
import signal
import socket
import subprocess
import sys
import time

from benchutil import REPO, Cleanup, Interrupted, machine_line, memd_build, raise_interrupted, wait_ready

REDIS_SERVER = "/usr/bin/redis-server"
START_DEADLINE = 60.0
TARGET = 0.3
CHANNEL = b"bench"
MARKER = b"$7\r\nmessage\r\n"  # starts every message frame (RESP2), never inside the payload


def start(kind: str, cleanup: Cleanup) -> str:
    d = cleanup.mkdtemp(f"bp-{kind[0]}-")
    sock = os.path.join(d, "s.sock")
    log = os.path.join(d, "server.log")
    if kind == "redis":
        cmd = [REDIS_SERVER, "--port", "0", "--unixsocket", sock, "--unixsocketperm", "700", "--dir", d,
               "--appendonly", "no", "--save", "", "--daemonize", "no", "--logfile", ""]
    else:
        cmd = [sys.executable, "-m", "memd", "serve", "--socket", sock, "--data-dir", os.path.join(d, "data")]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                                start_new_session=True)
    cleanup.procs.append(proc)
    wait_ready(sock, proc, log, START_DEADLINE)
    return sock


def pack(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in args)


def connect(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(path)
    return s


def fan_out(path: str, subscribers: int, seconds: float, batch: int, depth: int, payload: bytes) -> tuple[float, int]:
    """(messages delivered per second, messages delivered) for one server."""
    subs = [connect(path) for _ in range(subscribers)]
    for s in subs:
        s.sendall(pack(b"SUBSCRIBE", CHANNEL))
        assert s.recv(4096).startswith(b"*3\r\n$9\r\nsubscribe"), "no subscribe confirmation"
    pub = connect(path)
    pub.sendall(pack(b"PUBLISH", CHANNEL, b"probe"))
    assert pub.recv(64) == b":%d\r\n" % subscribers, "the publisher does not see every subscriber"
    for s in subs:  # the probe message, read and not counted
        buf = b""
        while not buf.endswith(b"probe\r\n"):
            buf += s.recv(4096)
    sel = selectors.DefaultSelector()
    tails = {}
    for s in subs:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, "sub")
        tails[s] = b""
    pub.setblocking(False)
    sel.register(pub, selectors.EVENT_READ, "pub")
    chunk = pack(b"PUBLISH", CHANNEL, payload) * batch
    sent = replies = delivered = 0
    pending = b""  # the part of a batch the socket did not take yet
    t0 = time.perf_counter()
    deadline = t0 + seconds
    last = t0
    while True:
        now = time.perf_counter()
        if now < deadline and not pending and sent - replies < depth * batch:
            pending = chunk
            sent += batch
        if pending:
            try:
                n = pub.send(pending)
                pending = pending[n:]
            except BlockingIOError:
                pass
        if now >= deadline and not pending and replies == sent and delivered == sent * subscribers:
            break
        if now > deadline + 60:
            raise RuntimeError(f"only {delivered:,} of {sent * subscribers:,} messages arrived")
        for key, _ in sel.select(timeout=0.05 if pending else 0.5):
            s = key.fileobj
            try:
                data = s.recv(1 << 20)  # type: ignore[union-attr]
            except BlockingIOError:
                continue
            if key.data == "pub":
                replies += data.count(b"\r\n")
                continue
            seen = tails[s] + data
            delivered += seen.count(MARKER)
            tails[s] = seen[-(len(MARKER) - 1):]
            last = time.perf_counter()
    for s in [*subs, pub]:
        s.close()
    sel.close()
    return delivered / (last - t0), delivered


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--subscribers", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--batch", type=int, default=100, help="PUBLISHes per pipelined write")
    ap.add_argument("--depth", type=int, default=4, help="batches in flight")
    ap.add_argument("--payload", type=int, default=32, help="message bytes")
    args = ap.parse_args()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, raise_interrupted)
    cleanup = Cleanup()
    print(machine_line())
    print(f"memd: {memd_build()}")
    print(f"redis: {subprocess.run([REDIS_SERVER, '--version'], capture_output=True, text=True).stdout.strip()}")
    print(f"1 publisher ({args.depth} x {args.batch} PUBLISH in flight, {args.payload}-byte messages) -> "
          f"{args.subscribers} subscribers, {args.seconds:g} s each")
    payload = b"x" * args.payload
    rates: dict[str, float] = {}
    try:
        for kind in ("redis", "memd"):
            sock = start(kind, cleanup)
            rate, n = fan_out(sock, args.subscribers, args.seconds, args.batch, args.depth, payload)
            rates[kind] = rate
            print(f"{kind:>5}: {rate:>12,.0f} messages/s delivered ({n:,} messages)")
            cleanup.stop(cleanup.procs[-1])
    except (KeyboardInterrupt, Interrupted):
        print("interrupted", file=sys.stderr)
        return 1
    finally:
        cleanup.all()
    ratio = rates["memd"] / rates["redis"]
    print(f"ratio memd/redis: {ratio:.2f}x (target >= {TARGET}x: {'met' if ratio >= TARGET else 'NOT met'})")
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
