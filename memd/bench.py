"""``memd bench``: a load generator for a running daemon, measured from the client side.

Concurrency is asyncio: one event loop, one task per simulated client, each
with its own redis-py connection (``redis.asyncio`` ``UnixDomainSocketConnection``:
redis-py's packer and its hiredis reply parser, without the client object's
connection-pool round trip per call). Threads with blocking redis-py were
measured first on this project's 2-core box (SET, 200-byte values, against
a local memd): faster for 1 client, but they stop scaling (8.9k SET/s with 1
thread, 7.7k with 32: the threads take turns on the GIL), where tasks on one
loop kept rising (12.2k with 32 through ``redis.asyncio.Redis``, 16.7k on
bare connections). A load generator in Python is CPU-bound on its own side,
so the one with the least per-request overhead measures more of the daemon;
building and packing each pipeline happens outside its latency measurement
(but inside the wall time).

What is measured, and how (printed with the results, too):

* throughput = requests / wall time from the moment every connection is
  open and every task is ready to the last reply read;
* latency = one round trip of one connection: from before its pipeline of
  ``P`` commands is written to after its ``P``-th reply is read. Every
  request of the pipeline is counted with that latency (as redis-benchmark
  does). It includes the client's own scheduling delay: with many clients on
  one loop a reply can wait for the loop, so latencies are an upper bound of
  what the daemon alone takes.

Keys are ``memd-bench:<n>`` (n < ``--keys``) and memories go under the
namespace ``memd-bench``: a bench writes into the daemon it is pointed at.
For ``get`` every key is written first (untimed), so GETs hit.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from redis.asyncio.connection import UnixDomainSocketConnection
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

COMMANDS = ("set", "get", "mem.put")
KEY_PREFIX = b"memd-bench:"
NAMESPACE = "memd-bench"
PREFILL_BATCH = 1000
PERCENTILES = (50.0, 90.0, 99.0)


@dataclass(frozen=True, slots=True)
class Plan:
    """What to run; every number is at least 1 (the CLI checks)."""

    socket_path: str
    requests: int
    clients: int
    pipeline: int
    value_size: int
    keys: int
    command: str


@dataclass(slots=True)
class Result:
    """What a run measured: wall time and one latency (ns) per request."""

    seconds: float
    latencies_ns: list[int] = field(default_factory=list)
    cache_hit_rate: float | None = None  # the daemon's read cache over the run (INFO, before and after); None: unknown

    @property
    def requests(self) -> int:
        return len(self.latencies_ns)

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else math.inf


def percentile(sorted_values: Sequence[int], p: float) -> int:
    """Nearest-rank percentile of an ascending sequence (p in (0, 100]): a value that was observed."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def _key(n: int) -> bytes:
    return KEY_PREFIX + str(n).encode()


def _mem_value(size: int) -> str:
    """A JSON object of about ``size`` bytes (never less than its smallest form, ``{"v":""}``)."""
    return json.dumps({"v": "x" * max(0, size - 8)}, separators=(",", ":"))


def make_command(plan: Plan, rng: random.Random, value: bytes | str) -> tuple[bytes | str, ...]:
    """One request of the plan's kind, on a random key among ``plan.keys``."""
    n = rng.randrange(plan.keys)
    if plan.command == "set":
        return ("SET", _key(n), value)
    if plan.command == "get":
        return ("GET", _key(n))
    if plan.command == "mem.put":
        return ("MEM.PUT", NAMESPACE, f"k{n}", value)
    raise ValueError(f"unknown command {plan.command!r}; one of {', '.join(COMMANDS)}")


def quotas(requests: int, clients: int) -> list[int]:
    """Split the requests over the clients as evenly as possible (no client gets 0 unless there are fewer)."""
    base, extra = divmod(requests, clients)
    return [base + (1 if i < extra else 0) for i in range(clients)]


async def _connect(path: str) -> UnixDomainSocketConnection:
    # A bare connection retries nothing: a socket nobody listens on fails at once, with the real reason.
    # RESP2 explicitly (redis-py 8 defaults a bare connection to RESP3): no HELLO, as redis-benchmark does.
    conn = UnixDomainSocketConnection(path=path, socket_timeout=30, protocol=2)
    await conn.connect()
    return conn


async def _prefill(conn: UnixDomainSocketConnection, plan: Plan, value: bytes) -> None:
    """Write every key once, untimed, so a ``get`` run measures hits."""
    for start in range(0, plan.keys, PREFILL_BATCH):
        batch = [("SET", _key(n), value) for n in range(start, min(plan.keys, start + PREFILL_BATCH))]
        await conn.send_packed_command(conn.pack_commands(batch))
        for _ in batch:
            await conn.read_response()


