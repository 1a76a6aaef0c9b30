"""Durability of vectors and vector indexes against real process death and a simulated power loss.

A deterministic plan of operations (index create and drop, puts with one to
three vectors or none, deletes, TTL refreshes) is generated together with a
model of what each acknowledged operation promises. The plan runs against a
real ``memd serve`` with ``fsync = "always"`` (killed with SIGKILL, stopped
with SIGTERM, killed in the middle of a stream with frequent flushes), or in
a child process on an Engine whose file layer records what reached stable
storage (then cut back to it: a power loss). After the restart every
acknowledged vector must be found by KNN with the right score, KNN over each
index must return exactly the model's memories in the model's order, nothing
deleted or dropped may come back, and MEM.INDEX LIST (and the daemon's
``vector_index_loaded`` log line) must count exactly the model's vectors.

The child of the power-loss test is this module: ``python -m
tests.crash.test_vector_crash child DATA_DIR SEED SIDELOG``.
"""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import redis

from tests.crash.recording_fileops import simulate_power_loss
from tests.crash.test_memory_crash import connect, daemon, last_replayed, start_daemon  # noqa: F401 - daemon: fixture
from tests.integration.daemon import ROOT, Daemon
from tests.integration.test_vector_commands import blob, f32, score

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

FREQUENT_FLUSH = """\
[flush]
max_records = 40
max_age_seconds = 0.05
"""
TOL = 1e-5
Key = tuple[str, str]
Op = tuple[Any, ...]
NAMESPACES = ["vc.a", "vc.b", "vc.a.x", "vl", "vl.q", "vd.z", "plain"]
DISTANCES = ("cosine", "ip", "l2")


# ---- the plan and its model ----------------------------------------------------------------------

def under(ns: str, prefix: str) -> bool:
    return not prefix or ns == prefix or ns.startswith(prefix + ".")


@dataclass
class Slot:
    version: int = 0
    value: dict[str, Any] | None = None  # None: never put, or deleted
    ttl: bool = False
    vectors: list[np.ndarray] = field(default_factory=list)  # the live version's, as float64


class Model:
    """What acknowledged operations promise: indexes, and each memory's version, value and vectors."""

    def __init__(self) -> None:
        self.indexes: dict[str, tuple[int, str]] = {}
        self.slots: dict[Key, Slot] = {}

    def copy(self) -> Model:
        m = Model()
        m.indexes = dict(self.indexes)
        m.slots = {k: Slot(s.version, s.value, s.ttl, list(s.vectors)) for k, s in self.slots.items()}
        return m

    def index_of(self, ns: str) -> str | None:
        return next((p for p in self.indexes if under(ns, p)), None)

    def apply(self, op: Op) -> Any:
        """Apply one operation; return the reply it must get."""
        kind = op[0]
        if kind == "create":
            self.indexes[op[1]] = (op[2], op[3])
            return None
        if kind == "drop":
            del self.indexes[op[1]]
            for (ns, _), slot in self.slots.items():
                if under(ns, op[1]):
                    slot.vectors = []
            return None
        slot = self.slots.setdefault((op[1], op[2]), Slot())
        if kind == "put":
            _, _, _, value, vectors, ttl = op
            slot.version += 1
            slot.value, slot.ttl = value, ttl is not None
            slot.vectors = [f32(v) for _, v in vectors]
            return slot.version
        if kind == "del":
            was = slot.value is not None
            slot.value, slot.vectors = None, []
            return int(was)
        assert kind == "refresh" and slot.value is not None and slot.ttl
        return None

    def counts(self) -> dict[str, tuple[int, str, int, int]]:
        """prefix -> (dims, distance, vectors, memories) of every index."""
        out = {}
        for p, (dims, distance) in self.indexes.items():
            held = [s for (ns, _), s in self.slots.items() if under(ns, p) and s.value is not None and s.vectors]
            out[p] = (dims, distance, sum(len(s.vectors) for s in held), len(held))
        return out

    def with_vectors(self, prefix: str) -> dict[Key, list[np.ndarray]]:
        return {k: s.vectors for k, s in self.slots.items() if under(k[0], prefix) and s.value is not None
                and s.vectors}


