"""Semantic recall benchmark: memd's vector search end to end, against LangGraph's stores in the same run.

    python3 benchmarks/bench_vectors.py                    # 100,000 memories x 384 dims, 200 queries: minutes
    python3 benchmarks/bench_vectors.py --quick            # 2,000 memories, 20 queries: a smoke run
    python3 benchmarks/bench_vectors.py --baseline-n 20000 # the LangGraph baselines on the first 20,000 only

Data (numpy, seeded, identical for every side): N memories, each a ~300-byte JSON value
``{"text": ..., "kind": "k0".."k99", "topic": "t0".."t99", "n": i}`` under one of 10 top-level namespaces
``ns0..ns9``, each with sub-namespaces ``nsT.s0..nsT.s9`` (so the prefix ``nsT`` holds ~10 %, and
``FILTER {"kind": "kK"}`` keeps ~1 %), with one unit vector of ``--dims`` float32. Vectors are clustered
in a hierarchy, as embeddings of real text are: 100 topic centres (random unit vectors), 10 subtopics
around each (centre + noise of norm 0.7), items around a subtopic (+ noise of norm 0.5); items of one
subtopic have cosine ~0.8, of one topic ~0.55, unrelated ~0. The text is words drawn from the topic's
and the subtopic's own pseudo-words plus common ones, so a full-text query of subtopic words finds the
same region the vector points at. A query is a random item's vector + noise of norm 0.35 (cosine ~0.94
to its item); namespace, kind and subtopic words of that item give the prefix, FILTER and QUERY.

Sides (each on a fresh store; search classes interleaved in a seeded random order, after untimed warm-up):

- memd over RESP (redis-py, as an application would): a ``memd serve`` in a temp dir;
  ``MEM.INDEX CREATE "" DIMS d DISTANCE cosine``; ``MEM.PUT ns key json VECTOR $ blob`` in pipelines of
  ``--batch`` (memories/s acknowledged), then MEMD.FLUSH (timed), then up to ``--ann-wait`` s (60) until
  MEM.INDEX LIST shows the ANN structure that a maintenance job builds; ``MEM.SEARCH`` with VECTOR over all,
  under a 10 % prefix, with a 1 % FILTER, and hybrid (QUERY + VECTOR); then the daemon is stopped and
  started again and the time from the start to the first answered KNN search is measured.
- ``memd.integrations.langgraph.MemdStore(index={"dims", "embed", "fields": ["text"]})`` on another
  fresh daemon: ``store.batch`` of PutOps, ``store.search(prefix, query=text, filter=..., limit=10)``.
- LangGraph ``InMemoryStore(index=...)`` in this process (exact cosine in Python and numpy). Its search
  takes seconds at 100,000 memories, so it runs the first ``--inmemory-queries`` (20) queries of each row.
- LangGraph ``SqliteStore(index=...)`` with sqlite-vec (exact ``vec_distance_cosine`` scan), run under
  Debian's ``/usr/bin/python3`` (whose sqlite3 can load extensions; a pyenv build often cannot) in a
  virtualenv made once under ``--venv`` with langgraph-checkpoint-sqlite, sqlite-vec and numpy.

The three LangGraph-API sides embed with the same fake ``embed``: a dict from each text to its
precomputed vector, so every side searches exactly the same vectors. ``--baseline-n`` runs both
baselines on the first M memories only (the search cost of both grows with M); their columns then say so.

Recall@10 is measured against exact search computed here with numpy over the memories eligible for the
query (prefix, FILTER), on the side's own data set. Every reply is checked (k results when k memories are
eligible, inside the prefix, matching the FILTER, memd scores descending); problems are printed and make
the exit code 1, as does a side that could not run. Targets (stated for 100,000 x 384 on 2 cores) are
judged on the memd-over-RESP figures; the timed ones only at that size, the others (k results, recall)
at any size. Every process and temp dir is removed on exit, also on Ctrl-C or failure.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# (benchutil: this folder, which is on sys.path when a script here runs)
from benchutil import REPO, Cleanup, Interrupted, command_output, machine_line, memd_build, raise_interrupted, tail, \
    wait_ready

K = 10
TOPICS, SUBTOPICS = 100, 10  # 1,000 subtopics
KINDS = 100
TOP_NS, SUB_NS = 10, 10
SUB_NOISE, ITEM_NOISE, QUERY_NOISE = 0.7, 0.5, 0.35
CLASSES = ("all", "prefix", "filter", "hybrid")
LG_CLASSES = ("all", "prefix", "filter")  # LangGraph's API has no hybrid search
CLASS_LABEL = {"all": "KNN over all", "prefix": "KNN under a 10% prefix", "filter": "KNN + FILTER keeping 1%",
               "hybrid": "hybrid QUERY + VECTOR"}
WARMUP = 5
START_DEADLINE = 120.0
TARGET_N, TARGET_DIMS = 100_000, 384
TARGETS = {  # vectors.md: 100k memories x 384 dims, 2 cores
    "all_p99": 15.0, "prefix_p99": 5.0, "recall": 0.95, "filter_p99": 20.0, "hybrid_p99": 35.0,
    "ingest": 3_000.0, "ready_s": 5.0,
}
SQLITE_VEC_PYTHON = "/usr/bin/python3"
SQLITE_VEC_PACKAGES = ("langgraph-checkpoint-sqlite>=3.1,<4", "sqlite-vec>=0.1.6,<0.2", "numpy")


# ---- data ----------------------------------------------------------------------------------------

SYLLABLES = tuple(o + n for o in ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "st",
                                  "tr", "pl") for n in ("a", "e", "i", "o", "u", "ai", "ou"))


def pseudo_words(rng: random.Random, count: int, seen: set[str]) -> list[str]:
    out: list[str] = []
    while len(out) < count:
        w = "".join(rng.choice(SYLLABLES) for _ in range(rng.choice((2, 3, 3))))
        if w not in seen:
            seen.add(w)
            out.append(w)
    return out


def unit(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    return x


@dataclass
class Data:
    """Memories 0..n-1 and queries 0..q-1; arrays indexed by memory (or query) number."""

    vecs: np.ndarray  # (n, dims) float32, unit rows
    texts: list[str]
    kind: np.ndarray  # (n,) 0..KINDS-1
    topic: np.ndarray  # (n,)
    top: np.ndarray  # (n,) top-level namespace
    sub: np.ndarray  # (n,) sub-namespace
    qvecs: np.ndarray  # (q, dims)
    qsrc: np.ndarray  # (q,) the memory each query was made from
    qwords: list[str]  # (q,) two subtopic words of that memory, for QUERY
    _truth: dict[int, dict[tuple[str, int], set[int]]] = field(default_factory=dict, repr=False)

    @property
    def n(self) -> int:
        return len(self.texts)

    @property
    def dims(self) -> int:
        return int(self.vecs.shape[1])

    def ns(self, i: int) -> str:
        return f"ns{self.top[i]}.s{self.sub[i]}"

    @staticmethod
    def key(i: int) -> str:
        return f"m{i:07d}"

    def value(self, i: int) -> dict[str, Any]:
        return {"text": self.texts[i], "kind": f"k{self.kind[i]}", "topic": f"t{self.topic[i]}", "n": i}

    # what each query class asks, from query j's source memory
    def q_prefix(self, j: int, cls: str) -> str:
        return f"ns{self.top[self.qsrc[j]]}" if cls == "prefix" else ""

    def q_filter(self, j: int, cls: str) -> dict[str, str] | None:
        return {"kind": f"k{self.kind[self.qsrc[j]]}"} if cls == "filter" else None

    def q_text(self, j: int) -> str:
        """The LangGraph query string: unique per query, so the fake embed maps it to query j's vector."""
        return f"query {j}: {self.qwords[j]}"

    def eligible(self, j: int, cls: str, n: int) -> np.ndarray:
        """Boolean mask over memories 0..n-1 that query j of class cls may return."""
        mask = np.ones(n, dtype=bool)
        if cls == "prefix":
            mask &= self.top[:n] == self.top[self.qsrc[j]]
        elif cls == "filter":
            mask &= self.kind[:n] == self.kind[self.qsrc[j]]
        return mask

    def exact(self, j: int, cls: str, n: int) -> set[int]:
        """The true K nearest eligible memories among 0..n-1 (numpy brute force, computed once per n)."""
        truth = self._truth.get(n)
        if truth is None:
            truth = self._truth[n] = {}
            for lo in range(0, len(self.qvecs), 64):  # a block of queries per matrix product
                block = self.qvecs[lo:lo + 64] @ self.vecs[:n].T  # (queries, n): one contiguous row per query
                for jj in range(block.shape[0]):
                    for c in LG_CLASSES:
                        scores = block[jj].copy()
                        mask = self.eligible(lo + jj, c, n)
                        scores[~mask] = -np.inf
                        k = min(K, int(mask.sum()))
                        top = np.argpartition(-scores, k - 1)[:k] if k else ()
                        truth[c, lo + jj] = {int(i) for i in top}
        return truth[cls, j]


