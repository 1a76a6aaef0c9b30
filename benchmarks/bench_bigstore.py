"""Big-store benchmark: schema migration, recovery and start on a store of millions of keys.

    python3 benchmarks/bench_bigstore.py                  # 10,000,000 keys: ~3 GB of disk, tens of minutes
    python3 benchmarks/bench_bigstore.py --keys 1000000   # quicker

What it measures (string keys of 20 bytes, values of 100 bytes, every tenth key with an expiry):
- the v3 -> v4 migration (v4 rebuilds the keys table) of a v3 store, in a child process:
  time, peak RSS (the child's ru_maxrss), peak disk (database + SQLite WAL, polled), how
  many progress reports it made and the longest stretch without one (what the daemon's
  EXTEND_TIMEOUT_USEC must cover);
- recovery: ``memd serve`` started on the migrated store with a WAL tail of
  ``--wal-records`` SETs newer than the flushed LSN (updates of keys spread over the
  whole store): the engine's own recovery time (its ``recovery_done`` log line), the
  time to the first PING answered, RSS then, and the daemon's peak RSS over its life
  (the flush of the recovered buffer and the final flush included);
- a clean start (no WAL to replay) on the same store: time to the first PING, peak RSS.

The store is built directly with sqlite3 executemany into the v3 schema, in an order
unrelated to the keys (as flushes of a real workload leave a rowid table), so the
rebuild reads the old table in rowid order as a real one would.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable

import anyio
import psutil

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchutil import Cleanup, Interrupted, machine_line, memd_build, raise_interrupted, tail, wait_ready  # noqa: E402
from memd.engine.engine import DB_NAME, WAL_DIR  # noqa: E402
from memd.engine.records import OP_SET  # noqa: E402
from memd.engine.wal import WAL  # noqa: E402
from memd.store import schema  # noqa: E402
from memd.store.tokens import field_tokens, ns_tokens  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH = 100_000
EXPIRES = 1_900_000_000_000  # 2030: nothing expires during the run
START_DEADLINE = 3600.0
STOP_DEADLINE = 3600.0


def key(i: int) -> bytes:
    return b"key:%016d" % i  # 20 bytes


def value(i: int, generation: int = 0) -> bytes:
    return b"%d:%018d:" % (generation, i) + b"v" * 80  # ~100 bytes


def stride(n: int) -> int:
    """A step coprime with ``n``: ``i * stride % n`` visits every index once, in an order unrelated to i."""
    s = 2_654_435_761 % n or 1
    while math.gcd(s, n) != 1:
        s += 1
    return s


def build_v3(path: str, n: int) -> None:
    """A store exactly as memd's schema v3 left it, with ``n`` string keys, as fast as SQLite goes."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    conn.execute("PRAGMA journal_mode = OFF")  # a scratch build: no rollback journal, no fsync
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -1048576")  # 1 GiB: the key index takes random inserts
    conn.create_function("memd_ns_tokens", 1, ns_tokens)
    conn.create_function("memd_field_tokens", 1, field_tokens)
    for migration in schema.MIGRATIONS[:3]:
        for statement in migration.split(";\n"):
            if statement.strip():
                conn.execute(statement)
    conn.execute("PRAGMA user_version = 3")
    s = stride(n)
    conn.execute("BEGIN")
    for lo in range(0, n, BATCH):
        rows = []
        for i in range(lo, min(lo + BATCH, n)):
            k = i * s % n
            rows.append((key(k), 1, value(k), EXPIRES + k if k % 10 == 0 else None, 0, 0, 0, 0))
        conn.execute("SAVEPOINT b")
        conn.executemany("INSERT INTO keys VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        conn.execute("RELEASE b")
    conn.execute("COMMIT")
    conn.close()


# Runs in a child process, so the peak is the migration's alone. VmHWM, not ru_maxrss: Linux carries
# ru_maxrss across fork and exec, so a child's would start at the benchmark's own (the built rows).
MIGRATE_CHILD = r"""
import json, sys, time
from memd.store.schema import migrate
path = sys.argv[1]
reports = []
t0 = time.monotonic()
found = migrate(path, lambda a, b, s: reports.append((time.monotonic() - t0, a, b)))
seconds = time.monotonic() - t0
marks = [0.0] + [r[0] for r in reports] + [seconds]
print(json.dumps({"found": found, "seconds": seconds, "reports": len(reports),
                  "max_gap": max(b - a for a, b in zip(marks, marks[1:])),
                  "hwm": int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) * 1024}))
"""


def vm_hwm(pid: int) -> int:
    """A process's peak RSS so far (bytes)."""
    with open(f"/proc/{pid}/status") as f:
        for row in f:
            if row.startswith("VmHWM:"):
                return int(row.split()[1]) * 1024
    raise OSError(f"no VmHWM for {pid}")


def disk_bytes(path: str) -> int:
    return sum(os.path.getsize(p) for p in (path, path + "-wal", path + "-journal") if os.path.exists(p))


class Poller:
    """Samples a number every ``every`` seconds in a thread and keeps the largest."""

    def __init__(self, sample: Callable[[], int], every: float = 0.1) -> None:
        self.sample = sample
        self.every = every
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.sample())
            except (OSError, psutil.Error):
                pass
            self._stop.wait(self.every)


def measure_migration(path: str) -> dict[str, float]:
    with Poller(lambda: disk_bytes(path), 0.2) as disk:
        out = subprocess.run([sys.executable, "-c", MIGRATE_CHILD, path], capture_output=True, text=True,
                             check=True, env={**os.environ, "PYTHONPATH": REPO})
    result = json.loads(out.stdout)
    assert result["found"] == 3, result
    result["peak_disk"] = disk.peak
    return result