def make_plan(seed: str, n: int, start: Model | None = None) -> list[Op]:
    """A valid sequence of operations (valid in the state each one meets), from ``start``
    or from nothing (then three indexes first)."""
    rng = random.Random(seed)
    m = start.copy() if start is not None else Model()
    ops: list[Op] = []

    def emit(op: Op) -> None:
        m.apply(op)
        ops.append(op)

    if start is None:
        emit(("create", "vc", 8, "cosine"))
        emit(("create", "vl", 4, "l2"))
        emit(("create", "vd", 3, "ip"))
    for i in range(n):
        roll = rng.random()
        ns, key = rng.choice(NAMESPACES), f"k{rng.randrange(6)}"
        slot = m.slots.get((ns, key))
        if roll < 0.04:
            if "vd" in m.indexes:
                emit(("drop", "vd"))
            else:  # re-declared, maybe with another DIMS or DISTANCE (it holds nothing after the drop)
                emit(("create", "vd", rng.choice([2, 3]), rng.choice(DISTANCES)))
        elif roll < 0.16:
            emit(("del", ns, key))
        elif roll < 0.24 and slot is not None and slot.value is not None and slot.ttl:
            emit(("refresh", ns, key))
        else:
            p = m.index_of(ns)
            vectors: list[tuple[str, list[float]]] = []
            if p is not None and rng.random() < 0.85:
                dims = m.indexes[p][0]
                vectors = [(f"p{j}", [rng.choice((-1, 1)) * rng.uniform(0.05, 1.0) for _ in range(dims)])
                           for j in range(rng.randint(1, 3))]
            emit(("put", ns, key, {"n": i, "word": f"w{i}"}, vectors, 300 if rng.random() < 0.3 else None))
    return ops


# ---- the same checks through the wire or through an Engine ---------------------------------------

class Backend:
    """What the checks need: KNN, MEM.GET, MEM.INDEX LIST."""

    def knn(self, prefix: str, q: list[float], limit: int) -> list[tuple[str, str, float]]:
        raise NotImplementedError

    def get(self, ns: str, key: str) -> tuple[int, dict[str, Any]] | None:
        raise NotImplementedError

    def listing(self) -> dict[str, tuple[int, str, int, int]]:
        raise NotImplementedError


class Wire(Backend):
    def __init__(self, r: redis.Redis) -> None:
        self.r = r

    def run(self, op: Op) -> Any:
        kind = op[0]
        if kind == "create":
            return self.r.execute_command("MEM.INDEX", "CREATE", op[1], "DIMS", str(op[2]), "DISTANCE", op[3])
        if kind == "drop":
            return self.r.execute_command("MEM.INDEX", "DROP", op[1])
        if kind == "put":
            _, ns, key, value, vectors, ttl = op
            args: list[Any] = ["MEM.PUT", ns, key, json.dumps(value)] + (["TTL", str(ttl)] if ttl else [])
            for path, v in vectors:
                args += ["VECTOR", path, blob(v)]
            return self.r.execute_command(*args)
        if kind == "del":
            return self.r.execute_command("MEM.DEL", op[1], op[2])
        return self.r.execute_command("MEM.GET", op[1], op[2], "REFRESHTTL")

    def knn(self, prefix: str, q: list[float], limit: int) -> list[tuple[str, str, float]]:
        out = self.r.execute_command("MEM.SEARCH", prefix, "VECTOR", blob(q), "LIMIT", str(limit))
        return [(i["namespace"], i["key"], i["score"]) for i in map(json.loads, out)]

    def get(self, ns: str, key: str) -> tuple[int, dict[str, Any]] | None:
        raw = self.r.execute_command("MEM.GET", ns, key)
        return None if raw is None else (json.loads(raw)["version"], json.loads(raw)["value"])

    def listing(self) -> dict[str, tuple[int, str, int, int]]:
        items = [json.loads(x) for x in self.r.execute_command("MEM.INDEX", "LIST")]
        return {i["prefix"]: (i["dims"], i["distance"], i["vectors"], i["memories"]) for i in items}