def make_data(n: int, dims: int, queries: int, seed: int) -> Data:
    rng = np.random.default_rng(seed)
    wrng = random.Random(seed)
    centres = unit(rng.standard_normal((TOPICS, dims), dtype=np.float32))
    subs = np.repeat(centres, SUBTOPICS, axis=0)
    subs = unit(subs + SUB_NOISE * rng.standard_normal(subs.shape, dtype=np.float32) / np.sqrt(dims))
    subtopic = rng.integers(0, TOPICS * SUBTOPICS, n)
    vecs = np.empty((n, dims), dtype=np.float32)
    for lo in range(0, n, 20_000):  # in slices: the noise of all rows at once would double the peak memory
        hi = min(lo + 20_000, n)
        vecs[lo:hi] = subs[subtopic[lo:hi]]
        vecs[lo:hi] += ITEM_NOISE * rng.standard_normal((hi - lo, dims), dtype=np.float32) / np.sqrt(dims)
    unit(vecs)
    kind = rng.integers(0, KINDS, n)
    top = rng.integers(0, TOP_NS, n)
    sub = rng.integers(0, SUB_NS, n)
    topic = subtopic // SUBTOPICS

    seen: set[str] = set()
    common = pseudo_words(wrng, 2_000, seen)
    topic_words = [pseudo_words(wrng, 8, seen) for _ in range(TOPICS)]
    sub_words = [pseudo_words(wrng, 4, seen) for _ in range(TOPICS * SUBTOPICS)]
    texts = []
    for i in range(n):
        s = int(subtopic[i])
        words = wrng.sample(topic_words[s // SUBTOPICS], 5) + wrng.sample(sub_words[s], 3)
        words += wrng.choices(common, k=24)
        wrng.shuffle(words)
        texts.append(f"note {i}: " + " ".join(words))  # the number keeps every text (the embed lookup) unique

    qsrc = rng.choice(n, size=queries, replace=queries > n)
    qvecs = unit(vecs[qsrc] + QUERY_NOISE * rng.standard_normal((queries, dims), dtype=np.float32) / np.sqrt(dims))
    qwords = [" ".join(wrng.sample(sub_words[int(subtopic[i])], 2)) for i in qsrc]
    return Data(vecs, texts, kind, topic, top, sub, qvecs, qsrc, qwords)


def key_index(key: str) -> int:
    return int(key[1:])


def query_order(queries: int, classes: Sequence[str], seed: int) -> list[tuple[str, int]]:
    """Every (class, query) once, shuffled: background work on the machine hits every class alike."""
    order = [(c, j) for j in range(queries) for c in classes]
    random.Random(seed * 7_919 + 3).shuffle(order)
    return order


# ---- results -------------------------------------------------------------------------------------

@dataclass
class Side:
    """What one side measured. ``hits[cls][j]`` = the memory numbers query j returned, best first."""

    name: str
    n: int = 0
    put_s: float = 0.0
    flush_s: float | None = None
    ready_s: float | None = None
    load_s: float | None = None  # the daemon's own figure for loading its vector indexes at start
    rss: int | None = None
    lat: dict[str, list[float]] = field(default_factory=dict)  # ms, per class, in query order
    hits: dict[str, list[list[int]]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    info: str = ""
    notes: list[str] = field(default_factory=list)

    def pct(self, cls: str, p: float) -> float | None:
        lat = self.lat.get(cls)
        return float(np.percentile(lat, p, method="inverted_cdf")) if lat else None  # nearest rank

    def ingest(self) -> float | None:
        return self.n / self.put_s if self.put_s else None

    def recall(self, data: Data, cls: str) -> float | None:
        got = self.hits.get(cls)
        if not got:
            return None
        total = 0.0
        for j, ids in enumerate(got):
            truth = data.exact(j, cls, self.n)
            total += len(truth & set(ids)) / len(truth) if truth else 1.0
        return total / len(got)

    def min_hits(self, cls: str) -> int | None:
        got = self.hits.get(cls)
        return min(len(ids) for ids in got) if got else None

    def short(self, data: Data, cls: str) -> int | None:
        """Searches that returned fewer than min(k, memories eligible)."""
        got = self.hits.get(cls)
        if not got:
            return None
        return sum(1 for j, ids in enumerate(got) if len(ids) < min(K, int(data.eligible(j, cls, self.n).sum())))


def check_hits(side: Side, data: Data, cls: str, j: int, items: list[tuple[str, int, float | None]]) -> None:
    """items: (namespace, memory number, score) as returned; problems go to side.problems."""
    mask = data.eligible(j, cls, side.n)
    want = min(K, int(mask.sum()))
    where = f"{cls} query {j}"
    if len(items) != want:
        side.problems.append(f"{where}: {len(items)} results, expected {want}")
    prev = None
    for ns, i, score in items:
        if not 0 <= i < side.n or ns != data.ns(i):
            side.problems.append(f"{where}: {ns}/{data.key(i) if i >= 0 else '?'} is not a memory that was put")
            return
        if cls != "hybrid" and not mask[i]:
            side.problems.append(f"{where}: {ns}/{data.key(i)} is outside the prefix or FILTER")
        if score is not None and prev is not None and score > prev + 1e-6:
            side.problems.append(f"{where}: scores not descending ({prev} then {score})")
        prev = score
    if len({i for _, i, _ in items}) != len(items):
        side.problems.append(f"{where}: a memory returned twice")


# ---- memd over RESP ------------------------------------------------------------------------------

def start_daemon(d: str, cleanup: Cleanup) -> tuple[subprocess.Popen[bytes], str, str]:
    sock, log, data_dir = os.path.join(d, "s.sock"), os.path.join(d, "memd.log"), os.path.join(d, "data")
    cmd = [sys.executable, "-m", "memd", "serve", "--socket", sock, "--data-dir", data_dir, "--fsync", "everysec"]
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                                start_new_session=True)  # own session: Ctrl-C reaches only this script
    cleanup.procs.append(proc)
    print(f"  daemon pid {proc.pid}, dir {d}", flush=True)
    return proc, sock, log


def memd_search_args(data: Data, cls: str, j: int, blob: bytes) -> list[Any]:
    a: list[Any] = ["MEM.SEARCH", data.q_prefix(j, cls)]
    if cls == "hybrid":
        a += ["QUERY", data.qwords[j]]
    a += ["VECTOR", blob]
    filt = data.q_filter(j, cls)
    if filt:
        a += ["FILTER", json.dumps(filt)]
    return a + ["LIMIT", K]


def parse_memd_items(reply: Any) -> list[tuple[str, int, float | None]]:
    out = []
    for raw in reply:
        item = json.loads(raw)
        out.append((item["namespace"], key_index(item["key"]), item.get("score")))
    return out


def index_list(r: Any) -> str:
    return "; ".join(x.decode() if isinstance(x, bytes) else str(x) for x in r.execute_command("MEM.INDEX", "LIST"))


def wait_for_ann(r: Any, wait: float) -> str:
    """Waits (up to ``wait`` s) for the index's ANN structure, built by a maintenance job after the load:
    the timed searches should see the steady state, not the exact scan that serves until then."""
    t0 = time.monotonic()
    while True:
        ann = all(json.loads(x)["ann"] for x in r.execute_command("MEM.INDEX", "LIST"))
        waited = time.monotonic() - t0
        if ann:
            return f"ANN structure in use {waited:.1f} s after the flush"
        if waited >= wait:
            return f"no ANN structure {waited:.1f} s after the flush (--ann-wait {wait:g}): searched as it was"
        time.sleep(0.5)


def run_memd(data: Data, args: argparse.Namespace, cleanup: Cleanup) -> Side:
    import redis  # noqa: PLC0415

    side = Side("memd", n=data.n)
    d = cleanup.mkdtemp("mbv-")
    proc, sock, log = start_daemon(d, cleanup)
    try:
        wait_ready(sock, proc, log, START_DEADLINE)
        r = redis.Redis(unix_socket_path=sock, socket_timeout=600)
        ok = r.execute_command("MEM.INDEX", "CREATE", "", "DIMS", data.dims, "DISTANCE", "cosine")
        if ok not in (True, b"OK", "OK"):
            side.problems.append(f"MEM.INDEX CREATE replied {ok!r}, expected OK")
        blobs = data.vecs.astype("<f4", copy=False)
        dumps = json.JSONEncoder(separators=(",", ":")).encode
        pipe = r.pipeline(transaction=False)
        bad = 0
        t0 = time.perf_counter()
        for i in range(data.n):
            pipe.execute_command("MEM.PUT", data.ns(i), data.key(i), dumps(data.value(i)), "VECTOR", "$",
                                 blobs[i].tobytes())
            if len(pipe) >= args.batch or i == data.n - 1:
                bad += sum(1 for v in pipe.execute() if v != 1)
        side.put_s = time.perf_counter() - t0
        if bad:
            side.problems.append(f"{bad} pipelined MEM.PUT of new keys did not reply version 1")
        t0 = time.perf_counter()
        r.execute_command("MEMD.FLUSH")
        side.flush_s = time.perf_counter() - t0
        side.notes.append(wait_for_ann(r, args.ann_wait))
        try:
            import psutil  # noqa: PLC0415
            side.rss = psutil.Process(proc.pid).memory_info().rss
        except Exception:  # noqa: BLE001
            pass
        qblobs = [v.astype("<f4").tobytes() for v in data.qvecs]
        for j in range(min(WARMUP, len(qblobs))):
            for cls in CLASSES:
                r.execute_command(*memd_search_args(data, cls, j, qblobs[j]))
        gc.collect()
        replies: dict[tuple[str, int], Any] = {}
        side.lat = {c: [0.0] * len(qblobs) for c in CLASSES}
        for cls, j in query_order(len(qblobs), CLASSES, args.seed):
            a = memd_search_args(data, cls, j, qblobs[j])
            t0 = time.perf_counter_ns()
            replies[cls, j] = r.execute_command(*a)
            side.lat[cls][j] = (time.perf_counter_ns() - t0) / 1e6
        for cls in CLASSES:
            side.hits[cls] = []
            for j in range(len(qblobs)):
                items = parse_memd_items(replies[cls, j])
                check_hits(side, data, cls, j, items)
                side.hits[cls].append([i for _, i, _ in items])
        side.info = f"MEM.INDEX LIST after the searches: {index_list(r)}"
        r.close()

        # restart: from the start of the process to the first answered KNN search
        t0 = time.perf_counter()
        cleanup.stop(proc)
        stop_s = time.perf_counter() - t0
        log_lines = os.path.getsize(log)
        want = side.hits["all"][0]
        t0 = time.perf_counter()
        proc, sock, log = start_daemon(d, cleanup)
        reply, last = None, ""
        deadline = t0 + START_DEADLINE
        while reply is None and time.perf_counter() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"memd exited with {proc.returncode} on restart:\n{tail(log)}")
            try:
                with redis.Redis(unix_socket_path=sock, socket_timeout=60, socket_connect_timeout=1) as rr:
                    reply = rr.execute_command(*memd_search_args(data, "all", 0, qblobs[0]))
            except redis.ConnectionError as e:
                last = str(e)
                time.sleep(0.01)
        if reply is None:
            raise RuntimeError(f"no KNN answer within {START_DEADLINE:.0f} s of the restart ({last}):\n{tail(log)}")
        side.ready_s = time.perf_counter() - t0
        again = [i for _, i, _ in parse_memd_items(reply)]
        if again != want:
            side.problems.append(f"after the restart the first KNN search returned {again}, before {want}")
        with redis.Redis(unix_socket_path=sock, socket_timeout=60) as rr:
            side.notes.append(f"MEM.INDEX LIST right after that first answer: {index_list(rr)}")
        side.notes.append(f"stop before the restart (SIGTERM, flush, exit) took {stop_s:.2f} s")
        with open(log, errors="replace") as f:
            f.seek(log_lines)
            loaded = [ln.strip() for ln in f if "vector" in ln.lower()]
        secs = [float(m[1]) for ln in loaded if (m := re.search(r"vector_index_loaded .*seconds=([\d.]+)", ln))]
        side.load_s = sum(secs) if secs else None
        side.notes += [f"daemon log after restart: {ln[:300]}" for ln in loaded[:3]] or \
            ["daemon log after restart: no line mentions vectors"]
        return side
    except redis.RedisError as e:
        raise RuntimeError(f"{e.__class__.__name__}: {e}\n--- memd log ---\n{tail(log)}") from None
    finally:
        cleanup.stop(proc)
        cleanup.rmdir(d)


# ---- the LangGraph BaseStore API (MemdStore and both baselines) -----------------------------------

def make_embed(data: Data, n: int) -> Callable[[list[str]], list[list[float]]]:
    """LangGraph's ``embed``: each text of memories 0..n-1 and each query string maps to its precomputed vector."""
    rows = {t: data.vecs[i] for i, t in enumerate(data.texts[:n])}
    rows.update({data.q_text(j): data.qvecs[j] for j in range(len(data.qvecs))})

    def embed(texts: list[str]) -> list[list[float]]:
        return [rows[t].tolist() for t in texts]
    return embed


def index_config(data: Data, n: int) -> dict[str, Any]:
    """LangGraph's ``index=``; SqliteStore reads the fields to embed from ``text_fields``, the others ``fields``."""
    return {"dims": data.dims, "embed": make_embed(data, n), "fields": ["text"], "text_fields": ["text"]}


def langgraph_side(side: Side, store: Any, data: Data, batch: int, seed: int, queries: int | None = None) -> None:
    """Put memories 0..side.n-1 in batches, then the timed searches (the first ``queries`` queries, default
    all); fills side (and checks the replies)."""
    from langgraph.store.base import PutOp  # noqa: PLC0415

    def nst(i: int) -> tuple[str, ...]:
        return tuple(data.ns(i).split("."))

    t0 = time.perf_counter()
    for lo in range(0, side.n, batch):
        store.batch([PutOp(nst(i), data.key(i), data.value(i)) for i in range(lo, min(lo + batch, side.n))])
    side.put_s = time.perf_counter() - t0

    nq = min(queries or len(data.qvecs), len(data.qvecs))

    def search(cls: str, j: int) -> list[Any]:
        prefix = data.q_prefix(j, cls)
        return store.search(tuple(prefix.split(".")) if prefix else (), query=data.q_text(j),
                            filter=data.q_filter(j, cls), limit=K)

    for j in range(min(WARMUP, nq)):
        for cls in LG_CLASSES:
            search(cls, j)
    gc.collect()
    results: dict[tuple[str, int], list[Any]] = {}
    side.lat = {c: [0.0] * nq for c in LG_CLASSES}
    for cls, j in query_order(nq, LG_CLASSES, seed):
        t0 = time.perf_counter_ns()
        results[cls, j] = search(cls, j)
        side.lat[cls][j] = (time.perf_counter_ns() - t0) / 1e6
    for cls in LG_CLASSES:
        side.hits[cls] = []
        for j in range(nq):
            items = [(".".join(it.namespace), key_index(it.key), it.score) for it in results[cls, j]]
            check_hits(side, data, cls, j, items)
            side.hits[cls].append([i for _, i, _ in items])


def run_memdstore(data: Data, args: argparse.Namespace, cleanup: Cleanup) -> Side:
    from memd.integrations.langgraph import MemdStore  # noqa: PLC0415

    side = Side("MemdStore", n=data.n)
    d = cleanup.mkdtemp("mbs-")
    proc, sock, log = start_daemon(d, cleanup)
    try:
        wait_ready(sock, proc, log, START_DEADLINE)
        store = MemdStore(sock, index=index_config(data, data.n))
        try:
            langgraph_side(side, store, data, args.batch, args.seed)
        finally:
            store.close()
        return side
    except Exception as e:
        raise RuntimeError(f"{e.__class__.__name__}: {e}\n--- memd log ---\n{tail(log)}") from e
    finally:
        cleanup.stop(proc)
        cleanup.rmdir(d)


def run_inmemory(data: Data, n: int, args: argparse.Namespace) -> Side:
    from langgraph.store.memory import InMemoryStore  # noqa: PLC0415

    side = Side("InMemoryStore", n=n)
    langgraph_side(side, InMemoryStore(index=index_config(data, n)), data, args.batch, args.seed,
                   args.inmemory_queries)
    nq = len(side.lat["all"])
    if nq < len(data.qvecs):
        side.notes.append(f"searched with the first {nq} of the {len(data.qvecs)} queries per row "
                          f"(--inmemory-queries): its search scans every candidate in Python")
    return side


# ---- LangGraph SqliteStore + sqlite-vec, in a subprocess under Debian's Python --------------------

class Unavailable(Exception):
    """A baseline cannot run on this machine; the message says why and what would fix it."""


def sqlite_vec_python(venv: str) -> str:
    """The virtualenv's python (made on first use) with langgraph-checkpoint-sqlite, sqlite-vec and numpy."""
    if not os.path.exists(SQLITE_VEC_PYTHON):
        raise Unavailable(f"{SQLITE_VEC_PYTHON} does not exist (Debian: apt-get install python3 python3-venv)")
    probe = ("import sqlite3; c = sqlite3.connect(':memory:'); c.enable_load_extension(True)")
    p = subprocess.run([SQLITE_VEC_PYTHON, "-c", probe], capture_output=True, text=True, timeout=60)
    if p.returncode:
        raise Unavailable(f"{SQLITE_VEC_PYTHON}'s sqlite3 cannot load extensions: {p.stderr.strip()[-300:]}")
    py = os.path.join(venv, "bin", "python")
    check = "import langgraph.store.sqlite, sqlite_vec, numpy"
    if os.path.exists(py) and subprocess.run([py, "-c", check], capture_output=True, timeout=120).returncode == 0:
        return py
    print(f"  making the sqlite-vec virtualenv {venv} ({SQLITE_VEC_PYTHON} -m venv; pip install "
          f"{' '.join(SQLITE_VEC_PACKAGES)})", flush=True)
    for cmd in ([SQLITE_VEC_PYTHON, "-m", "venv", "--clear", venv],
                [py, "-m", "pip", "install", "-q", "--disable-pip-version-check", *SQLITE_VEC_PACKAGES]):
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        if p.returncode:
            raise Unavailable(f"`{shlex.join(cmd)}` failed ({p.returncode}): {(p.stderr or p.stdout).strip()[-600:]}"
                              f" (Debian: apt-get install python3-venv; or pass --venv DIR)")
    p = subprocess.run([py, "-c", check], capture_output=True, text=True, timeout=120)
    if p.returncode:
        raise Unavailable(f"the virtualenv {venv} cannot import what it needs: {p.stderr.strip()[-300:]}")
    return py


def run_sqlite_vec(data: Data, n: int, args: argparse.Namespace, cleanup: Cleanup) -> Side:
    py = sqlite_vec_python(args.venv)
    d = cleanup.mkdtemp("mbq-")
    print(f"  worker dir {d}", flush=True)
    try:
        np.savez(os.path.join(d, "data.npz"), vecs=data.vecs[:n], kind=data.kind[:n], topic=data.topic[:n],
                 top=data.top[:n], sub=data.sub[:n], qvecs=data.qvecs, qsrc=data.qsrc)
        with open(os.path.join(d, "texts.json"), "w") as f:
            json.dump({"texts": data.texts[:n], "qwords": data.qwords}, f)
        cmd = [py, os.path.abspath(__file__), "--sqlite-vec-worker", d, "--batch", str(args.batch),
               "--seed", str(args.seed)]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=6 * 3600, cwd=d)
        if p.returncode:
            raise Unavailable(f"the SqliteStore worker failed ({p.returncode}):\n{p.stderr.strip()[-2000:]}")
        with open(os.path.join(d, "result.json")) as f:
            res = json.load(f)
        side = Side("SqliteStore+sqlite-vec", n=n, put_s=res["put_s"], lat=res["lat"], info=res["info"])
        side.hits, side.problems = res["hits"], res["problems"]  # checked in the worker, on the same data
        return side
    finally:
        cleanup.rmdir(d)


