"""VectorIndex (memd/store/vectors.py) alone: build, maintain, KNN latency and recall; the data its thresholds come from.

    python3 benchmarks/bench_vector_index.py              # 100,000 x 384, 200 queries per row: ~1-2 minutes
    python3 benchmarks/bench_vector_index.py --quick      # 20,000 x 384, 50 queries per row: smoke test
    python3 benchmarks/bench_vector_index.py --items 50000 --dims 256 --queries 100 --seed 3

Data (seeded): hierarchical clusters of unit vectors, like sentence embeddings: 50 topics (random unit
directions) -> 2,000 subtopics (topic + noise) -> ``--items`` items (subtopic + noise), normalised. One
vector per memory. Namespaces are independent of the topics (as users are of what they write):
item i goes to ``u{j}.s{m}`` with j, m seeded-random (10 top-level namespaces x 100 each), so prefix
``u3`` holds ~10 % of the memories. The ``allowed`` filters keep a seeded-random 1 % and 5 %.

Queries: a random item plus noise (so each has near neighbours but no exact duplicate), k = 10, the
same queries for every row, query by query with every path in turn (so load from other processes
hits every path alike). Scopes: ``all`` (prefix ""), ``prefix 10%`` (prefix u3), ``filter 1%`` and
``filter 5%`` (``allowed`` sets of 1,000 and 5,000 memories: below and above EXACT_MAX, where the
exact scan hands over to the IVF). Paths: ``exact`` (exact_max above the data: every search scans),
``ivf nprobe=N`` (exact_max 0: the IVF with a selector, widened and then exact when it yields fewer
than k), ``chosen`` (the module's constants: what memd runs), and ``numpy`` (a bare ``matrix @ q`` +
argpartition over the eligible rows, already gathered: the baseline, no index, no filtering cost).
recall@10 is against the exact path; ``min k`` the fewest results any query got.

``p50``/``p99``: wall-clock latency; ``cpu``: the search thread's CPU time (time.thread_time), what a
search costs on a core of its own: on a shared box the wall-clock tail is mostly waiting for a core
(the load average is printed). The numpy baseline's product runs on OpenBLAS's threads, so its
``cpu`` column undercounts it; VectorIndex computes in the calling thread.

Also printed: inserting every vector (replace), maintain() (IVF build), and updates per second with
the IVF live (replace of an existing memory: remove + add in the IVF).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable

import faiss
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchutil import machine_line, memd_build  # noqa: E402

from memd.store import vectors  # noqa: E402
from memd.store.vectors import VectorIndex  # noqa: E402

K = 10
NOW = 1_000


def make_data(items: int, dims: int, seed: int) -> tuple[np.ndarray, list[str], list[str]]:
    """Unit vectors in 50 topics -> 2,000 subtopics, and each item's namespace and key."""
    rng = np.random.default_rng(seed)

    def unit(x: np.ndarray) -> np.ndarray:
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    topics = unit(rng.standard_normal((50, dims), dtype=np.float32))
    subtopics = unit(topics[np.arange(2000) % 50] + 0.6 * unit(rng.standard_normal((2000, dims), dtype=np.float32)))
    data = unit(subtopics[rng.integers(0, 2000, items)] + 0.5 * unit(rng.standard_normal((items, dims), dtype=np.float32)))
    top = rng.integers(0, 10, items)
    sub = rng.integers(0, 100, items)
    namespaces = [f"u{t}.s{s}" for t, s in zip(top.tolist(), sub.tolist(), strict=True)]
    keys = [f"m{i:07d}" for i in range(items)]
    return data, namespaces, keys


