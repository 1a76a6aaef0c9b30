"""Wake-up latency of a blocked BLPOP client: from the push to its reply, memd against redis-server.

One command (``python3 benchmarks/bench_blocking.py``): a fresh ``memd serve``
(``--fsync``, default everysec: the pop a wake-up does is a write, and its
reply waits for that policy's durability) and a fresh ``redis-server`` (no
persistence). Per iteration, one connection sends ``BLPOP q 0`` and a
control connection polls ``INFO clients`` until the client is parked (not
timed); then the clock starts, a second connection sends ``RPUSH q x`` and
the clock stops when the parked connection has its whole reply. One thread
drives the three sockets, so the figure is the server's path from reading
the push to writing the woken client's reply, plus two socket hops.

Printed: p50 and p99 in microseconds for each server, memd's ratio to Redis
(memd / Redis: lower is better), the target (issue 19): memd's p99 under
1 ms, and each server's CPU time per iteration (its process's utime + stime
over the measured loop: the BLPOP, the INFO polls, the push and the wake-up).
That last figure barely moves with the machine's load, where the latencies
do: on a busy 2-core box a server that has the CPU when it write()s a reply
is often preempted by the client it wakes, then waits for the other
processes' time slices (milliseconds) before it reads the next command, so
the p99 mostly measures the machine (docs/benchmarks.md, "Blocking pops").
``--iterations 50`` is the quick form the test suite runs.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import socket
import statistics
import subprocess
import sys
import time

from benchutil import REPO, Cleanup, Interrupted, machine_line, memd_build, raise_interrupted, wait_ready

REDIS_SERVER = "/usr/bin/redis-server"
START_DEADLINE = 60.0
TARGET_US = 1000.0
BLPOP = b"*3\r\n$5\r\nBLPOP\r\n$1\r\nq\r\n$1\r\n0\r\n"
RPUSH = b"*3\r\n$5\r\nRPUSH\r\n$1\r\nq\r\n$1\r\nx\r\n"
INFO = b"*2\r\n$4\r\nINFO\r\n$7\r\nclients\r\n"
WOKEN = b"*2\r\n$1\r\nq\r\n$1\r\nx\r\n"  # BLPOP's reply


def start(kind: str, fsync: str, cleanup: Cleanup) -> str:
    d = cleanup.mkdtemp(f"bb-{kind[0]}-")
    sock = os.path.join(d, "s.sock")
    log = os.path.join(d, "server.log")
    if kind == "redis":
        # Redis with its AOF at the same fsync policy: its woken client's pop is a write that its
        # beforeSleep write()s (always: and fsyncs) before the reply, as memd's group ack does
        cmd = [REDIS_SERVER, "--port", "0", "--unixsocket", sock, "--unixsocketperm", "700", "--dir", d,
               "--appendonly", "yes", "--appendfsync", fsync, "--save", "", "--daemonize", "no", "--logfile", ""]
    else:
        cmd = [sys.executable, "-m", "memd", "serve", "--socket", sock, "--data-dir", os.path.join(d, "data"),
               "--fsync", fsync]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                                start_new_session=True)
    cleanup.procs.append(proc)
    wait_ready(sock, proc, log, START_DEADLINE)
    return sock


def connect(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    return s


def read_exactly(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise ConnectionError("server closed the connection")
        data += chunk
    return data


def parked(control: socket.socket) -> int:
    control.sendall(INFO)
    header = b""
    while not header.endswith(b"\r\n"):
        header += read_exactly(control, 1)
    body = read_exactly(control, int(header[1:-2]) + 2).decode()
    return int(body.split("blocked_clients:")[1].split("\r\n")[0])


def measure(path: str, iterations: int) -> list[float]:
    """Push-to-wake latencies in microseconds."""
    consumer, producer, control = connect(path), connect(path), connect(path)
    times = []
    try:
        for _ in range(iterations):
            consumer.sendall(BLPOP)
            deadline = time.monotonic() + 10
            while parked(control) != 1:
                if time.monotonic() > deadline:
                    raise RuntimeError("the BLPOP client was not parked within 10 s")
            t0 = time.perf_counter()
            producer.sendall(RPUSH)
            select.select([consumer], [], [], 10)
            reply = read_exactly(consumer, len(WOKEN))
            times.append((time.perf_counter() - t0) * 1e6)
            assert reply == WOKEN, reply
            assert read_exactly(producer, 4) == b":1\r\n"
    finally:
        for s in (consumer, producer, control):
            s.close()
    return times


def cpu_seconds(pid: int) -> float:
    """utime + stime of process ``pid`` so far (Linux's /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentiles(times: list[float]) -> tuple[float, float]:
    times = sorted(times)
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.99))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=2000)
    ap.add_argument("--fsync", default="everysec", choices=("always", "everysec", "no"))
    args = ap.parse_args()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, raise_interrupted)
    cleanup = Cleanup()
    print(machine_line())
    print(f"memd: {memd_build()}, fsync {args.fsync}")
    print(f"redis: {subprocess.run([REDIS_SERVER, '--version'], capture_output=True, text=True).stdout.strip()}")
    print(f"{args.iterations:,} wake-ups per server; push to woken reply, microseconds")
    results: dict[str, tuple[float, float]] = {}
    cpu: dict[str, float] = {}
    try:
        for kind in ("redis", "memd"):
            sock = start(kind, args.fsync, cleanup)
            measure(sock, min(50, args.iterations))  # warm-up (imports, caches), not counted
            pid = cleanup.procs[-1].pid
            before = cpu_seconds(pid)
            results[kind] = percentiles(measure(sock, args.iterations))
            cpu[kind] = (cpu_seconds(pid) - before) / args.iterations * 1e6
            cleanup.stop(cleanup.procs[-1])
    except (KeyboardInterrupt, Interrupted):
        print("interrupted", file=sys.stderr)
        return 1
    finally:
        cleanup.all()
    (rp50, rp99), (mp50, mp99) = results["redis"], results["memd"]
    print()
    print(f"{'':<22} {'p50':>8} {'p99':>8} {'cpu/iter':>9}")
    print(f"{'redis BLPOP wake-up':<22} {rp50:>8.0f} {rp99:>8.0f} {cpu['redis']:>9.0f}")
    print(f"{'memd BLPOP wake-up':<22} {mp50:>8.0f} {mp99:>8.0f} {cpu['memd']:>9.0f}")
    print(f"{'memd / redis':<22} {mp50 / rp50:>8.2f} {mp99 / rp99:>8.2f} {cpu['memd'] / cpu['redis'] if cpu['redis'] else float('nan'):>9.2f}")
    print(f"load average: {os.getloadavg()[0]:.2f}")
    ok = mp99 < TARGET_US
    print(f"target memd p99 < {TARGET_US:.0f} us: {'met' if ok else 'NOT met'}")
    return 0 if ok or args.iterations < 1000 else 1


if __name__ == "__main__":
    sys.exit(main())