def sqlite_vec_worker(d: str, batch: int, seed: int) -> int:
    """Runs under the virtualenv's Python: SqliteStore with sqlite-vec on the data the parent wrote to d."""
    import sqlite3  # noqa: PLC0415
    from importlib.metadata import version  # noqa: PLC0415

    from langgraph.store.sqlite import SqliteStore  # noqa: PLC0415

    z = np.load(os.path.join(d, "data.npz"))
    with open(os.path.join(d, "texts.json")) as f:
        t = json.load(f)
    data = Data(z["vecs"], t["texts"], z["kind"], z["topic"], z["top"], z["sub"], z["qvecs"], z["qsrc"], t["qwords"])
    side = Side("SqliteStore+sqlite-vec", n=data.n)
    with SqliteStore.from_conn_string(os.path.join(d, "store.db"), index=index_config(data, data.n)) as store:
        store.setup()
        jm = store.conn.execute("PRAGMA journal_mode").fetchone()[0]
        sv = store.conn.execute("SELECT vec_version()").fetchone()[0]
        langgraph_side(side, store, data, batch, seed)
    info = (f"Python {sys.version.split()[0]} ({sys.executable}), SQLite {sqlite3.sqlite_version}, "
            f"langgraph-checkpoint-sqlite {version('langgraph-checkpoint-sqlite')}, sqlite-vec {sv}, "
            f"journal_mode={jm}")
    with open(os.path.join(d, "result.json"), "w") as f:
        json.dump({"put_s": side.put_s, "lat": side.lat, "hits": side.hits, "problems": side.problems,
                   "info": info}, f)
    return 0


