"""Stream benchmark: pipelined XADD against memd and redis-server, A/B in the same run.

    python benchmarks/bench_streams.py                 # -n 200,000, 1 round, fsync everysec
    python benchmarks/bench_streams.py -n 500000 --rounds 3 --policy always

Runs, alternating ``redis, memd`` (``--rounds`` of each), against a fresh server each time
(the same servers and options as ``bench_server.py``):

    redis-benchmark -s SOCKET -n N -c 50 -P 16 --csv XADD mystream '*' field value

Each side's figure is the median of its rounds; the ratio is memd / redis, printed with
the target (>= 0.3x). With ``--range N`` it then loads a stream of N entries into each
server (pipelined XADDs; memd's buffer flushed to SQLite) and times ``XRANGE big <id> +
COUNT 10`` from random ids and ``XREVRANGE big + - COUNT 10`` (one request in flight,
round trip included): range reads must not depend on the stream's length. Every
process and temp dir is removed on exit.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import signal
import statistics
import subprocess
import sys

from benchutil import Cleanup, Interrupted, machine_line, raise_interrupted
from bench_server import REDIS_BENCHMARK, REDIS_SERVER, start_server, versions

TARGET = 0.3
CLIENTS = 50
PIPELINE = 16


def run_xadd(sock: str, n: int, timeout: float) -> float:
    """One redis-benchmark run of pipelined XADD; requests per second."""
    cmd = [REDIS_BENCHMARK, "-s", sock, "-n", str(n), "-c", str(CLIENTS), "-P", str(PIPELINE), "--csv",
           "XADD", "mystream", "*", "field", "value"]
    res = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False)
    out = res.stdout.decode(errors="replace")
    for row in csv.reader(io.StringIO(out)):
        if len(row) >= 2 and row[0].upper().startswith("XADD"):
            return float(row[1])
    raise RuntimeError(f"redis-benchmark exited {res.returncode}:\n{out[-2000:]}\n"
                       f"{res.stderr.decode(errors='replace')[-2000:]}")


def check_stream(sock: str, n: int) -> None:
    """The run really appended: XLEN is the request count (a server that answered errors would fail here)."""
    out = subprocess.run(["redis-cli", "-s", sock, "XLEN", "mystream"], capture_output=True, timeout=30,
                         check=False).stdout.decode().strip()
    if out != str(n):
        raise RuntimeError(f"XLEN mystream is {out!r} after {n} XADDs")


def range_reads(sock: str, kind: str, entries: int, queries: int) -> tuple[float, float, float]:
    """Load ``big`` with ``entries`` entries (ids 1.. in ms), flush memd, time ranged reads:
    (load seconds, XRANGE p50 us, XREVRANGE p50 us)."""
    import random
    import time

    import redis
    r = redis.Redis(unix_socket_path=sock)
    t0 = time.perf_counter()
    pipe = r.pipeline(transaction=False)
    for n in range(1, entries + 1):
        pipe.execute_command("XADD", "big", n, "f", n)
        if len(pipe) >= 1000:
            pipe.execute()
    pipe.execute()
    if kind == "memd":
        r.execute_command("MEMD.FLUSH")
    loaded = time.perf_counter() - t0
    assert r.xlen("big") == entries
    rng = random.Random(1)
    fwd: list[float] = []
    rev: list[float] = []
    for _ in range(queries):
        start = rng.randint(1, entries)
        t = time.perf_counter()
        got = r.execute_command("XRANGE", "big", start, "+", "COUNT", 10)
        fwd.append(time.perf_counter() - t)
        assert len(got) == min(10, entries - start + 1)
        t = time.perf_counter()
        r.execute_command("XREVRANGE", "big", "+", "-", "COUNT", 10)
        rev.append(time.perf_counter() - t)
    r.close()
    return loaded, statistics.median(fwd) * 1e6, statistics.median(rev) * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", "-n", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--policy", choices=("everysec", "always"), default="everysec")
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--range", type=int, default=0, metavar="N",
                    help="also time XRANGE/XREVRANGE COUNT 10 on a stream of N entries (e.g. 1000000)")
    ap.add_argument("--queries", type=int, default=1000, help="range reads per side with --range")
    args = ap.parse_args()
    for exe in (REDIS_SERVER, REDIS_BENCHMARK):
        if not os.access(exe, os.X_OK):
            ap.error(f"{exe} not found (Debian: apt-get install redis-server redis-tools)")
    print(machine_line())
    print("; ".join(versions()))
    print(f"load: redis-benchmark -n {args.requests:,} -c {CLIENTS} -P {PIPELINE} XADD mystream '*' field value; "
          f"fsync {args.policy}; {args.rounds} round(s) alternating redis, memd; median per side", flush=True)
    cleanup = Cleanup()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, raise_interrupted)
    runs: dict[str, list[float]] = {"redis": [], "memd": []}
    try:
        for r in range(args.rounds):
            for kind in ("redis", "memd"):
                proc, sock, d = start_server(kind, args.policy, cleanup)
                try:
                    rps = run_xadd(sock, args.requests, args.timeout)
                    check_stream(sock, args.requests)
                finally:
                    cleanup.stop(proc)
                    cleanup.rmdir(d)
                runs[kind].append(rps)
                print(f"  round {r + 1} {kind:<5} XADD {rps:>10,.0f}/s", flush=True)
        if args.range:
            for kind in ("redis", "memd"):
                proc, sock, d = start_server(kind, args.policy, cleanup)
                try:
                    loaded, fwd, rev = range_reads(sock, kind, args.range, args.queries)
                finally:
                    cleanup.stop(proc)
                    cleanup.rmdir(d)
                print(f"  {kind:<5} {args.range:,} entries loaded in {loaded:.0f} s; p50 XRANGE id + COUNT 10 "
                      f"{fwd:.0f} us, XREVRANGE + - COUNT 10 {rev:.0f} us", flush=True)
    except (KeyboardInterrupt, Interrupted) as e:
        print(f"\ninterrupted ({e.__class__.__name__} {e}); cleaning up", file=sys.stderr)
        return 130
    except RuntimeError as e:
        print(f"\nFAILED: {e}", file=sys.stderr)
        return 1
    finally:
        cleanup.all()
    red, mem = statistics.median(runs["redis"]), statistics.median(runs["memd"])
    ratio = mem / red
    print(f"\nXADD -P {PIPELINE}: redis {red:,.0f}/s, memd {mem:,.0f}/s, ratio {ratio:.2f}x "
          f"(target >= {TARGET}x: {'met' if ratio >= TARGET else 'NOT MET'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