def verify(model: Model, db: Backend, seed: str) -> None:
    assert db.listing() == model.counts(), "MEM.INDEX LIST disagrees with the acknowledged writes"
    for k, slot in model.slots.items():
        got = db.get(*k)
        want = None if slot.value is None else (slot.version, slot.value)
        assert got == want, f"{k}: acknowledged state lost or changed"
    rng = random.Random(seed)
    for p, (dims, distance) in model.indexes.items():
        held = model.with_vectors(p)
        # random queries: exactly the model's memories, in the model's order, with its scores
        for _ in range(3):
            q = [rng.uniform(-1, 1) for _ in range(dims)]
            want = sorted(((k, score(distance, f32(q), vs)) for k, vs in held.items()),
                          key=lambda t: (-t[1], t[0]))
            got = db.knn(p, q, 1000)
            assert [(ns, key) for ns, key, _ in got] == [k for k, _ in want], f"index {p!r}: KNN results"
            for (_, _, s), (k, w) in zip(got, want):
                assert abs(s - w) <= TOL, (p, k, s, w)
        # every acknowledged vector: its memory found with the score it earns against that vector
        for k, vs in held.items():
            for v in vs:
                q = [float(x) for x in v]
                found = {(ns, key): s for ns, key, s in db.knn(p, q, 1000)}
                assert k in found, f"{k}: an acknowledged vector is not found"
                assert abs(found[k] - score(distance, f32(q), vs)) <= TOL, k


def verify_either(models: list[Model], db: Backend, seed: str) -> None:
    """The state must be one of ``models`` (the last operation sent may not have been acknowledged)."""
    failures = []
    for m in models:
        try:
            verify(m, db, seed)
            return
        except AssertionError as exc:
            failures.append(exc)
    raise failures[0]


def loaded_counts(log: str) -> dict[str, tuple[int, str, int, int]]:
    """The last start's ``vector_index_loaded`` lines: prefix -> (dims, distance, vectors, memories).

    They come as the store opens, before recovery: between the last two ``recovery_done`` lines.
    """
    lines = log.splitlines()
    ends = [i for i, line in enumerate(lines) if "recovery_done" in line]
    assert ends, log
    block = lines[ends[-2] + 1 if len(ends) > 1 else 0:ends[-1]]
    found = [re.search(r"vector_index_loaded prefix='([^']*)' dims=(\d+) distance=(\w+) vectors=(\d+) "
                       r"memories=(\d+) seconds=", line) for line in block]
    return {m[1]: (int(m[2]), m[3], int(m[4]), int(m[5])) for m in found if m}


# ---- daemon runs ---------------------------------------------------------------------------------

def run_ops(r: redis.Redis, model: Model, ops: list[Op]) -> None:
    wire = Wire(r)
    for op in ops:
        want = model.apply(op)
        got = wire.run(op)
        if op[0] in ("put", "del"):
            assert got == want, op
        else:
            assert got is not None


def restart(d: Daemon, sig: int) -> None:
    assert d.proc is not None
    if sig == signal.SIGKILL:
        d.proc.send_signal(sig)
        d.proc.wait(10)
    else:
        assert d.stop(sig) == 0, d.log()
    d.start()