# ---- report --------------------------------------------------------------------------------------

def fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}" if x < 10 else f"{x:.1f}" if x < 1000 else f"{x:,.0f}"


def speedup(memd: float | None, base: float | None, higher_better: bool) -> str:
    if not memd or not base:
        return "-"
    r = memd / base if higher_better else base / memd
    return f"{r:,.1f}x" if r < 100 else f"{r:,.0f}x"


def report(data: Data, sides: dict[str, Side | None], failed: dict[str, str], args: argparse.Namespace,
           bn: int) -> list[str]:
    """Prints the table and the targets; returns the targets that FAILed."""
    mem, store = sides.get("memd"), sides.get("MemdStore")
    inm, sq = sides.get("InMemoryStore"), sides.get("SqliteStore+sqlite-vec")
    bl = f" @{bn:,}" if bn != data.n else ""
    few = f" {len(inm.lat['all'])}q" if inm and len(inm.lat.get("all", ())) < len(data.qvecs) else ""
    cols = [("memd RESP", mem), ("MemdStore", store), ("InMemoryStore" + bl + few, inm), ("SqliteStore+vec" + bl, sq)]
    w = max(15, *(len(c) for c, _ in cols)) + 2
    print(f"\nresults ({data.n:,} memories x {data.dims} dims, {len(data.qvecs)} queries per row, k={K}; "
          f"latency = wall time of one call in this process, client library included)")
    print(f"speed-up = how many times better MemdStore is than the baseline through the same LangGraph API "
          f"(latency: baseline / MemdStore; throughput: MemdStore / baseline)"
          + (f"; the baselines ran on the first {bn:,} memories only (--baseline-n): their search cost grows with "
             f"the count, so those speed-ups understate memd's" if bn < data.n else ""))
    head = f"{'':<36}" + "".join(f"{c:>{w}}" for c, _ in cols) + f"{'vs InMemory':>13}{'vs sqlite-vec':>15}"
    print(head)
    print("-" * len(head))

    def row(label: str, get: Callable[[Side], float | None], spec: Callable[[float | None], str],
            higher_better: bool | None) -> None:
        vals = [get(s) if s is not None else None for _, s in cols]
        line = f"{label:<36}" + "".join(f"{spec(v):>{w}}" for v in vals)
        if higher_better is not None:
            line += f"{speedup(vals[1], vals[2], higher_better):>13}{speedup(vals[1], vals[3], higher_better):>15}"
        print(line)

    row(f"ingest, memories/s (batches of {args.batch})", lambda s: s.ingest(), lambda v: fmt(v, ",.0f"), True)
    row("MEMD.FLUSH after ingest, s", lambda s: s.flush_s, lambda v: fmt(v, ".2f"), None)
    for cls in CLASSES:
        for p in (50, 99):
            row(f"{CLASS_LABEL[cls]} p{p}, ms", lambda s, c=cls, q=p: s.pct(c, q), ms,
                False if cls != "hybrid" else None)
        if cls != "hybrid":
            row("  recall@10 vs exact", lambda s, c=cls: s.recall(data, c), lambda v: fmt(v, ".3f"), None)
        row("  fewest results in one search", lambda s, c=cls: s.min_hits(c), lambda v: fmt(v, "d"), None)
    row("restart: first KNN answer after, s", lambda s: s.ready_s, lambda v: fmt(v, ".2f"), None)
    row("  of which loading the vectors (log), s", lambda s: s.load_s, lambda v: fmt(v, ".2f"), None)
    row("daemon RSS after ingest, MB", lambda s: s.rss / 1e6 if s.rss else None, lambda v: fmt(v, ",.0f"), None)
    print("-" * len(head))
    for name, s in sides.items():
        if s is not None:
            for note in ([s.info] if s.info else []) + s.notes:
                print(f"{name}: {note}")
    for name, why in failed.items():
        print(f"{name}: NOT MEASURED: {why.splitlines()[0] if why else '?'}")

    at_scale = data.n >= TARGET_N and data.dims == TARGET_DIMS
    print(f"\ntargets (stated for {TARGET_N:,} memories x {TARGET_DIMS} dims on 2 cores; judged on memd RESP"
          + ("" if at_scale else f"; this run is {data.n:,} x {data.dims}, so only the size-independent ones "
             f"are judged") + ")")
    fails: list[str] = []

    def target(label: str, value: float | None, goal: float, shown: str, less: bool, timed: bool) -> None:
        if value is None:
            verdict = "FAIL (not measured)"
        elif timed and not at_scale:
            verdict = "not judged at this size"
        else:
            verdict = "PASS" if (value < goal if less else value >= goal) else "FAIL"
        if verdict.startswith("FAIL"):
            fails.append(label)
        print(f"  {label:<52} {shown if value is not None else '-':>12}   {verdict}")

    t = TARGETS
    target(f"KNN k=10 over all: p99 < {t['all_p99']:.0f} ms", mem and mem.pct("all", 99), t["all_p99"],
           ms(mem and mem.pct("all", 99)) + " ms", True, True)
    target(f"KNN under a 10% prefix: p99 < {t['prefix_p99']:.0f} ms", mem and mem.pct("prefix", 99),
           t["prefix_p99"], ms(mem and mem.pct("prefix", 99)) + " ms", True, True)
    recalls = [r for r in ((mem.recall(data, c) for c in LG_CLASSES) if mem else ()) if r is not None]
    low = min(recalls) if len(recalls) == len(LG_CLASSES) else None
    target(f"recall@10 >= {t['recall']} vs exact (lowest of the 3 KNN rows)", low, t["recall"], fmt(low, ".3f"),
           False, False)
    short = mem.short(data, "filter") if mem else None
    target(f"FILTER keeping 1%: still k={K} results (searches short)", short, 1, fmt(short, "d"), True, False)
    target(f"FILTER keeping 1%: p99 < {t['filter_p99']:.0f} ms", mem and mem.pct("filter", 99), t["filter_p99"],
           ms(mem and mem.pct("filter", 99)) + " ms", True, True)
    target(f"hybrid: p99 < {t['hybrid_p99']:.0f} ms", mem and mem.pct("hybrid", 99), t["hybrid_p99"],
           ms(mem and mem.pct("hybrid", 99)) + " ms", True, True)
    ing = mem.ingest() if mem else None
    target(f"pipelined ingest with vectors >= {t['ingest']:,.0f} memories/s acked", ing, t["ingest"],
           fmt(ing, ",.0f") + "/s", False, True)
    target(f"start-up with the vectors: first KNN answer < {t['ready_s']:.0f} s", mem and mem.ready_s,
           t["ready_s"], fmt(mem and mem.ready_s, ".2f") + " s", True, True)
    return fails


