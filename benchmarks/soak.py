"""Soak run: a real memd daemon under a steady mixed agent workload, sampled until it stops by itself.

    python3 benchmarks/soak.py --minutes 60          # the figure the README gives (about an hour)
    python3 benchmarks/soak.py --minutes 3           # a quick look
    python3 benchmarks/soak.py --minutes 0.25 --sample-seconds 5 --warmup-minutes 0   # smoke test

Why: the other benchmarks run for seconds; a slow leak (memory kept per connection, per flush, per
search, per maintenance run; a file descriptor left open by a backup) only shows over an hour. This
script looks for one.

The daemon: a fresh ``memd serve --fsync everysec`` in a temp dir with its own socket, configured
with compaction AND backups every minute (``[compaction] schedule``, ``[backup] schedule``) and the
metrics textfile rewritten every 15 s, so each maintenance job runs dozens of times; everything else
is memd's default.

The workload: ``--workers`` processes (one redis-py connection each; processes, not threads, so
client-side GIL contention neither throttles the load nor skews the lag probe), each paced to
``--rate`` / workers commands per second, drawing from a fixed mix: SET/GET/DEL on strings, HSET/
HGETALL/HINCRBY on hashes, RPUSH + LTRIM and LRANGE on lists, INCR, SET ... EX 1-5 s and GET on keys
that keep expiring and being rewritten, MEM.PUT (some with a TTL) / MEM.GET / MEM.DEL, and MEM.SEARCH
with QUERY, FILTER, and both. Every key lives in a bounded keyspace and is overwritten, so the data
(and the memory versions, capped by ``[memory] history_versions``) reach a steady state: any
growth after warm-up is a leak, not data. At the default 500 commands/s each of the 1,000 memories
is rewritten about twice a minute, so nearly all hold their 10 kept versions by minute 10 (the
warm-up); the rate is modest so that a shared machine sustains it and the load stays constant. Each worker owns a disjoint part of the keyspace and checks
what it reads back against what it wrote (strings, hashes, lists, non-expiring memories): a wrong
reply is counted and fails the run.

Every ``--sample-seconds`` (60) one line: minute, commands done (and per second), errors and wrong
replies so far, the daemon's RSS and anonymous RSS (``Anonymous`` of /proc/PID/smaps_rollup: the
heap, without file pages such as SQLite's memory-mapped database), open fds (/proc/PID/fd), memd's
WAL bytes (INFO memd_wal_bytes), the SQLite file and its -wal file, DBSIZE, and the event-loop lag:
round-trip percentiles of a PING sent every 50 ms on a connection of its own from this otherwise idle
process (memd exposes no loop-lag figure; a PING waits exactly as long as the loop is busy), and how
many compactions and backups have run.

At the end: the least-squares slope of anonymous RSS over the samples from ``--warmup-minutes`` (10)
on, in MB per 10 minutes; the fd count and its slope; the SQLite size and its slope; then PASS/FAIL
against the targets: anonymous RSS slope < 2 MB / 10 min, no fd growth (the fewest fds seen in the
last third of the post-warm-up samples is not above the fewest in the first third: the count
jitters by a few as WAL segments roll over, a backup writes its snapshot or a search opens a reader,
but a leaked fd raises the floor for good; when it rises, the kinds of fd that grew are printed),
SQLite file (main + -wal) slope < max(1 MB, 5 % of its median size) per 10 min; and no wrong reply,
no error reply, no error in the daemon's log, the daemon exits 0 on SIGTERM and every compaction and
backup succeeded. Fewer than 3 post-warm-up samples is INCONCLUSIVE. Exit code: 0 PASS, 1 FAIL, 2
INCONCLUSIVE, 130 interrupted. The daemon, the workers and the temp dir are removed on any exit.
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing as mp
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# (benchutil: this folder, which is on sys.path when a script here runs)
from benchutil import (
    REPO, Cleanup, Interrupted, machine_line, memd_build, raise_interrupted, tail, wait_ready,
)

START_DEADLINE = 60.0
PING_EVERY = 0.05
CONFIG = """\
[compaction]
schedule = "every 1m"
[backup]
schedule = "every 1m"
[metrics]
textfile = "{textfile}"
schedule = "every 15s"
"""

# the keyspace: bounded, so the data size reaches a plateau
STRINGS, HASHES, LISTS, TTL_KEYS, NAMESPACES, MEMS_PER_NS = 4000, 1000, 200, 2000, 8, 125
LIST_KEEP = 50
UNKNOWN: Any = object()  # a memory written with a TTL: present or expired, either is right
HASH_FIELDS = 10
KINDS = ("fact", "preference", "event", "instruction")
TOPICS = ("cooking", "travel", "code", "music", "health", "work", "family", "money")
FILTERS = ('{"kind":"fact"}', '{"stars":{"$gte":4}}', '{"kind":"preference","stars":{"$gte":3}}',
           '{"topic":"travel","kind":{"$ne":"event"}}')
# (operation, weight): the mix each worker draws from
MIX: tuple[tuple[str, int], ...] = (
    ("set", 14), ("get", 16), ("del", 2), ("hset", 8), ("hgetall", 4), ("hincrby", 3),
    ("push_trim", 8), ("lrange", 3), ("incr", 2), ("set_ttl", 8), ("get_ttl", 6),
    ("mem_put", 8), ("mem_get", 6), ("mem_del", 1),
    ("search_query", 2), ("search_filter", 2), ("search_both", 1),
)


def make_vocab(rng: random.Random, n: int = 600) -> list[str]:
    syll = ["ka", "lo", "mi", "ren", "tu", "sa", "vel", "or", "ni", "pa", "dre", "qu", "ish", "mo", "tan", "be"]
    words: set[str] = set()
    while len(words) < n:
        words.add("".join(rng.choice(syll) for _ in range(rng.randint(2, 4))))
    return sorted(words)


# ---- the workload (runs in worker processes) --------------------------------------------------

class Worker:
    """One connection's share of the workload: its own keys, what it wrote to them, its counters."""

    def __init__(self, idx: int, nworkers: int, sock: str, seed: int) -> None:
        import redis  # noqa: PLC0415 - imported in the worker process, after the fork

        self.idx, self.n = idx, nworkers
        self.r = redis.Redis(unix_socket_path=sock, socket_timeout=120, decode_responses=False)
        self.rng = random.Random(seed * 7919 + idx)
        self.vocab = make_vocab(random.Random(seed))
        self.ops_names = [name for name, w in MIX for _ in range(w)]
        # What this worker wrote. The daemon starts empty and no other worker touches these keys, so
        # the model is exact: a key not in it does not exist. UNKNOWN: a memory with a TTL.
        self.strings: dict[int, bytes] = {}
        self.hashes: dict[int, dict[bytes, bytes]] = {}
        self.lists: dict[int, list[bytes]] = {}
        self.mems: dict[tuple[int, int], dict[str, Any] | None] = {}
        self.word_weights = list(itertools.accumulate(1 / (r + 1) for r in range(len(self.vocab))))
        self.counter = 0
        self.problems: list[str] = []

    def own(self, total: int) -> int:
        """A random index in this worker's share of a keyspace (i % workers == idx)."""
        return self.rng.randrange(self.idx, total, self.n)

    def blob(self, lo: int, hi: int) -> bytes:
        return self.rng.randbytes(self.rng.randint(lo, hi))

    def memory(self) -> dict[str, Any]:
        words = self.rng.choices(self.vocab, cum_weights=self.word_weights, k=self.rng.randint(20, 120))
        return {"text": " ".join(words), "kind": self.rng.choice(KINDS), "stars": self.rng.randint(1, 5),
                "topic": self.rng.choice(TOPICS)}

    def wrong(self, what: str) -> None:
        if len(self.problems) < 20:
            self.problems.append(what)

    def op(self, name: str) -> None:  # noqa: C901, PLR0912, PLR0915 - one branch per operation of the mix
        r, rng = self.r, self.rng
        if name == "set":
            i = self.own(STRINGS)
            v = self.blob(50, 400)
            r.set(f"s:{i}", v)
            self.strings[i] = v
        elif name == "get":
            i = self.own(STRINGS)
            got, want = r.get(f"s:{i}"), self.strings.get(i)
            if got != want:
                self.wrong(f"GET s:{i}: {got!r:.40} != {want!r:.40}")
        elif name == "del":
            i = self.own(STRINGS)
            r.delete(f"s:{i}")
            self.strings.pop(i, None)
        elif name == "hset":
            i = self.own(HASHES)
            fields = {f"f{rng.randrange(HASH_FIELDS)}".encode(): self.blob(10, 80) for _ in range(rng.randint(1, 4))}
            r.hset(f"h:{i}", mapping=fields)
            self.hashes.setdefault(i, {}).update(fields)
        elif name == "hgetall":
            i = self.own(HASHES)
            got, want = r.hgetall(f"h:{i}"), self.hashes.get(i, {})
            if got != want:
                self.wrong(f"HGETALL h:{i}: {len(got)} fields {sorted(got)}, expected {sorted(want)}")
        elif name == "hincrby":
            i = self.own(HASHES)
            got = r.hincrby(f"h:{i}", "n", 1)
            h = self.hashes.setdefault(i, {})
            want = int(h.get(b"n", b"0")) + 1
            if got != want:
                self.wrong(f"HINCRBY h:{i} n: {got} != {want}")
            h[b"n"] = str(want).encode()
        elif name == "push_trim":
            i = self.own(LISTS)
            items = [self.blob(10, 60) for _ in range(rng.randint(1, 5))]
            p = r.pipeline(transaction=False)
            p.rpush(f"l:{i}", *items)
            p.ltrim(f"l:{i}", -LIST_KEEP, -1)
            p.execute()
            self.lists[i] = (self.lists.get(i, []) + items)[-LIST_KEEP:]
        elif name == "lrange":
            i = self.own(LISTS)
            got, want = r.lrange(f"l:{i}", 0, -1), self.lists.get(i, [])
            if got != want:
                self.wrong(f"LRANGE l:{i}: {len(got)} items, expected {len(want)}")
        elif name == "incr":
            got = r.incr(f"c:{self.idx}")
            if got != self.counter + 1:
                self.wrong(f"INCR c:{self.idx}: {got} != {self.counter + 1}")
            self.counter += 1
        elif name == "set_ttl":
            i = self.own(TTL_KEYS)
            r.set(f"t:{i}", self.blob(20, 200), ex=rng.randint(1, 5))
        elif name == "get_ttl":
            r.get(f"t:{self.own(TTL_KEYS)}")  # present or expired: either is right
        elif name == "mem_put":
            a, k = self.own(NAMESPACES), rng.randrange(MEMS_PER_NS)
            value = self.memory()
            ttl = rng.random() < 0.1
            args: list[Any] = ["MEM.PUT", f"agent-{a}.mem", f"m{k}", json.dumps(value, separators=(",", ":"))]
            if ttl:
                args += ["TTL", rng.randint(2, 30)]
            r.execute_command(*args)
            self.mems[(a, k)] = UNKNOWN if ttl else value
        elif name == "mem_get":
            a, k = self.own(NAMESPACES), rng.randrange(MEMS_PER_NS)
            got = r.execute_command("MEM.GET", f"agent-{a}.mem", f"m{k}")
            want = self.mems.get((a, k))
            if want is not UNKNOWN and (json.loads(got)["value"] if got is not None else None) != want:
                self.wrong(f"MEM.GET agent-{a}.mem m{k}: {got!r:.60}, expected {json.dumps(want):.60}")
        elif name == "mem_del":
            a, k = self.own(NAMESPACES), rng.randrange(MEMS_PER_NS)
            r.execute_command("MEM.DEL", f"agent-{a}.mem", f"m{k}")
            self.mems.pop((a, k), None)
        elif name.startswith("search_"):
            a = self.own(NAMESPACES)
            prefix = f"agent-{a}" if rng.random() < 0.8 else ""
            args = ["MEM.SEARCH", prefix]
            if name != "search_filter":
                args += ["QUERY", rng.choice(self.vocab[20:])]
            if name != "search_query":
                args += ["FILTER", rng.choice(FILTERS)]
            args += ["LIMIT", 10]
            for raw in r.execute_command(*args):
                item = json.loads(raw)
                if not item["namespace"].startswith(prefix):
                    self.wrong(f"MEM.SEARCH {prefix!r} returned namespace {item['namespace']!r}")
        else:
            raise ValueError(name)