def test_sigkill_and_sigterm_keep_acknowledged_vectors(daemon: Daemon) -> None:
    ops = make_plan("sigkill", 160)
    model = Model()
    r = connect(daemon)
    run_ops(r, model, ops[:80])
    assert r.execute_command("MEMD.FLUSH") in (b"OK", True)
    at_flush = model.counts()
    run_ops(r, model, ops[80:])  # on top, in the WAL only: new versions, deletes, index changes
    r.close()
    restart(daemon, signal.SIGKILL)
    assert last_replayed(daemon) > 0, "the test meant to recover from the WAL"
    assert loaded_counts(daemon.log()) == at_flush, "the start loads what SQLite held at the last flush"
    r = connect(daemon)
    verify(model, Wire(r), "sigkill-1")
    r.close()
    # killed again right after recovery: what it (and the reads' flushes) wrote is what loads now
    restart(daemon, signal.SIGKILL)
    assert loaded_counts(daemon.log()) == model.counts()
    r = connect(daemon)
    verify(model, Wire(r), "sigkill-2")
    run_ops(r, model, make_plan("sigterm", 80, model))  # buffered again
    r.close()
    # a clean stop flushes everything: nothing to replay, and the start loads every vector
    restart(daemon, signal.SIGTERM)
    assert last_replayed(daemon) == 0, "a clean shutdown flushes everything"
    assert loaded_counts(daemon.log()) == model.counts()
    assert sum(c[2] for c in model.counts().values()) > 20, "the plan left too few vectors to check"
    r = connect(daemon)
    verify(model, Wire(r), "sigterm")
    r.close()


def test_sigkill_mid_stream_with_frequent_flushes() -> None:
    d = start_daemon(FREQUENT_FLUSH)  # flushes run while the writes go on: part SQLite, part WAL
    ops = make_plan("stream", 3000)
    acked = [0]  # operations acknowledged, in plan order
    errors: list[BaseException] = []

    def writer() -> None:
        r = connect(d)
        wire, shadow = Wire(r), Model()
        try:
            for op in ops:
                want = shadow.apply(op)
                got = wire.run(op)
                assert op[0] not in ("put", "del") or got == want, op
                acked[0] += 1
        except (redis.ConnectionError, redis.TimeoutError):
            pass  # the kill
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
        finally:
            r.close()

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 4
        while acked[0] < 250 and time.monotonic() < deadline and t.is_alive():
            time.sleep(0.01)
        assert acked[0] >= 50, f"only {acked[0]} operations acknowledged"
        assert d.proc is not None
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait(10)
        t.join(10)
        assert not t.is_alive() and not errors, errors
        assert acked[0] < len(ops), "the plan ran out before the kill"
        n = acked[0]
        model = Model()
        for op in ops[:n]:
            model.apply(op)
        maybe = model.copy()
        maybe.apply(ops[n])  # sent, never answered: it may have landed
        d.start()
        assert loaded_counts(d.log()), "a daemon that flushed declares its indexes from SQLite at start"
        r = connect(d)
        verify_either([model, maybe], Wire(r), "stream")
        r.close()
    finally:
        d.cleanup()


# ---- simulated power loss (an Engine in a child process) -----------------------------------------

def child_main(data_dir: str, seed: str, sidelog: str) -> None:
    """Run the plan on an Engine that records its fsyncs; print ``ack i`` once operation i is durable."""
    import anyio

    from memd.engine.engine import Engine
    from tests.crash.recording_fileops import RecordingFileOps

    async def main() -> None:
        rng = random.Random(seed)
        async with Engine(data_dir, fsync="always", flush_max_records=rng.choice([30, 5000]),
                          wal_segment_bytes=64 * 1024, fileops=RecordingFileOps(sidelog)) as engine:
            mem = engine.memories
            sys.stdout.write("ready\n")
            sys.stdout.flush()
            for i, op in enumerate(make_plan(seed, 5000)):
                kind = op[0]
                if kind == "create":
                    mem.create_index(op[1], op[2], op[3], '["$"]')
                elif kind == "drop":
                    mem.drop_index(op[1])
                elif kind == "put":
                    _, ns, key, value, vectors, ttl = op
                    mem.put(ns, key, json.dumps(value), None if ttl is None else ttl * 1000,
                            tuple((p, blob(v)) for p, v in vectors))
                elif kind == "del":
                    mem.delete(op[1], op[2])
                else:
                    mem.get(op[1], op[2], refresh_ttl=True)
                await engine.admit()
                await engine.wait_durable()
                sys.stdout.write(f"ack {i}\n")
                sys.stdout.flush()
                if i % 50 == 0:
                    await anyio.sleep(0)  # let the flush task run
    anyio.run(main)