def pct(times: list[float], p: float) -> float:
    return float(np.percentile(np.asarray(times) * 1e3, p))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--dims", type=int, default=384)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--nprobes", default="4,8,16,32", help="IVF nprobe values to measure")
    ap.add_argument("--filters", default="1,5", help="`allowed` filters to measure, in percent of the memories")
    ap.add_argument("--quick", action="store_true", help="20,000 items, 50 queries")
    args = ap.parse_args()
    if args.quick:
        args.items, args.queries = 20_000, 50
    print(machine_line())
    print(f"build: {memd_build()}; faiss {faiss.__version__}, numpy {np.__version__}")
    print(f"load average at the start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"data: {args.items} x {args.dims} float32 (seed {args.seed}), cosine, k={K}, {args.queries} queries a row")
    print(f"constants: EXACT_MAX={vectors.EXACT_MAX} ANN_MIN={vectors.ANN_MIN} NPROBE={vectors.NPROBE} "
          f"NLIST_PER_SQRT={vectors.NLIST_PER_SQRT} TRAIN_PER_LIST={vectors.TRAIN_PER_LIST} "
          f"TRAIN_ITERATIONS={vectors.TRAIN_ITERATIONS}")

    data, namespaces, keys = make_data(args.items, args.dims, args.seed)
    blobs = [row.astype("<f4").tobytes() for row in data]
    index = VectorIndex(args.dims, "cosine")
    t0 = time.perf_counter()
    for ns, key, blob in zip(namespaces, keys, blobs, strict=True):
        index.replace(ns, key, None, [("$", blob)])
    insert_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    rebuilt = index.maintain()
    maintain_s = time.perf_counter() - t0
    print(f"insert {args.items} vectors: {insert_s:.2f} s ({args.items / insert_s:,.0f}/s); "
          f"maintain() (IVF build): {maintain_s:.2f} s (rebuilt={rebuilt}, ann={index.ann}); "
          f"nbytes {index.nbytes / 2**20:.0f} MiB")

    rng = np.random.default_rng(args.seed + 1)
    picks = rng.integers(0, args.items, args.queries)
    noise = rng.standard_normal((args.queries, args.dims), dtype=np.float32)
    queries = data[picks] + 0.3 * noise / np.linalg.norm(noise, axis=1, keepdims=True)
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    prefix_rows = np.flatnonzero(np.array([ns.startswith("u3.") for ns in namespaces]))
    scopes: dict[str, tuple[dict[str, object], np.ndarray]] = {
        "all": ({}, np.arange(args.items)),
        "prefix 10%": ({"prefix": "u3"}, prefix_rows),
    }
    for percent in map(float, args.filters.split(",")):
        allowed_rows = np.sort(rng.choice(args.items, int(args.items * percent / 100), replace=False))
        allowed = {(namespaces[i], keys[i]) for i in allowed_rows.tolist()}
        scopes[f"filter {percent:g}%"] = ({"allowed": allowed}, allowed_rows)
    paths: list[tuple[str, int, int]] = [("exact", 10**12, vectors.NPROBE)]
    paths += [(f"ivf nprobe={p}", 0, p) for p in map(int, args.nprobes.split(","))]
    paths.append(("chosen", vectors.EXACT_MAX, vectors.NPROBE))

    print()
    print(f"{'scope':<11} {'path':<14} {'p50 ms':>8} {'p99 ms':>8} {'cpu p50':>8} {'cpu p99':>8} {'recall@10':>9} "
          f"{'min k':>6}")
    for scope, (kw, rows) in scopes.items():
        sub = np.ascontiguousarray(data[rows]) if len(rows) < args.items else data

        def baseline(q: np.ndarray, sub: np.ndarray = sub) -> np.ndarray:
            scores = sub @ q
            return np.argpartition(scores, len(scores) - K)[-K:]

        calls: list[tuple[str, Callable[[np.ndarray], object]]] = []
        for name, exact_max, nprobe in paths:
            def run(q: np.ndarray, exact_max: int = exact_max, nprobe: int = nprobe, kw: dict = kw) -> object:
                index.exact_max, index.nprobe = exact_max, nprobe
                return index.search(q, K, now_ms=NOW, **kw)  # type: ignore[arg-type]
            calls.append((name, run))
        calls.append(("numpy", baseline))
        wall: dict[str, list[float]] = {name: [] for name, _ in calls}
        cpu: dict[str, list[float]] = {name: [] for name, _ in calls}
        got: dict[str, list[set[tuple[str, str]]]] = {name: [] for name, _ in calls}
        for q in queries[:5]:  # warm-up
            for _, fn in calls:
                fn(q)
        # query by query, every path in turn (rotated), so that load from elsewhere hits them alike
        for i, q in enumerate(queries):
            for j in range(len(calls)):
                name, fn = calls[(i + j) % len(calls)]
                c0, t0 = time.thread_time(), time.perf_counter()
                result = fn(q)
                wall[name].append(time.perf_counter() - t0)
                cpu[name].append(time.thread_time() - c0)
                if name != "numpy":
                    got[name].append({(ns, key) for ns, key, _ in result})  # type: ignore[attr-defined]
        for name, _ in calls:
            if name == "numpy":
                recall, min_k = "-", str(K)
            else:
                recall = f"{np.mean([len(g & e) / max(1, len(e)) for g, e in zip(got[name], got['exact'], strict=True)]):.3f}"
                min_k = str(min(len(g) for g in got[name]))
            print(f"{scope:<11} {name:<14} {pct(wall[name], 50):8.2f} {pct(wall[name], 99):8.2f} "
                  f"{pct(cpu[name], 50):8.2f} {pct(cpu[name], 99):8.2f} {recall:>9} {min_k:>6}")
    index.exact_max, index.nprobe = vectors.EXACT_MAX, vectors.NPROBE
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    n_upd = min(5_000, args.items)
    t0 = time.perf_counter()
    for i in range(n_upd):
        index.replace(namespaces[i], keys[i], None, [("$", blobs[(i + 1) % args.items])])
    upd_s = time.perf_counter() - t0
    print(f"\nupdates with the IVF live: {n_upd / upd_s:,.0f} replaces/s ({n_upd} replaces of existing memories)")


if __name__ == "__main__":
    main()
