"""Read path and stalls: redis-benchmark GETs against memd and redis-server, 1,000,000 keys, in one run.

    python3 benchmarks/bench_readpath.py                   # ~2 minutes
    python3 benchmarks/bench_readpath.py -n 2000000 --keys 1000000
    python3 benchmarks/bench_readpath.py --memd buffered   # memd only in its all-buffered configuration

Per server (redis-server ``--appendonly yes --appendfsync everysec``; memd
``--fsync everysec`` with its default flush limits ("cached": the keys go to
SQLite as the buffer fills), and memd with flush limits no run reaches
("buffered": every key stays in the memtable)), each fresh in its own temp dir:

1. a SET pass over the whole key range (``key:%012d``, 0 .. --keys-1, 200-byte
   values, pipelined 1,000 deep from this script): every GET after it hits;
2. ``redis-benchmark -s SOCK -t get -n N -r KEYS -c 50 -P 16 --csv`` with every key
   stored and no flush running (the cached memd: MEMD.FLUSH first; its read cache serves
   them; the buffered memd skips this phase);
   then ``-t set,get -n N -r KEYS -d 200 -c 50 -P 16`` (memd flushes meanwhile);
3. the same with ``-P 1`` (N / 10 requests);
4. ``GET absent:__rand_int__`` of keys no pass wrote, ``-P 16``.

Printed per phase: requests/s, p99 and max latency (ms) as redis-benchmark
reports them, memd / redis throughput ratios, and memd's event-loop lag
(INFO ``memd_loop_lag_max_ms`` and ``_p99_ms``, reset by CONFIG RESETSTAT
before each phase): a stall of the loop shows there whatever the client saw.
The machine is shared and noisy: compare ratios, run it twice.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable

# (benchutil and bench_server: this folder, which is on sys.path when a script here runs)
from bench_server import REDIS_BENCHMARK, REDIS_SERVER, START_DEADLINE
from benchutil import REPO, Cleanup, Interrupted, machine_line, memd_build, raise_interrupted, tail, wait_ready

VALUE = b"x" * 200
CLIENTS = 50
BUFFERED_CONFIG = """\
[flush]
max_records = 100000000
max_bytes = "8GiB"
max_age_seconds = 86400
[backpressure]
buffer_max_bytes = "16GiB"
"""


def start(kind: str, cleanup: Cleanup, cache_bytes: int | None = None,
          extra_config: str = "") -> tuple[subprocess.Popen[bytes], str, str]:
    """A fresh server in its own temp dir: ``redis``, ``cached`` (memd, default flush limits; its read
    cache at ``cache_bytes``, default: memd's) or ``buffered``; memd with ``extra_config`` (TOML) too."""
    d = cleanup.mkdtemp(f"rp-{kind[0]}-")
    sock = os.path.join(d, "s.sock")
    log = os.path.join(d, "server.log")
    if kind == "redis":
        cmd = [REDIS_SERVER, "--port", "0", "--unixsocket", sock, "--unixsocketperm", "700", "--dir", d,
               "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--daemonize", "no",
               "--logfile", ""]
    else:
        cmd = [sys.executable, "-m", "memd", "serve", "--socket", sock, "--data-dir", os.path.join(d, "data"),
               "--fsync", "everysec"]
        text = (BUFFERED_CONFIG if kind == "buffered" else "") + extra_config
        if cache_bytes is not None:
            text += f"[cache]\nmax_bytes = {cache_bytes}\n"
        if text:
            config = os.path.join(d, "memd.toml")
            with open(config, "w") as f:
                f.write(text)
            cmd += ["--config", config]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                                start_new_session=True)
    cleanup.procs.append(proc)
    wait_ready(sock, proc, log, START_DEADLINE)
    return proc, sock, d