async def write_wal_tail(data_dir: str, n_keys: int, records: int) -> None:
    """``records`` SETs after the flushed LSN (0 here), updating keys spread over the whole store."""
    wal = WAL(os.path.join(data_dir, WAL_DIR), fsync="no")
    os.makedirs(wal.directory, exist_ok=True)
    wal.start(1)
    s = stride(n_keys)
    async with anyio.create_task_group() as tg:
        await tg.start(wal.run_syncer)  # it creates each new segment after fsyncing the older ones
        for lsn in range(1, records + 1):
            k = lsn * s % n_keys
            wal.append(lsn, [(OP_SET, key(k), value(k, 1), None)])
            if lsn % 10_000 == 0:
                await wal.wait(lsn)
        await wal.close()
        tg.cancel_scope.cancel()



def run_daemon(cleanup: Cleanup, base: str, data_dir: str) -> dict[str, float]:
    """Start ``memd serve`` on ``data_dir``; time to the first PONG, RSS then and over the whole run."""
    sock = os.path.join(base, "memd.sock")
    log_path = os.path.join(base, "memd.log")
    with open(log_path, "ab") as log:
        t0 = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "memd", "serve", "--socket", sock, "--data-dir", data_dir],
                                cwd=REPO, env={**os.environ, "PYTHONPATH": REPO}, stdout=log, stderr=log)
    cleanup.procs.append(proc)
    ps = psutil.Process(proc.pid)
    with Poller(lambda: vm_hwm(proc.pid), 0.05) as hwm:  # VmHWM only grows: the last sample is ~the peak
        wait_ready(sock, proc, log_path, START_DEADLINE, poll=0.01, reply_timeout=60)  # start time to ~10 ms
        first_ping = time.monotonic() - t0
        rss_at_ping = ps.memory_info().rss
        hwm_at_ping = vm_hwm(proc.pid)
        proc.send_signal(signal.SIGTERM)
        proc.wait(STOP_DEADLINE)
    cleanup.procs.remove(proc)
    if proc.returncode != 0:
        raise RuntimeError(f"memd exited with {proc.returncode}:\n{tail(log_path)}")
    with open(log_path) as f:
        text = f.read()
    found = re.findall(r"recovery_done replayed=(\d+) .*? seconds=([\d.]+)", text)
    os.unlink(log_path)
    return {"first_ping": first_ping, "rss_at_ping": rss_at_ping, "peak_at_ping": hwm_at_ping,
            "peak_rss": hwm.peak, "replayed": int(found[-1][0]),
            "recovery": float(found[-1][1])}


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def line(name: str, *cols: str) -> None:
    print(f"{name:<44}" + "".join(f" {c:>17}" for c in cols), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=10_000_000, help="keys in the store")
    ap.add_argument("--wal-records", type=int, default=None, help="WAL tail to recover (default: keys / 10)")
    ap.add_argument("--dir", default="/tmp", help="where the store is built (needs ~300 bytes per key free)")
    args = ap.parse_args()
    n, records = args.keys, args.wal_records if args.wal_records is not None else args.keys // 10
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, raise_interrupted)
    cleanup = Cleanup()
    try:
        base = cleanup.mkdtemp("memd-big-") if args.dir == "/tmp" else _mkdtemp_in(cleanup, args.dir)
        data_dir = os.path.join(base, "data")
        os.makedirs(data_dir)
        db = os.path.join(data_dir, DB_NAME)
        print(f"memd big-store benchmark: {n:,} keys (20-byte keys, ~100-byte values), WAL tail {records:,} SETs")
        print(f"{memd_build()}; SQLite {sqlite3.sqlite_version}; {machine_line()}", flush=True)
        line("", "time", "peak RSS", "other (size, peak disk)")
        t0 = time.monotonic()
        build_v3(db, n)
        line("build v3 store (sqlite3 executemany)", f"{time.monotonic() - t0:.1f} s", "", mib(disk_bytes(db)))
        m = measure_migration(db)
        line("migration v3 -> v4", f"{m['seconds']:.1f} s", mib(m["hwm"]),
             f"disk {mib(m['peak_disk'])}")
        line("  progress reports / longest gap", f"{m['reports']}", "", f"{m['max_gap']:.1f} s")
        t0 = time.monotonic()
        anyio.run(write_wal_tail, data_dir, n, records)
        line(f"write WAL tail of {records:,} SETs", f"{time.monotonic() - t0:.1f} s", "",
             mib(sum(e.stat().st_size for e in os.scandir(os.path.join(data_dir, WAL_DIR)))))
        r = run_daemon(cleanup, base, data_dir)
        assert r["replayed"] == records, r
        line(f"start with {records:,} WAL records: recovery", f"{r['recovery']:.1f} s", "", "(engine log)")
        line("  first PING answered", f"{r['first_ping']:.1f} s", mib(r["peak_at_ping"]),
             f"RSS now {mib(r['rss_at_ping'])}")
        line("  whole run (+ flush, final flush)", "", mib(r["peak_rss"]), "")
        c = run_daemon(cleanup, base, data_dir)
        line("clean start: first PING answered", f"{c['first_ping']:.1f} s", mib(c["peak_at_ping"]),
             f"store {mib(disk_bytes(db))}")
    except (KeyboardInterrupt, Interrupted) as exc:
        print(f"interrupted ({exc or 'SIGINT'}): cleaning up", file=sys.stderr)
        sys.exit(130)
    finally:
        cleanup.all()


def _mkdtemp_in(cleanup: Cleanup, parent: str) -> str:
    d = tempfile.mkdtemp(prefix="memd-big-", dir=parent)
    cleanup.dirs.append(d)
    return d


if __name__ == "__main__":
    main()
