"""Server benchmark: redis-benchmark against memd and redis-server, A/B in the same run.

    python benchmarks/bench_server.py                  # -n 1,000,000, 2 rounds (tens of minutes)
    python benchmarks/bench_server.py --quick          # -n 100,000, 1 round (smoke test)
    python benchmarks/bench_server.py --requests 300000 --rounds 3
    python benchmarks/bench_server.py --policy everysec -P 16 --rounds 4   # one row, more rounds

For each fsync policy (everysec, then always) and pipeline depth (-P 1, -P 16) it
runs, alternating, ``redis, memd, redis, memd, ...`` (``--rounds`` of each):

    redis-benchmark -s SOCKET -t set,get -d 200 -n N -r 1000000 -c 50 -P {1,16} --csv

against a fresh ``memd serve --fsync POLICY`` and a fresh ``redis-server
--appendonly yes --appendfsync POLICY --save ''``, each in its own temp dir
under /tmp, started before and stopped after its run. Each side's figure is
the median of its rounds; the ratio is memd / redis. Targets from issue #3
(SET >= 0.4x at -P 16, >= 0.3x at -P 1) are printed beside each ratio.
Every process and temp dir is removed on exit, also on Ctrl-C or failure.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time

# (benchutil: this folder, which is on sys.path when a script here runs)
from benchutil import (
    REPO, Cleanup, Interrupted, command_output, machine_line, memd_build, raise_interrupted, tail, wait_ready,
)

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_BENCHMARK = shutil.which("redis-benchmark") or "/usr/bin/redis-benchmark"

POLICIES = ("everysec", "always")
PIPELINES = (1, 16)
TESTS = ("SET", "GET")
CLIENTS = 50
VALUE_SIZE = 200
KEYSPACE = 1_000_000
TARGETS = {("SET", 16): 0.4, ("SET", 1): 0.3}  # issue #3: memd / redis, same fsync policy
START_DEADLINE = 60.0  # seconds for a server's socket to accept and answer PING


def start_server(kind: str, policy: str, cleanup: Cleanup) -> tuple[subprocess.Popen[bytes], str, str]:
    """A fresh server in its own temp dir; returns (process, socket path, temp dir)."""
    d = cleanup.mkdtemp(f"mb-{kind[0]}-")
    sock = os.path.join(d, "s.sock")
    log = os.path.join(d, "server.log")
    if kind == "redis":
        cmd = [REDIS_SERVER, "--port", "0", "--unixsocket", sock, "--unixsocketperm", "700", "--dir", d,
               "--appendonly", "yes", "--appendfsync", policy, "--save", "", "--daemonize", "no",
               "--logfile", ""]
    else:
        cmd = [sys.executable, "-m", "memd", "serve", "--socket", sock, "--data-dir", os.path.join(d, "data"),
               "--fsync", policy]
    with open(log, "wb") as out:
        # Own session: a terminal Ctrl-C reaches only this script, which then stops the server itself.
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                                start_new_session=True)
    cleanup.procs.append(proc)
    wait_ready(sock, proc, log, START_DEADLINE)
    return proc, sock, d


def run_benchmark(sock: str, n: int, pipeline: int, timeout: float) -> dict[str, float]:
    """One redis-benchmark invocation; returns {test: requests per second} parsed from its CSV."""
    cmd = [REDIS_BENCHMARK, "-s", sock, "-t", "set,get", "-d", str(VALUE_SIZE), "-n", str(n),
           "-r", str(KEYSPACE), "-c", str(CLIENTS), "-P", str(pipeline), "--csv"]
    res = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False)
    out = res.stdout.decode(errors="replace")
    rps: dict[str, float] = {}
    for row in csv.reader(io.StringIO(out)):
        if len(row) >= 2 and row[0] in TESTS:
            try:
                rps[row[0]] = float(row[1])
            except ValueError:
                pass
    if res.returncode != 0 or set(rps) != set(TESTS):
        raise RuntimeError(f"redis-benchmark exited {res.returncode}, parsed {rps}:\n{out[-2000:]}"
                           f"\n{res.stderr.decode(errors='replace')[-2000:]}")
    return rps


def one_run(kind: str, policy: str, n: int, pipeline: int, timeout: float, cleanup: Cleanup) -> dict[str, float]:
    proc, sock, d = start_server(kind, policy, cleanup)
    try:
        try:
            return run_benchmark(sock, n, pipeline, timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"redis-benchmark against {kind} ({policy}, -P {pipeline}) took over "
                               f"{timeout:.0f} s (raise --timeout)") from None
        except RuntimeError as e:
            raise RuntimeError(f"{e}\n--- {kind} log ---\n{tail(os.path.join(d, 'server.log'))}") from None
    finally:
        cleanup.stop(proc)
        cleanup.rmdir(d)


def versions() -> tuple[str, str, str]:
    memd = memd_build()
    redis = command_output([REDIS_SERVER, "--version"])
    redis = next((w[2:] for w in redis.split() if w.startswith("v=")), redis)
    bench = command_output([REDIS_BENCHMARK, "--version"])
    return memd, f"redis-server {redis}", bench


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", "-n", type=int, default=None,
                    help="requests per test per run (default 1,000,000; 100,000 with --quick)")
    ap.add_argument("--quick", action="store_true", help="smoke test: -n 100,000 and one round")
    ap.add_argument("--rounds", type=int, default=None,
                    help="A/B rounds per (policy, pipeline) (default 2; 1 with --quick)")
    ap.add_argument("--policy", action="append", choices=POLICIES,
                    help="only this fsync policy (repeatable; default: both)")
    ap.add_argument("--pipeline", "-P", action="append", type=int, choices=PIPELINES,
                    help="only this pipeline depth (repeatable; default: both)")
    ap.add_argument("--timeout", type=float, default=1200.0,
                    help="seconds allowed for one redis-benchmark run of SET+GET (default 1200)")
    args = ap.parse_args()
    n = args.requests or (100_000 if args.quick else 1_000_000)
    rounds = args.rounds or (1 if args.quick else 2)
    if n <= 0 or rounds <= 0:
        ap.error("--requests and --rounds must be positive")
    for exe in (REDIS_SERVER, REDIS_BENCHMARK):
        if not os.access(exe, os.X_OK):
            ap.error(f"{exe} not found (Debian: apt-get install redis-server redis-tools)")

    memd_v, redis_v, bench_v = versions()
    print(machine_line())
    print(f"{memd_v}; {redis_v}; {bench_v}")
    print(f"load: redis-benchmark -t set,get -d {VALUE_SIZE} -n {n:,} -r {KEYSPACE} -c {CLIENTS} "
          f"-P {'|'.join(map(str, args.pipeline or PIPELINES))}; "
          f"{rounds} round(s) alternating redis, memd; median per side")
    sys.stdout.flush()

    cleanup = Cleanup()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, raise_interrupted)
    # results[(policy, pipeline)][kind] = list of {test: rps}, one per round
    results: dict[tuple[str, int], dict[str, list[dict[str, float]]]] = {}
    started = time.monotonic()
    try:
        for policy in args.policy or POLICIES:
            for pipeline in args.pipeline or PIPELINES:
                runs = results.setdefault((policy, pipeline), {"redis": [], "memd": []})
                for r in range(rounds):
                    for kind in ("redis", "memd"):
                        t0 = time.monotonic()
                        rps = one_run(kind, policy, n, pipeline, args.timeout, cleanup)
                        runs[kind].append(rps)
                        print(f"  {policy:<8} -P {pipeline:<2} round {r + 1} {kind:<5} "
                              f"SET {rps['SET']:>10,.0f}/s  GET {rps['GET']:>10,.0f}/s  "
                              f"({time.monotonic() - t0:.0f} s)", flush=True)
    except (KeyboardInterrupt, Interrupted) as e:
        print(f"\ninterrupted ({e.__class__.__name__} {e}); cleaning up", file=sys.stderr)
        return 130
    except RuntimeError as e:
        print(f"\nFAILED: {e}", file=sys.stderr)
        return 1
    finally:
        cleanup.all()

    print(f"\nresults (median of {rounds} round(s) each; ratio = memd / redis; "
          f"total {time.monotonic() - started:.0f} s)")
    header = f"{'fsync':<9} {'test':<4} {'-P':>3} {'redis req/s':>12} {'memd req/s':>12} {'ratio':>7}  target"
    print(header)
    print("-" * len(header))
    failed = []
    for (policy, pipeline), runs in results.items():
        for test in TESTS:
            red = statistics.median(x[test] for x in runs["redis"])
            mem = statistics.median(x[test] for x in runs["memd"])
            ratio = mem / red if red else float("nan")
            target = TARGETS.get((test, pipeline))
            if target is None:
                verdict = "-"
            else:
                ok = ratio >= target
                verdict = f">= {target:.1f}x {'met' if ok else 'NOT MET'}"
                if not ok:
                    failed.append(f"{test} {policy} -P {pipeline}")
            print(f"{policy:<9} {test:<4} {pipeline:>3} {red:>12,.0f} {mem:>12,.0f} {ratio:>6.2f}x  {verdict}")
    print(f"targets not met: {', '.join(failed)}" if failed else "all targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