async def _client(conn: UnixDomainSocketConnection, plan: Plan, quota: int, seed: int, value: bytes | str,
                  start: asyncio.Event, done: list[int], index: int, latencies: list[int]) -> None:
    """One connection's share: pipelines of ``plan.pipeline`` until its quota is sent and answered."""
    rng = random.Random(seed)
    await start.wait()
    sent = 0
    while sent < quota:
        n = min(plan.pipeline, quota - sent)
        packed = conn.pack_commands([make_command(plan, rng, value) for _ in range(n)])
        t0 = time.perf_counter_ns()
        await conn.send_packed_command(packed)
        for _ in range(n):
            await conn.read_response()  # raises ResponseError on a -ERR reply: the run stops
        elapsed = time.perf_counter_ns() - t0
        latencies.extend([elapsed] * n)
        sent += n
        done[index] = sent


async def _progress(progress: Progress, task: TaskID, done: list[int], total: int) -> None:
    """Move the bar from the counters, ten times a second, off the clients' path."""
    while True:
        progress.update(task, completed=sum(done))
        if sum(done) >= total:
            return
        await asyncio.sleep(0.1)


async def _measure(plan: Plan, conns: list[UnixDomainSocketConnection], value: bytes | str,
                   progress: Progress) -> Result:
    """The timed part: every client task waits for one start signal, the clock runs until the last reply."""
    start = asyncio.Event()
    done = [0] * plan.clients
    per_client: list[list[int]] = [[] for _ in conns]
    clients = [asyncio.create_task(_client(c, plan, q, i, value, start, done, i, per_client[i]))
               for i, (c, q) in enumerate(zip(conns, quotas(plan.requests, plan.clients), strict=True))]
    task = progress.add_task(f"{plan.command} x{plan.requests}", total=plan.requests)
    bar = asyncio.create_task(_progress(progress, task, done, plan.requests))
    await asyncio.sleep(0)  # let every client task reach start.wait() before the clock starts
    t0 = time.perf_counter()
    start.set()
    try:
        await asyncio.gather(*clients)
    finally:
        seconds = time.perf_counter() - t0
        for t in (*clients, bar):
            t.cancel()
        await asyncio.gather(*clients, bar, return_exceptions=True)
        progress.update(task, completed=sum(done))
    return Result(seconds, [ns for lat in per_client for ns in lat])


async def _run(plan: Plan, console: Console) -> Result:
    """Connect (and prefill) first, so a dead socket fails before any bar is drawn and nothing untimed is timed."""
    value: bytes | str = _mem_value(plan.value_size) if plan.command == "mem.put" else b"x" * plan.value_size
    conns: list[UnixDomainSocketConnection] = []
    try:
        for _ in range(plan.clients):
            conns.append(await _connect(plan.socket_path))
        if plan.command == "get":
            await _prefill(conns[0], plan, b"x" * plan.value_size)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        # drawn only on a terminal: into a pipe or a log file rich would write a bare frame (or blank line)
        before = await _cache_counts(conns[0])
        with Progress(*columns, console=console, disable=not console.is_terminal) as progress:
            result = await _measure(plan, conns, value, progress)
        result.cache_hit_rate = hit_rate(before, await _cache_counts(conns[0]))
        return result
    finally:
        for c in conns:
            await c.disconnect()


async def _cache_counts(conn: UnixDomainSocketConnection) -> tuple[int, int] | None:
    """The daemon's read cache hits and misses so far (INFO persistence), None if it shows none."""
    await conn.send_command("INFO", "persistence")
    text = await conn.read_response()
    fields = dict(line.split(":", 1) for line in (text.decode() if isinstance(text, bytes) else str(text)).splitlines()
                  if ":" in line)
    try:
        return int(fields["memd_readcache_hits"]), int(fields["memd_readcache_misses"])
    except (KeyError, ValueError):
        return None


def hit_rate(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """Hits over lookups between two readings of the counters (None: unknown, or no lookups)."""
    if before is None or after is None:
        return None
    hits, looked = after[0] - before[0], after[0] + after[1] - before[0] - before[1]
    return hits / looked if looked > 0 else None


def run(plan: Plan, progress_console: Console | None = None) -> Result:
    """Run the plan with a progress bar (on stderr by default, so stdout keeps only the results)."""
    return asyncio.run(_run(plan, progress_console or Console(stderr=True)))


def report(plan: Plan, result: Result) -> list[str]:
    """The lines ``memd bench`` prints: what ran, how it was measured, throughput, percentiles."""
    lat = sorted(result.latencies_ns)
    what = plan.command.upper()
    lines = [
        f"memd bench: {what}, {result.requests} requests over {plan.clients} connection(s), pipeline "
        f"{plan.pipeline}, {plan.value_size}-byte values, {plan.keys} keys, on {plan.socket_path}",
        "measured at the client: throughput = requests / wall time from the start signal (connections "
        "already open) to the last reply; latency = one round trip of a pipeline (write it, read all its "
        "replies), counted for each request in it, including client-side scheduling",
        f"throughput: {result.throughput:,.0f} requests/s ({result.requests} requests in {result.seconds:.3f} s)",
    ]
    lines += [f"latency p{p:g}: {percentile(lat, p) / 1e6:.3f} ms" for p in PERCENTILES]
    lines.append(f"latency max: {lat[-1] / 1e6:.3f} ms")
    if result.cache_hit_rate is not None:
        lines.append(f"read cache hit rate: {result.cache_hit_rate:.1%} (the daemon's INFO, over the run)")
    return lines