class EngineDb(Backend):
    """The checks through an Engine opened on the data directory (recovery runs at open)."""

    def __init__(self, portal: Any, engine: Any) -> None:
        self.portal, self.engine, self.mem = portal, engine, engine.memories

    def knn(self, prefix: str, q: list[float], limit: int) -> list[tuple[str, str, float]]:
        async def run() -> list[tuple[str, str, float]]:
            await self.engine.flush()
            items = await self.mem.search(prefix, None, [], limit, 0, vector=self.mem.query_vector(prefix, blob(q)))
            return [(i.ns, i.key, i.score) for i in items]
        return self.portal.call(run)  # type: ignore[no-any-return]

    def get(self, ns: str, key: str) -> tuple[int, dict[str, Any]] | None:
        item = self.portal.call(lambda: self.mem.get(ns, key))
        return None if item is None else (item.version, json.loads(item.value))

    def listing(self) -> dict[str, tuple[int, str, int, int]]:
        async def run() -> dict[str, tuple[int, str, int, int]]:
            await self.engine.flush()
            return {p: (dims, distance, *self.mem.index_stats(p)[:2])
                    for p, (dims, distance, _) in self.mem.indexes().items()}
        return self.portal.call(run)  # type: ignore[no-any-return]


def with_engine(data_dir: str, check: Callable[[EngineDb], None]) -> None:
    from anyio.from_thread import start_blocking_portal

    from memd.engine.engine import Engine
    with start_blocking_portal("asyncio") as portal:
        engine = portal.call(lambda: Engine(data_dir))
        with portal.wrap_async_context_manager(engine):
            check(EngineDb(portal, engine))


def test_power_loss_keeps_acknowledged_vectors(tmp_path: Any) -> None:
    seed = "power"
    data_dir, sidelog = str(tmp_path / "data"), str(tmp_path / "sync.log")
    proc = subprocess.Popen([sys.executable, "-m", "tests.crash.test_vector_crash", "child", data_dir, seed, sidelog],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    acks: list[int] = []
    ready = threading.Event()

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if not line.endswith("\n"):
                break  # a line cut by the kill is not an ack
            if line == "ready\n":
                ready.set()
            elif line.startswith("ack "):
                acks.append(int(line.split()[1]))

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        assert ready.wait(30), "the child did not start"
        deadline = time.monotonic() + 20
        target = random.Random(seed).randint(120, 300)
        while len(acks) < target and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.005)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        t.join(10)
        assert proc.stdout is not None and proc.stderr is not None
        err = proc.stderr.read()
        proc.stdout.close()
        proc.stderr.close()
    assert len(acks) >= 100, f"only {len(acks)} acknowledged: {err[-2000:]}"
    assert acks == list(range(len(acks)))
    with open(sidelog) as f:
        assert any(line.startswith("synced ") for line in f), "the recording file layer saw no fsync"
    simulate_power_loss(sidelog)
    ops = make_plan(seed, 5000)
    model = Model()
    for op in ops[:len(acks)]:
        model.apply(op)
    maybe = model.copy()
    maybe.apply(ops[len(acks)])
    assert sum(c[2] for c in model.counts().values()) > 10
    with_engine(data_dir, lambda db: verify_either([model, maybe], db, seed))


if __name__ == "__main__" and sys.argv[1:2] == ["child"]:
    child_main(sys.argv[2], sys.argv[3], sys.argv[4])