def worker_main(idx: int, nworkers: int, sock: str, rate: float, seed: int, stop: Any,
                ops: Any, errors: Any, wrong: Any, problems: Any) -> None:
    """Run the mix at ``rate`` commands/s until ``stop`` is set; counts go to shared arrays (slot ``idx``)."""
    import redis  # noqa: PLC0415

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when workers stop
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    w = Worker(idx, nworkers, sock, seed)
    interval = 1.0 / rate
    next_at = time.monotonic()
    while not stop.is_set():
        name = w.rng.choice(w.ops_names)
        try:
            w.op(name)
            ops[idx] += 1
        except redis.ConnectionError as e:
            if stop.is_set():
                break
            errors[idx] += 1
            w.wrong(f"{name}: connection error {e}")
            time.sleep(0.5)
        except redis.ResponseError as e:
            errors[idx] += 1
            w.wrong(f"{name}: error reply {e}")
        if len(w.problems) != wrong[idx]:
            wrong[idx] = len(w.problems)
            problems.put((idx, w.problems[-1]))
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        elif delay < -1.0:
            next_at = time.monotonic()  # behind by more than a second: do not burst to catch up


# ---- sampling (this process) -------------------------------------------------------------------

class LagProbe(threading.Thread):
    """PING every 50 ms on a connection of its own; the round trips since the last ``take``."""

    def __init__(self, sock: str) -> None:
        super().__init__(daemon=True, name="lag-probe")
        import redis  # noqa: PLC0415

        self.r = redis.Redis(unix_socket_path=sock, socket_timeout=120)
        self.lock = threading.Lock()
        self.samples: list[float] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            t0 = time.perf_counter()
            try:
                self.r.ping()
            except Exception:  # noqa: BLE001 - the daemon going away ends the probe; the sampler reports it
                return
            dt = (time.perf_counter() - t0) * 1000
            with self.lock:
                self.samples.append(dt)
            self.stopping.wait(PING_EVERY)

    def take(self) -> list[float]:
        with self.lock:
            out, self.samples = self.samples, []
        return out


