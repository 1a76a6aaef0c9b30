"""Scripting benchmark: EVALSHA of a small script (INCR + EXPIRE) on memd and redis-server, same run.

    python benchmarks/bench_scripting.py            # -n 50,000, 2 rounds each, -P 1 and -P 16
    python benchmarks/bench_scripting.py --quick    # -n 10,000, 1 round

For each pipeline depth it runs, alternating, ``redis, memd, ...`` (``--rounds`` of each):

    redis-benchmark -s SOCKET -n N -r KEYS -c 50 -P {1,16} --csv EVALSHA <sha> 1 key:__rand_int__ 100

``--keys`` (default 1,000) is the key space: a rate limiter's or a lock's keys are few and
hot; with a large one (``--keys 100000``) most calls of both sides create their key and
memd's INCR first misses its buffer and reads SQLite (the cost of a GET miss, see README's
"Not built yet"), which then dominates.

against a fresh ``memd serve --fsync everysec`` and a fresh ``redis-server --appendonly yes
--appendfsync everysec --save ''`` (bench_server.start_server), after SCRIPT LOAD on each.
Each side's figure is the median of its rounds; the ratio is memd / redis; the target (issue
"Redis breadth (2 of 2)") is >= 0.3x.
"""

from __future__ import annotations

import argparse
import csv
import io
import socket
import statistics
import subprocess
import sys

from bench_server import REDIS_BENCHMARK, start_server, versions
from benchutil import Cleanup, machine_line

SCRIPT = b"local v = redis.call('incr', KEYS[1]) redis.call('expire', KEYS[1], ARGV[1]) return v"
TARGET = 0.3


def script_load(sock_path: str) -> str:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(sock_path)
    s.sendall(b"*3\r\n$6\r\nSCRIPT\r\n$4\r\nLOAD\r\n$%d\r\n%b\r\n" % (len(SCRIPT), SCRIPT))
    data = b""
    while data.count(b"\r\n") < 2:
        data += s.recv(4096)
    s.close()
    return data.split(b"\r\n")[1].decode()


def one_run(kind: str, n: int, pipeline: int, keys: int, cleanup: Cleanup) -> float:
    proc, sock, d = start_server(kind, "everysec", cleanup)
    try:
        sha = script_load(sock)
        cmd = [REDIS_BENCHMARK, "-s", sock, "-n", str(n), "-r", str(keys), "-c", "50", "-P", str(pipeline),
               "--csv", "EVALSHA", sha, "1", "key:__rand_int__", "100"]
        res = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=300, check=False)
        for row in csv.reader(io.StringIO(res.stdout.decode(errors="replace"))):
            if len(row) >= 2 and row[0].startswith("EVALSHA"):
                return float(row[1])
        raise RuntimeError(f"no EVALSHA row from redis-benchmark ({kind}): {res.stdout[-500:]!r} "
                           f"{res.stderr[-500:]!r}")
    finally:
        cleanup.stop(proc)
        cleanup.rmdir(d)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", "-n", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--keys", type=int, default=1000, help="key space (redis-benchmark -r)")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n, rounds = (10_000, 1) if args.quick else (args.requests, args.rounds)
    print(machine_line())
    print(" | ".join(versions()))
    cleanup = Cleanup()
    try:
        for pipeline in (1, 16):
            figures: dict[str, list[float]] = {"redis": [], "memd": []}
            for _ in range(rounds):
                for kind in ("redis", "memd"):
                    figures[kind].append(one_run(kind, n, pipeline, args.keys, cleanup))
            redis, memd = statistics.median(figures["redis"]), statistics.median(figures["memd"])
            ratio = memd / redis
            print(f"EVALSHA (INCR+EXPIRE) -r {args.keys} -P {pipeline:<2}  redis {redis:>10,.0f}/s  memd {memd:>10,.0f}/s  "
                  f"ratio {ratio:.2f}x  (target >= {TARGET}x: {'met' if ratio >= TARGET else 'NOT met'})")
    finally:
        cleanup.all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
