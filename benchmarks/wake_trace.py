"""Where a BLPOP wake-up's time goes: bench_blocking.py's loop against a memd whose server notes
when it read the push, when the pop woke the parked client, when the group ack ran and when the
woken reply was written, on the same clock (CLOCK_MONOTONIC) as the client's send and receive.

One command: ``python3 benchmarks/wake_trace.py [--fsync everysec] [--iterations 2000]``. It
starts ``python3 benchmarks/wake_trace.py serve ...`` itself: memd with those points patched in
(``Connection.data_received``, ``wake``, ``Server._commit``, ``Connection._write``) and its
event loop's ``select`` noted too; SIGUSR1 makes it write the marks to ``$WAKE_TRACE_OUT``.

Printed, p50 / p90 / p99 in microseconds: the client's send to the server reading the push
(the server's wake-up: scheduling), the server's own path (read to woken reply written:
the RPUSH, the pop, the group ack), the reply's way to the client, and where the event loop
was at the send (waiting in select, or running: then it was preempted, usually by the
client its last reply woke).
"""

from __future__ import annotations

import argparse
import bisect
import os
import selectors
import signal
import subprocess
import sys
import time
from collections import Counter

MARKS: list[tuple[str, int]] = []


def _patch_server() -> None:
    """Note the wake-up path's points (the server's process only)."""
    import memd.server as srv  # noqa: PLC0415 - only the traced server needs it

    now = time.perf_counter_ns
    conn = srv.Connection
    received, wake, write, commit = conn.data_received, conn.wake, conn._write, srv.Server._commit

    def data_received(self: srv.Connection, data: bytes) -> None:
        if data.startswith(b"*3\r\n$5\r\nRPUSH"):
            MARKS.append(("push_read", now()))
        received(self, data)

    def woken(self: srv.Connection, reply: object, wrote: bool, quiet: bool) -> None:
        MARKS.append(("woken", now()))
        wake(self, reply, wrote, quiet)

    def committed(self: srv.Server) -> None:
        MARKS.append(("ack", now()))
        commit(self)

    def written(self: srv.Connection, data: bytes | bytearray) -> None:
        if bytes(data[:9]) == b"*2\r\n$1\r\nq":
            MARKS.append(("reply_written", now()))
        write(self, data)

    def select(self: selectors.EpollSelector, timeout: float | None = None) -> list[tuple[object, int]]:
        MARKS.append(("select", now()))
        events = epoll_select(self, timeout)
        MARKS.append(("selected", now()))
        return events  # type: ignore[return-value]

    epoll_select = selectors.EpollSelector.select
    conn.data_received, conn.wake, conn._write = data_received, woken, written  # type: ignore[method-assign]
    srv.Server._commit = committed  # type: ignore[method-assign]
    selectors.EpollSelector.select = select  # type: ignore[method-assign, assignment]

    def dump(*_: object) -> None:
        with open(os.environ["WAKE_TRACE_OUT"], "w") as f:
            f.writelines(f"{name} {t}\n" for name, t in MARKS)
    signal.signal(signal.SIGUSR1, dump)


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))]


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        _patch_server()
        from memd.cli import main as memd_main  # noqa: PLC0415
        return memd_main()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=2000)
    ap.add_argument("--fsync", default="everysec", choices=("always", "everysec", "no"))
    args = ap.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bench_blocking as bb  # noqa: PLC0415
    from benchutil import Cleanup, wait_ready  # noqa: PLC0415

    cleanup = Cleanup()
    try:
        d = cleanup.mkdtemp("wt-")
        sock, out = os.path.join(d, "s.sock"), os.path.join(d, "marks.txt")
        proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "serve", "--socket", sock, "--data-dir",
                                 os.path.join(d, "data"), "--fsync", args.fsync],
                                env={**os.environ, "WAKE_TRACE_OUT": out}, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        cleanup.procs.append(proc)
        wait_ready(sock, proc, os.devnull, 60)
        bb.measure(sock, 50)  # warm-up
        consumer, producer, control = bb.connect(sock), bb.connect(sock), bb.connect(sock)
        client: list[tuple[int, int]] = []
        for _ in range(args.iterations):
            consumer.sendall(bb.BLPOP)
            while bb.parked(control) != 1:
                pass
            sent = time.perf_counter_ns()
            producer.sendall(bb.RPUSH)
            bb.select.select([consumer], [], [], 10)
            assert bb.read_exactly(consumer, len(bb.WOKEN)) == bb.WOKEN
            client.append((sent, time.perf_counter_ns()))
            bb.read_exactly(producer, 4)
        proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while not os.path.exists(out) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        with open(out) as f:
            marks = [(name, int(t)) for name, t in (line.split() for line in f)]
    finally:
        cleanup.all()
    loop = [(t, name) for name, t in marks if name in ("select", "selected")]
    loop_times = [t for t, _ in loop]
    wakes: list[dict[str, int]] = []
    for name, t in marks:
        if name == "push_read":
            wakes.append({name: t})
        elif wakes and name in ("woken", "ack", "reply_written") and name not in wakes[-1]:
            wakes[-1][name] = t
    wakes = wakes[-len(client):]
    rows: dict[str, list[float]] = {k: [] for k in ("send -> push read", "push read -> woken", "woken -> ack",
                                                    "ack -> reply written", "reply written -> client", "total")}
    states: Counter[str] = Counter()
    worst: Counter[str] = Counter()
    slow = sorted(range(len(client)), key=lambda i: client[i][1] - client[i][0])[-max(1, len(client) // 100):]
    for i, ((sent, got), w) in enumerate(zip(client, wakes)):
        if len(w) < 4:
            continue
        points = [sent, w["push_read"], w["woken"], w["ack"], w["reply_written"], got]
        for key, a, b in zip(rows, points, points[1:]):
            rows[key].append((b - a) / 1e3)
        rows["total"].append((got - sent) / 1e3)
        j = bisect.bisect_right(loop_times, sent) - 1
        state = "waiting in select" if j >= 0 and loop[j][1] == "select" else "running (or preempted)"
        states[state] += 1
        if i in slow:
            worst[state] += 1
    print(f"memd fsync {args.fsync}, {len(rows['total']):,} wake-ups; load average {os.getloadavg()[0]:.2f}")
    print(f"{'microseconds':<26} {'p50':>7} {'p90':>7} {'p99':>7}")
    for key, values in rows.items():
        if values:
            print(f"{key:<26} {_pct(values, .5):>7.0f} {_pct(values, .9):>7.0f} {_pct(values, .99):>7.0f}")
    print(f"server's loop at the send: {dict(states)}; for the slowest 1%: {dict(worst)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