@dataclass
class Sample:
    minute: float
    ops: int
    errors: int
    wrong: int
    rss_mb: float
    anon_mb: float
    fds: int
    wal_mb: float
    sqlite_mb: float
    sqlite_wal_mb: float
    keys: int
    lag_p50: float
    lag_p99: float
    lag_max: float
    compactions: int
    backups: int
    info: dict[str, Any] = field(default_factory=dict, repr=False)
    fd_kinds: Counter[str] = field(default_factory=Counter, repr=False)


def proc_kib(path: str, key: str) -> int:
    with open(path) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{key} not found in {path}")


def anon_kib(pid: int) -> int:
    """Anonymous memory (heap, stacks; not file pages such as SQLite's mmap of the database)."""
    try:
        return proc_kib(f"/proc/{pid}/smaps_rollup", "Anonymous")
    except (OSError, RuntimeError):
        return proc_kib(f"/proc/{pid}/status", "RssAnon")


def fd_kinds(pid: int, base: str) -> Counter[str]:
    """What the open fds point to, numbers folded (``socket:[N]``, ``wal/N.wal``): names a leak's kind."""
    kinds: Counter[str] = Counter()
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue  # closed since the listing
        kinds[re.sub(r"\d+", "N", target.replace(base, "<dir>"))] += 1
    return kinds