# ---- main ----------------------------------------------------------------------------------------

def default_venv() -> str:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "memd-bench", "sqlite-vec-venv")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=None, help="memories (default 100,000; 2,000 with --quick)")
    ap.add_argument("--dims", type=int, default=384, help="vector dimensions (default 384)")
    ap.add_argument("--queries", type=int, default=None, help="queries per search class (default 200; 20 with --quick)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 2,000 memories, 20 queries")
    ap.add_argument("--baseline-n", type=int, default=None,
                    help="run the LangGraph baselines on the first M memories only (default: all)")
    ap.add_argument("--inmemory-queries", type=int, default=None,
                    help="queries per row for InMemoryStore, whose search takes seconds at 100,000 (the first "
                         "of the same queries; default 20; all with --quick)")
    ap.add_argument("--batch", type=int, default=500, help="memories per pipeline / store.batch (default 500)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the data and the query order (default 1)")
    ap.add_argument("--venv", default=default_venv(),
                    help="virtualenv for the SqliteStore + sqlite-vec baseline, made on first use "
                         "(default ~/.cache/memd-bench/sqlite-vec-venv)")
    ap.add_argument("--ann-wait", type=float, default=None,
                    help="seconds to wait after the flush for memd's ANN structure before searching "
                         "(default 60; 0 with --quick)")
    ap.add_argument("--show-problems", type=int, default=8, help="reply problems printed per side (default 8)")
    ap.add_argument("--sqlite-vec-worker", metavar="DIR", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.sqlite_vec_worker:
        return sqlite_vec_worker(args.sqlite_vec_worker, args.batch, args.seed)
    n = args.n or (2_000 if args.quick else 100_000)
    nq = args.queries or (20 if args.quick else 200)
    bn = min(args.baseline_n or n, n)
    if args.inmemory_queries is None:
        args.inmemory_queries = nq if args.quick else min(20, nq)
    if args.ann_wait is None:
        args.ann_wait = 0.0 if args.quick else 60.0
    if n < K or nq <= 0 or bn < K or args.batch <= 0 or not 1 <= args.dims <= 4096:
        ap.error("--n and --baseline-n must be >= 10, --queries and --batch positive, 1 <= --dims <= 4096")

    started = time.monotonic()
    commit = command_output(["git", "rev-parse", "--short", "HEAD"])
    print(f"bench_vectors {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}; command: "
          f"{shlex.join(['python3', 'benchmarks/bench_vectors.py', *sys.argv[1:]])}; commit {commit}; "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} (other work on the machine skews every "
          f"figure)")
    print(machine_line())
    print(memd_build(), flush=True)

    cleanup = Cleanup()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, raise_interrupted)
    sides: dict[str, Side | None] = {}
    failed: dict[str, str] = {}
    try:
        t0 = time.monotonic()
        data = make_data(n, args.dims, nq, args.seed)
        gc.collect()
        gc.freeze()  # the data is long-lived: keep the collector from rescanning it during timed calls
        vb = sum(len(json.dumps(data.value(i), separators=(",", ":"))) for i in range(min(n, 2_000))) / min(n, 2_000)
        print(f"data: {n:,} memories x {args.dims} dims, values ~{vb:.0f} B JSON, in {TOP_NS} namespaces "
              f"ns0..ns{TOP_NS - 1} x {SUB_NS} sub-namespaces; {TOPICS} topics x {SUBTOPICS} subtopics; {KINDS} kinds; "
              f"{nq} queries (a memory's vector + noise {QUERY_NOISE}); seed {args.seed}; generated in "
              f"{time.monotonic() - t0:.1f} s", flush=True)
        steps: list[tuple[str, Callable[[], Side]]] = [
            ("memd", lambda: run_memd(data, args, cleanup)),
            ("MemdStore", lambda: run_memdstore(data, args, cleanup)),
            ("InMemoryStore", lambda: run_inmemory(data, bn, args)),
            ("SqliteStore+sqlite-vec", lambda: run_sqlite_vec(data, bn, args, cleanup)),
        ]
        for name, step in steps:
            t0 = time.monotonic()
            try:
                sides[name] = step()
                print(f"  {name} done in {time.monotonic() - t0:.0f} s", flush=True)
            except (KeyboardInterrupt, Interrupted):
                raise
            except Exception as e:  # noqa: BLE001 - one side failing must not hide the others' rows
                why = f"{e.__class__.__name__}: {e}"
                print(f"\n{name} FAILED: {why}\n", file=sys.stderr, flush=True)
                failed[name] = why
                sides[name] = None
            gc.collect()
    except (KeyboardInterrupt, Interrupted) as e:
        print(f"\ninterrupted ({e.__class__.__name__} {e}); cleaning up", file=sys.stderr)
        return 130
    finally:
        cleanup.all()

    fails = report(data, sides, failed, args, bn)
    problems = False
    for name, s in sides.items():
        if s is not None and s.problems:
            problems = True
            print(f"{name}: {len(s.problems)} reply problem(s):")
            for p in s.problems[:args.show_problems]:
                print(f"  - {p}")
        elif s is not None:
            print(f"{name}: every reply checked, no problems")
    print(f"total {time.monotonic() - started:.0f} s; load average at end "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    bad = [f"{k} not measured" for k in failed] + ([f"{len(fails)} target(s) failed"] if fails else [])
    if problems:
        bad.append("reply problems")
    print(f"RESULT: {'FAIL (' + '; '.join(bad) + ')' if bad else 'OK'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