def call(sock_path: str, *args: bytes) -> bytes:
    """One command on a new connection; the raw reply (INFO's bulk string, +OK...)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(60)
        s.connect(sock_path)
        s.sendall(b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in args))
        data = s.recv(1 << 20)
        if data.startswith(b"$"):
            size = int(data[1:data.index(b"\r\n")])
            while len(data) < size + len(b"$%d\r\n\r\n" % size):
                data += s.recv(1 << 20)
        return data


def info(sock_path: str) -> dict[str, str]:
    fields = {}
    # not the keyspace section: its key counts walk the whole buffer (a stall of their own)
    for line in call(sock_path, b"INFO", b"stats", b"memory", b"persistence").decode(errors="replace").splitlines():
        name, sep, value = line.partition(":")
        if sep:
            fields[name] = value
    return fields


def pipelined(sock_path: str, keys: int, request: Callable[[int], bytes], reply: bytes, what: str) -> float:
    """Send ``request(k)`` for every key of the range, 1,000 per write, and check that each reply is
    ``reply``; returns the seconds it took (``what`` names the pass in errors)."""
    t0 = time.monotonic()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(120)
        s.connect(sock_path)
        for first in range(0, keys, 1000):
            batch = range(first, min(first + 1000, keys))
            s.sendall(b"".join(map(request, batch)))
            want, got = len(reply) * len(batch), bytearray()
            while len(got) < want:
                chunk = s.recv(want - len(got))
                if not chunk:
                    raise RuntimeError(f"the server closed the connection during the {what}")
                got += chunk
            if got != reply * len(batch):
                raise RuntimeError(f"unexpected replies in the {what}: {bytes(got[:200])!r}")
    return time.monotonic() - t0


def preload(sock_path: str, keys: int) -> float:
    """SET every key of the range, 1,000 commands per write; returns the seconds it took."""
    return pipelined(sock_path, keys, lambda k: b"*3\r\n$3\r\nSET\r\n$16\r\nkey:%012d\r\n$200\r\n%b\r\n" % (k, VALUE),
                     b"+OK\r\n", "SET pass")


def benchmark(sock_path: str, args: list[str], timeout: float) -> list[dict[str, float | str]]:
    """One redis-benchmark run; per test: name, rps, p99 and max latency (ms) from its CSV."""
    cmd = [REDIS_BENCHMARK, "-s", sock_path, "-c", str(CLIENTS), "-d", str(len(VALUE)), "--csv", *args]
    res = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False)
    rows = []
    reader = csv.reader(io.StringIO(res.stdout.decode(errors="replace")))
    header = next(reader, [])
    for row in reader:
        if len(row) == len(header) and row and row[0] != "test":
            fields = dict(zip(header, row, strict=True))
            rows.append({"test": fields["test"], "rps": float(fields["rps"]),
                         "p99": float(fields["p99_latency_ms"]), "max": float(fields["max_latency_ms"])})
    if res.returncode != 0 or not rows:
        raise RuntimeError(f"redis-benchmark exited {res.returncode}:\n{res.stdout.decode()[-2000:]}\n"
                           f"{res.stderr.decode(errors='replace')[-2000:]}")
    return rows


def run_server(kind: str, n: int, keys: int, timeout: float, cleanup: Cleanup,
               cache_bytes: int | None = None) -> dict[str, dict[str, float]]:
    """Every phase against one fresh server; {phase: {rps, p99, max, lag_max, lag_p99}}."""
    proc, sock, d = start(kind, cleanup, cache_bytes)
    results: dict[str, dict[str, float]] = {}
    memd = kind != "redis"
    phases: list[tuple[str, list[str]]] = [
        # first, GETs of the SET pass's keys with nothing buffered (memd: MEMD.FLUSH first) and no flush running
        ("-P 16 stored", ["-t", "get", "-n", str(n), "-r", str(keys), "-P", "16"]),
        ("-P 16", ["-t", "set,get", "-n", str(n), "-r", str(keys), "-P", "16"]),
        ("-P 1", ["-t", "set,get", "-n", str(max(n // 10, 1000)), "-r", str(keys), "-P", "1"]),
        ("-P 16", ["-n", str(n), "-r", str(keys), "-P", "16", "GET", "absent:__rand_int__"]),
    ]
    try:
        if memd:
            call(sock, b"CONFIG", b"RESETSTAT")
        seconds = preload(sock, keys)
        results["SET pass (this script)"] = {"rps": keys / seconds, "p99": float("nan"), "max": float("nan")}
        if memd:
            results["SET pass (this script)"].update(lag(sock))
        for label, bench_args in phases:
            if kind == "buffered" and label.endswith("stored"):
                continue  # (its keys stay buffered: that is the point of this configuration)
            if memd and label.endswith("stored"):
                call(sock, b"MEMD.FLUSH")
            if memd:
                call(sock, b"CONFIG", b"RESETSTAT")
            rows = benchmark(sock, bench_args, timeout)
            figures = lag(sock) if memd else {}
            for row in rows:
                test = "GET absent" if str(row["test"]).startswith("GET absent") else str(row["test"])
                results[f"{test} {label}"] = {"rps": float(row["rps"]), "p99": float(row["p99"]),
                                              "max": float(row["max"]), **figures}
            print(f"  {kind:<8} {label:<6} " + "  ".join(f"{r['test'][:10]} {float(r['rps']):>10,.0f}/s"
                                                           for r in rows), flush=True)
        if memd:
            stats = info(sock)
            print(f"  {kind:<8} buffer {int(stats.get('memd_buffer_bytes', 0)) / 1e6:,.0f} MB, "
                  f"flushes {stats.get('memd_flush_count', '?')}, rss {int(stats.get('used_memory_rss', 0)) / 1e6:,.0f} MB, "
                  f"longest GC pause {stats.get('memd_gc_pause_max_ms', '?')} ms, read cache "
                  f"{int(stats.get('memd_readcache_bytes', 0)) / 1e6:,.0f} MB of "
                  f"{int(stats.get('memd_readcache_limit_bytes', 0)) / 1e6:,.0f}, hit rate "
                  f"{stats.get('memd_readcache_hit_rate', '?')}", flush=True)
            notable = [line.strip() for line in open(os.path.join(d, "server.log"), errors="replace")
                       if any(w in line for w in ("gc_slow", "watchdog_", "flush_done", "slow"))]
            for line in notable[-12:]:
                print(f"    log: {line[:200]}")
    except RuntimeError as e:
        raise RuntimeError(f"{e}\n--- {kind} log ---\n{tail(os.path.join(d, 'server.log'))}") from None
    finally:
        cleanup.stop(proc)
        cleanup.rmdir(d)
    return results


def lag(sock: str) -> dict[str, float]:
    stats = info(sock)
    return {"lag_max": float(stats["memd_loop_lag_max_ms"]), "lag_p99": float(stats["memd_loop_lag_p99_ms"])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=500_000, help="requests per -P 16 test (-P 1: a tenth; default 500,000)")
    ap.add_argument("--keys", type=int, default=1_000_000, help="the key range, all SET first (default 1M)")
    ap.add_argument("--memd", action="append", choices=("cached", "buffered"),
                    help="memd configuration(s) to run (repeatable; default: cached and buffered)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per redis-benchmark run")
    ap.add_argument("--cache-bytes", type=int, default=None,
                    help="the cached memd's [cache] max_bytes (default: memd's own default)")
    args = ap.parse_args()
    for exe in (REDIS_SERVER, REDIS_BENCHMARK):
        if not os.access(exe, os.X_OK):
            ap.error(f"{exe} not found (Debian: apt-get install redis-server redis-tools)")
    kinds = ["redis", *(args.memd or ("cached", "buffered"))]
    print(machine_line())
    print(f"{memd_build()}; {shutil.which('redis-server')}; keys {args.keys:,}, n {args.n:,}, "
          f"-c {CLIENTS} -d {len(VALUE)}", flush=True)
    cleanup = Cleanup()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, raise_interrupted)
    results: dict[str, dict[str, dict[str, float]]] = {}
    started = time.monotonic()
    try:
        for kind in kinds:
            results[kind] = run_server(kind, args.n, args.keys, args.timeout, cleanup,
                                       args.cache_bytes if kind == "cached" else None)
    except (KeyboardInterrupt, Interrupted) as e:
        print(f"\ninterrupted ({e.__class__.__name__} {e}); cleaning up", file=sys.stderr)
        return 130
    except RuntimeError as e:
        print(f"\nFAILED: {e}", file=sys.stderr)
        return 1
    finally:
        cleanup.all()
    print(f"\nresults (total {time.monotonic() - started:.0f} s; latency from redis-benchmark, ms; "
          f"loop lag from memd's INFO, ms)")
    header = (f"{'phase':<24} {'server':<9} {'req/s':>11} {'ratio':>6} {'p99':>7} {'max':>7} "
              f"{'lag max':>8} {'lag p99':>8}")
    print(header)
    print("-" * len(header))
    for phase, base in results["redis"].items():
        for kind in kinds:
            r = results[kind].get(phase)
            if r is None:
                continue
            ratio = r["rps"] / base["rps"] if base["rps"] else float("nan")
            lags = f"{r['lag_max']:>8.1f} {r['lag_p99']:>8.1f}" if "lag_max" in r else f"{'-':>8} {'-':>8}"
            print(f"{phase:<24} {kind:<9} {r['rps']:>11,.0f} {ratio:>5.2f}x {r['p99']:>7.2f} {r['max']:>7.2f} {lags}")
    worst = max((r["lag_max"] for kind in kinds[1:] for r in results[kind].values() if "lag_max" in r), default=0.0)
    print(f"memd's largest event-loop stall: {worst:.1f} ms ({'under' if worst < 50 else 'NOT under'} 50 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