def file_mb(path: str) -> float:
    try:
        return os.path.getsize(path) / 1e6
    except OSError:
        return 0.0


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def take_sample(minute: float, pid: int, base: str, data_dir: str, r: Any, probe: LagProbe,
                ops: Any, errors: Any, wrong: Any) -> Sample:
    info = r.info("all")
    lags = probe.take()
    db = os.path.join(data_dir, "memd.sqlite3")
    kinds = fd_kinds(pid, base)
    return Sample(
        minute=minute, ops=sum(ops), errors=sum(errors), wrong=sum(wrong),
        rss_mb=proc_kib(f"/proc/{pid}/status", "VmRSS") / 1024, anon_mb=anon_kib(pid) / 1024,
        fds=sum(kinds.values()), wal_mb=int(info.get("memd_wal_bytes", 0)) / 1e6,
        sqlite_mb=file_mb(db), sqlite_wal_mb=file_mb(db + "-wal"), keys=int(r.dbsize()),
        lag_p50=pct(lags, 0.5), lag_p99=pct(lags, 0.99), lag_max=max(lags, default=float("nan")),
        compactions=int(info.get("compact_runs", 0)), backups=int(info.get("backup_runs", 0)), info=info,
        fd_kinds=kinds,
    )


HEADER = (f"{'min':>5} {'ops':>9} {'ops/s':>6} {'err':>4} {'wrong':>5} {'rss_MB':>7} {'anon_MB':>7} {'fds':>4} "
          f"{'wal_MB':>7} {'sqlite_MB':>9} {'sq-wal_MB':>9} {'keys':>6} {'ping_p50':>8} {'p99':>7} {'max_ms':>7} "
          f"{'compact':>7} {'backup':>6}")


def line(s: Sample, prev: Sample | None) -> str:
    dt = (s.minute - prev.minute) * 60 if prev else s.minute * 60
    rate = (s.ops - (prev.ops if prev else 0)) / dt if dt > 0 else 0.0
    return (f"{s.minute:5.1f} {s.ops:9d} {rate:6.0f} {s.errors:4d} {s.wrong:5d} {s.rss_mb:7.1f} {s.anon_mb:7.1f} "
            f"{s.fds:4d} {s.wal_mb:7.2f} {s.sqlite_mb:9.2f} {s.sqlite_wal_mb:9.2f} {s.keys:6d} {s.lag_p50:8.2f} "
            f"{s.lag_p99:7.2f} {s.lag_max:7.1f} {s.compactions:7d} {s.backups:6d}")


def slope_per_10min(xs: list[float], ys: list[float]) -> float:
    return statistics.linear_regression(xs, ys).slope * 10 if len(xs) >= 2 and len(set(xs)) > 1 else 0.0


def summarize(samples: list[Sample], warmup: float, daemon_rc: int | None, log_errors: list[str]) -> int:
    """Print the slopes and the verdict; return the exit code (0 PASS, 1 FAIL, 2 INCONCLUSIVE)."""
    post = [s for s in samples if s.minute >= warmup - 1e-9]
    fails: list[str] = []
    last = samples[-1] if samples else None
    print()
    if last is None:
        print("summary: no samples")
        return 1
    if last.wrong:
        fails.append(f"{last.wrong} wrong replies")
    if last.errors:
        fails.append(f"{last.errors} error replies / connection errors")
    if log_errors:
        fails.append(f"{len(log_errors)} error lines in the daemon's log")
    if daemon_rc is None:
        fails.append("the daemon was never stopped (an unfinished run's log?)")
    elif daemon_rc != 0:
        fails.append(f"daemon exit code {daemon_rc} on SIGTERM (expected 0)")
    inf = last.info
    for job in ("compact", "backup"):
        if int(inf.get(f"{job}_failures", 0)):
            fails.append(f"{inf[f'{job}_failures']} failed {job} runs (last: {inf.get(f'{job}_last_result')})")
    print(f"summary over minutes {warmup:g}..{last.minute:.1f} ({len(post)} samples): "
          f"{last.ops:,} commands, {last.compactions} compactions, {last.backups} backups, "
          f"{last.errors} errors, {last.wrong} wrong replies, {len(log_errors)} log errors, daemon exit {daemon_rc}")
    if len(post) < 3:
        print(f"  fewer than 3 samples after the warm-up ({warmup:g} min): slopes not judged")
        verdict = "FAIL" if fails else "INCONCLUSIVE"
        print(f"RESULT: {verdict}" + (f" ({'; '.join(fails)})" if fails else ""))
        return 1 if fails else 2
    xs = [s.minute for s in post]
    anon = slope_per_10min(xs, [s.anon_mb for s in post])
    rss = slope_per_10min(xs, [s.rss_mb for s in post])
    fd_slope = slope_per_10min(xs, [float(s.fds) for s in post])
    third = max(1, len(post) // 3)
    low_first = min(post[:third], key=lambda s: s.fds)
    low_last = min(post[-third:], key=lambda s: s.fds)
    sizes = [s.sqlite_mb + s.sqlite_wal_mb for s in post]
    size_slope = slope_per_10min(xs, sizes)
    size_bound = max(1.0, 0.05 * statistics.median(sizes))
    print(f"  anonymous RSS: {post[0].anon_mb:.1f} -> {post[-1].anon_mb:.1f} MB, slope {anon:+.2f} MB / 10 min "
          f"(target < 2)  [total RSS slope {rss:+.2f} MB / 10 min]")
    print(f"  fds: {post[0].fds} -> {post[-1].fds} (range {min(s.fds for s in post)}..{max(s.fds for s in post)}), "
          f"slope {fd_slope:+.2f} / 10 min; fewest in the first third {low_first.fds}, in the last third "
          f"{low_last.fds} (target: not above the first third's)")
    print(f"  SQLite file + -wal: {sizes[0]:.2f} -> {sizes[-1]:.2f} MB (min {min(sizes):.2f}, max {max(sizes):.2f}), "
          f"slope {size_slope:+.3f} MB / 10 min (target < {size_bound:.2f}); memd WAL {post[-1].wal_mb:.2f} MB; "
          f"keys {min(s.keys for s in post)}..{max(s.keys for s in post)}")
    lag99 = [s.lag_p99 for s in post if s.lag_p99 == s.lag_p99]
    if lag99:
        print(f"  PING round trip p99 per sample: median {statistics.median(lag99):.2f} ms, worst "
              f"{max(lag99):.2f} ms; worst single PING {max(s.lag_max for s in post):.1f} ms")
    if anon >= 2.0:
        fails.append(f"anonymous RSS slope {anon:+.2f} MB / 10 min >= 2")
    if low_last.fds > low_first.fds:
        grew = low_last.fd_kinds - low_first.fd_kinds
        fails.append(f"fd growth: at least {low_last.fds} open fds at every sample of the last third, against "
                     f"{low_first.fds} in the first third; more of: "
                     + ", ".join(f"{k} +{n}" for k, n in grew.most_common(5)))
    if size_slope >= size_bound:
        fails.append(f"SQLite size slope {size_slope:+.3f} MB / 10 min >= {size_bound:.2f}")
    print(f"RESULT: {'FAIL (' + '; '.join(fails) + ')' if fails else 'PASS'}")
    return 1 if fails else 0


def parse_log(path: str) -> tuple[list[Sample], int | None, list[str]]:
    """The samples, daemon exit code and daemon-log error lines a run printed (for ``--from-log``).

    Re-judging a saved run needs no new run: e.g. with another ``--warmup-minutes``. What the table
    does not hold (the kinds of fd, failed maintenance runs) is missing from such a verdict; the
    run's own summary has it.
    """
    samples: list[Sample] = []
    rc: int | None = None
    errors: list[str] = []
    with open(path, errors="replace") as f:
        for text in f:
            cols = text.split()
            if len(cols) == 17 and re.fullmatch(r"\d+\.\d", cols[0]):
                v = [float(c) for c in cols]
                samples.append(Sample(
                    minute=v[0], ops=int(v[1]), errors=int(v[3]), wrong=int(v[4]), rss_mb=v[5], anon_mb=v[6],
                    fds=int(v[7]), wal_mb=v[8], sqlite_mb=v[9], sqlite_wal_mb=v[10], keys=int(v[11]),
                    lag_p50=v[12], lag_p99=v[13], lag_max=v[14], compactions=int(v[15]), backups=int(v[16])))
            elif m := re.match(r"daemon stopped .* exit code (-?\d+)", text):
                rc = int(m[1])
            elif text.startswith("  daemon log: "):
                errors.append(text.rstrip())
    return samples, rc, errors


# ---- the run -----------------------------------------------------------------------------------

def log_error_lines(path: str) -> list[str]:
    out = []
    try:
        with open(path, errors="replace") as f:
            for raw in f:
                if '"level": "error"' in raw or '"level": "critical"' in raw or "Traceback" in raw:
                    out.append(raw.rstrip())
    except OSError:
        pass
    return out


def run(args: argparse.Namespace, cleanup: Cleanup) -> int:
    import redis  # noqa: PLC0415

    base = cleanup.mkdtemp("memd-soak-")
    sock, data_dir, log = (os.path.join(base, n) for n in ("memd.sock", "data", "memd.log"))
    config = os.path.join(base, "memd.toml")
    with open(config, "w") as f:
        f.write(CONFIG.format(textfile=os.path.join(base, "memd.prom")))
    cmd = [sys.executable, "-m", "memd", "serve", "--socket", sock, "--data-dir", data_dir,
           "--fsync", "everysec", "--config", config]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                                start_new_session=True)  # own session: Ctrl-C reaches only this script
    cleanup.procs.append(proc)
    wait_ready(sock, proc, log, START_DEADLINE)
    print(f"daemon pid {proc.pid}, dir {base}; config: compaction and backup every 1m, metrics textfile every 15s",
          flush=True)

    ctx = mp.get_context("fork")  # before any thread of this process starts
    stop = ctx.Event()
    ops, errors, wrong = (ctx.Array("q", args.workers, lock=False) for _ in range(3))
    problems = ctx.Queue()
    workers = [ctx.Process(target=worker_main, name=f"soak-worker-{i}", daemon=True,
                           args=(i, args.workers, sock, args.rate / args.workers, args.seed, stop,
                                 ops, errors, wrong, problems))
               for i in range(args.workers)]
    samples: list[Sample] = []
    daemon_rc: int | None = None
    probe = LagProbe(sock)
    r = redis.Redis(unix_socket_path=sock, socket_timeout=120)
    try:
        for w in workers:
            w.start()
        probe.start()
        t0 = time.monotonic()
        end = t0 + args.minutes * 60
        print(HEADER, flush=True)
        next_at = t0 + args.sample_seconds
        while True:
            now = time.monotonic()
            at = min(next_at, end)
            if at > now:
                time.sleep(at - now)
            if proc.poll() is not None:
                raise RuntimeError(f"memd exited with {proc.returncode} during the run:\n{tail(log)}")
            dead = [w.name for w in workers if not w.is_alive()]
            if dead:
                raise RuntimeError(f"workers died: {', '.join(dead)}")
            s = take_sample((time.monotonic() - t0) / 60, proc.pid, base, data_dir, r, probe, ops, errors, wrong)
            print(line(s, samples[-1] if samples else None), flush=True)
            samples.append(s)
            while not problems.empty():
                idx, what = problems.get_nowait()
                print(f"  worker {idx}: {what}", flush=True)
            if at >= end:
                break
            next_at += args.sample_seconds
    finally:
        stop.set()
        probe.stopping.set()
        for w in workers:
            w.join(timeout=30)
            if w.is_alive():
                w.terminate()
                w.join(timeout=10)
    t_stop = time.monotonic()
    cleanup.stop(proc)
    daemon_rc = proc.returncode
    print(f"daemon stopped (SIGTERM) in {time.monotonic() - t_stop:.1f} s, exit code {daemon_rc}")
    errs = log_error_lines(log)
    for e in errs[:10]:
        print(f"  daemon log: {e}")
    return summarize(samples, args.warmup_minutes, daemon_rc, errs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=60.0, help="how long the workload runs (default 60)")
    ap.add_argument("--sample-seconds", type=float, default=60.0, help="seconds between samples (default 60)")
    ap.add_argument("--warmup-minutes", type=float, default=10.0,
                    help="slopes use the samples from this minute on (default 10)")
    ap.add_argument("--workers", type=int, default=4, help="client processes, one connection each (default 4)")
    ap.add_argument("--rate", type=float, default=500.0,
                    help="commands per second, all workers together (default 500)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--from-log", metavar="LOG",
                    help="run nothing: judge the samples an earlier run printed to LOG (e.g. with another warm-up)")
    args = ap.parse_args()
    if args.from_log:
        samples, rc, errs = parse_log(args.from_log)
        print(f"judging {len(samples)} samples from {args.from_log} with the rules of {memd_build()} "
              "(minute precision 0.1; fd kinds and failed maintenance runs are not in the table)")
        return summarize(samples, args.warmup_minutes, rc, errs)
    if args.minutes <= 0 or args.sample_seconds <= 0 or args.workers < 1 or args.rate <= 0 or args.warmup_minutes < 0:
        ap.error("--minutes, --sample-seconds, --rate must be > 0, --workers >= 1, --warmup-minutes >= 0")

    print(machine_line())
    print(memd_build())
    print(f"command: {' '.join([os.path.basename(sys.executable), *sys.argv])}")
    print(f"started {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} (other work on the machine skews lag and rate)")
    print(f"workload: {args.workers} workers, {args.rate:g} commands/s in all; keyspace {STRINGS} strings, "
          f"{HASHES} hashes, {LISTS} lists (<= {LIST_KEEP} items), {TTL_KEYS} keys with TTL 1-5 s, "
          f"{NAMESPACES * MEMS_PER_NS} memories in {NAMESPACES} namespaces; mix "
          + ", ".join(f"{n} {w}" for n, w in MIX), flush=True)

    cleanup = Cleanup()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, raise_interrupted)
    try:
        return run(args, cleanup)
    except (KeyboardInterrupt, Interrupted) as e:
        print(f"\ninterrupted ({e.__class__.__name__} {e}); cleaning up", file=sys.stderr)
        return 130
    except RuntimeError as e:
        print(f"\nFAILED: {e}", file=sys.stderr, flush=True)
        print("RESULT: FAIL (the run did not complete)")
        return 1
    finally:
        cleanup.all()


if __name__ == "__main__":
    sys.exit(main())
