"""memd.store.vectors: vector checks, and VectorIndex against a brute-force float64 reference.

The index runs two search paths (an exact scan, and faiss IVF with a selector above thresholds);
the model tests drive both with the thresholds lowered through the constructor, so the IVF path
runs on a few thousand vectors.
"""

from __future__ import annotations

import math
import random
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from memd.store import vectors
from memd.store.vectors import DISTANCES, VectorIndex, check_vector

DIMS = 16
NAMESPACES = ["a", "a.b", "a.b.c", "a.c", "ab", "a-b", "a/b", "b", "b.a", "c.a.b"]
PREFIXES = ["", "a", "a.b", "b", "c", "zz", "a.b.c"]
EXPIRIES = [0, 500, 1000, 1500, 1999, 2500]


def blob(vec: np.ndarray) -> bytes:
    return np.asarray(vec, dtype="<f4").tobytes()


# -- check_vector ------------------------------------------------------------------------------


def test_check_vector_accepts_little_endian_float32() -> None:
    vec = check_vector(struct_pack([1.5, -2.0, 0.25]), 3, "cosine")
    assert vec.dtype == np.float32 and vec.tolist() == [1.5, -2.0, 0.25]


def struct_pack(values: list[float]) -> bytes:
    return np.asarray(values, dtype="<f4").tobytes()


@pytest.mark.parametrize("distance", DISTANCES)
def test_check_vector_wrong_length_names_expected_bytes(distance: str) -> None:
    with pytest.raises(ValueError, match=r"12 bytes.*16 bytes|16 bytes") as err:
        check_vector(b"\0" * 12, 4, distance)
    assert "16 bytes" in str(err.value) and "12 bytes" in str(err.value)


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_check_vector_rejects_nan_and_infinity(distance: str, bad: float) -> None:
    with pytest.raises(ValueError, match="NaN or infinity"):
        check_vector(struct_pack([1.0, bad, 2.0]), 3, distance)


def test_check_vector_zero_vector_only_refused_under_cosine() -> None:
    zero = struct_pack([0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="zero vector"):
        check_vector(zero, 3, "cosine")
    for distance in ("ip", "l2"):
        assert check_vector(zero, 3, distance).tolist() == [0.0, 0.0, 0.0]


def test_check_vector_unknown_distance() -> None:
    with pytest.raises(ValueError, match="cosine, ip, l2"):
        check_vector(struct_pack([1.0]), 1, "manhattan")


# -- the reference -----------------------------------------------------------------------------


class Reference:
    """The same operations on plain dicts, searched by brute force in float64."""

    def __init__(self, distance: str) -> None:
        self.distance = distance
        self.mems: dict[tuple[str, str], tuple[int | None, np.ndarray]] = {}

    def replace(self, ns: str, key: str, expires: int | None, vecs: list[np.ndarray]) -> None:
        if vecs:
            self.mems[(ns, key)] = (expires, np.asarray(vecs, dtype=np.float32).astype(np.float64))
        else:
            self.mems.pop((ns, key), None)

    def set_expiry(self, ns: str, key: str, expires: int | None) -> None:
        if (ns, key) in self.mems:
            self.mems[(ns, key)] = (expires, self.mems[(ns, key)][1])

    def scores(self, query: np.ndarray, *, prefix: str, now_ms: int, allowed: set[tuple[str, str]] | None,
               readable: set[str] | None) -> dict[tuple[str, str], float]:
        q = np.asarray(query, dtype=np.float32).astype(np.float64)
        if self.distance == "cosine":
            q = q / np.linalg.norm(q)
        eligible = []
        for (ns, key), (expires, rows) in self.mems.items():
            if prefix and not (ns == prefix or ns.startswith(prefix + ".")):
                continue
            if expires is not None and expires <= now_ms:
                continue
            if allowed is not None and (ns, key) not in allowed:
                continue
            if readable is not None and ns not in readable:
                continue
            eligible.append(((ns, key), rows))
        if not eligible:
            return {}
        rows = np.concatenate([r for _, r in eligible])
        starts = np.cumsum([0] + [len(r) for _, r in eligible[:-1]])
        if self.distance == "cosine":
            s = (rows / np.linalg.norm(rows, axis=1, keepdims=True)) @ q
        elif self.distance == "ip":
            s = rows @ q
        else:
            s = -np.sqrt(((rows - q) ** 2).sum(axis=1))
        best = np.maximum.reduceat(s, starts)
        return {pair: float(b) for (pair, _), b in zip(eligible, best, strict=True)}


def check_result(result: list[tuple[str, str, float]], ref: dict[tuple[str, str], float], k: int, *,
                 exact: bool, tol: float) -> float:
    """Every result eligible, distinct, sorted, scored right, min(k, eligible) of them; returns recall."""
    assert len(result) == min(k, len(ref)), (len(result), k, len(ref))
    pairs = [(ns, key) for ns, key, _ in result]
    assert len(set(pairs)) == len(pairs), "a memory appears twice"
    scores = [s for _, _, s in result]
    assert all(isinstance(s, float) for s in scores)
    assert scores == sorted(scores, reverse=True), scores
    for ns, key, score in result:
        assert (ns, key) in ref, f"{(ns, key)} is not eligible"
        assert abs(score - ref[(ns, key)]) <= tol, (score, ref[(ns, key)])
    best = sorted(ref.values(), reverse=True)[:k]
    if exact and best:
        # the same memories as the reference, up to ties at the cut
        assert min(scores) >= best[-1] - tol, (scores, best)
        missing = [p for p, s in ref.items() if s > best[-1] + tol and p not in set(pairs)]
        assert not missing, missing
    if not result:
        return 1.0
    wanted = {p for p, s in ref.items() if s >= best[-1] - tol}
    return len(wanted & set(pairs)) / len(result)


def clustered(rng: np.random.Generator, n: int, centers: np.ndarray) -> np.ndarray:
    """n vectors near random centers (IVF needs structure to find neighbours, as real embeddings have)."""
    return centers[rng.integers(0, len(centers), n)] + 0.3 * rng.standard_normal((n, DIMS))


def run_model(distance: str, *, ann: bool, seed: int, memories: int, steps: int) -> list[float]:
    """Random replace/remove/set_expiry/search against the reference; returns the recall of each search."""
    rng = np.random.default_rng(seed)
    pyrng = random.Random(seed)
    centers = rng.standard_normal((24, DIMS)) * 2
    if ann:
        index = VectorIndex(DIMS, distance, exact_max=40, ann_min=500, nprobe=4)
    else:
        index = VectorIndex(DIMS, distance)
    ref = Reference(distance)
    tol = 1e-5 if distance == "cosine" else 1e-4

    def put(ns: str, key: str) -> None:
        n = pyrng.choice([0, 1, 1, 1, 2, 3]) if ref.mems else 1
        vecs = list(clustered(rng, n, centers).astype(np.float32))
        expires = pyrng.choice([None, None, None, *EXPIRIES])
        index.replace(ns, key, expires, [(f"p{i}", blob(v)) for i, v in enumerate(vecs)])
        ref.replace(ns, key, expires, vecs)

    keys = [(pyrng.choice(NAMESPACES), f"k{i}") for i in range(memories)]
    for ns, key in keys:
        put(ns, key)
    if ann:
        assert index.maintain() and index.ann
    recalls = []
    for step in range(steps):
        op = pyrng.random()
        ns, key = pyrng.choice(keys)
        if op < 0.3:
            put(ns, key)
        elif op < 0.4:
            index.remove(ns, key)
            ref.replace(ns, key, None, [])
        elif op < 0.5:
            expires = pyrng.choice([None, *EXPIRIES])
            index.set_expiry(ns, key, expires)
            ref.set_expiry(ns, key, expires)
        else:
            query = clustered(rng, 1, centers)[0].astype(np.float32)
            k = pyrng.choice([1, 3, 10, 25])
            prefix = pyrng.choice(PREFIXES)
            now_ms = pyrng.choice([0, 1000, 1999])  # equal to some expiries: expired at that instant
            allowed = None
            if pyrng.random() < 0.3:
                allowed = {p for p in ref.mems if pyrng.random() < 0.3} | {("nowhere", "x")}
            readable = None
            if pyrng.random() < 0.2:
                readable = {n for n in NAMESPACES if pyrng.random() < 0.7}
            result = index.search(query, k, prefix=prefix, now_ms=now_ms, allowed=allowed,
                                  readable=None if readable is None else readable.__contains__)
            expected = ref.scores(query, prefix=prefix, now_ms=now_ms, allowed=allowed, readable=readable)
            recalls.append(check_result(result, expected, k, exact=not ann, tol=tol))
        if ann and step % 50 == 0:
            index.maintain()
    assert len(index) == sum(len(rows) for _, rows in ref.mems.values())
    assert index.memories == len(ref.mems)
    return recalls


@pytest.mark.parametrize("distance", DISTANCES)
def test_exact_path_matches_brute_force(distance: str) -> None:
    recalls = run_model(distance, ann=False, seed=1, memories=300, steps=600)
    assert len(recalls) > 200 and min(recalls) == 1.0


@pytest.mark.parametrize("distance", DISTANCES)
def test_ivf_path_matches_brute_force(distance: str) -> None:
    recalls = run_model(distance, ann=True, seed=2, memories=2000, steps=400)
    assert len(recalls) > 150
    assert np.mean(recalls) >= 0.9, np.mean(recalls)


def test_ivf_path_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    """The model test above would pass on exact scans alone: make sure the IVF answers there."""
    calls = {"ann": 0, "exact": 0}
    real_ann, real_exact = VectorIndex._ann, VectorIndex._exact

    def ann(self: VectorIndex, *args: object) -> object:
        calls["ann"] += 1
        return real_ann(self, *args)  # type: ignore[arg-type]

    def exact(self: VectorIndex, *args: object) -> object:
        calls["exact"] += 1
        return real_exact(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(VectorIndex, "_ann", ann)
    monkeypatch.setattr(VectorIndex, "_exact", exact)
    run_model("cosine", ann=True, seed=3, memories=1500, steps=200)
    assert calls["ann"] > 30 and calls["exact"] > 0, calls


# -- filtered search on the IVF path -----------------------------------------------------------


def ivf_index(n: int, seed: int, distance: str = "cosine") -> tuple[VectorIndex, np.ndarray, list[tuple[str, str]]]:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((40, DIMS)) * 2
    data = clustered(rng, n, centers).astype(np.float32)
    index = VectorIndex(DIMS, distance, exact_max=10, ann_min=1000, nprobe=1)
    pairs = [(f"u{i % 10}.s{i % 37}", f"k{i}") for i in range(n)]
    for (ns, key), vec in zip(pairs, data, strict=True):
        index.replace(ns, key, None, [("$", blob(vec))])
    assert index.maintain() and index.ann
    return index, data, pairs


def test_filtered_ivf_search_returns_k_whenever_k_eligible() -> None:
    index, data, pairs = ivf_index(5000, seed=4)
    rng = np.random.default_rng(5)
    ref = Reference("cosine")
    for (ns, key), vec in zip(pairs, data, strict=True):
        ref.replace(ns, key, None, [vec])
    for trial in range(60):
        allowed = {pairs[i] for i in rng.choice(len(pairs), 50, replace=False)}  # 1 %
        query = data[rng.integers(0, len(data))] + 0.1 * rng.standard_normal(DIMS).astype(np.float32)
        k = 10 if trial % 3 else 60  # 60 > the 50 allowed: all of them
        result = index.search(query, k, now_ms=0, allowed=allowed)
        expected = ref.scores(query, prefix="", now_ms=0, allowed=allowed, readable=None)
        check_result(result, expected, k, exact=False, tol=1e-5)
        assert len(result) == min(k, 50)


def test_ivf_search_never_returns_an_ineligible_memory_under_a_prefix() -> None:
    index, data, pairs = ivf_index(3000, seed=6, distance="l2")
    for vec in data[:50]:
        result = index.search(vec, 20, prefix="u3", now_ms=0)
        assert len(result) == 20
        assert all(ns.startswith("u3.") for ns, _, _ in result)


# -- maintain ----------------------------------------------------------------------------------


def test_maintain_builds_when_warranted_and_keeps_updates_current() -> None:
    rng = np.random.default_rng(7)
    index = VectorIndex(DIMS, "cosine", exact_max=10, ann_min=800, nprobe=1)
    data = rng.standard_normal((3000, DIMS)).astype(np.float32)
    for i in range(700):
        index.replace("n", f"k{i}", None, [("$", blob(data[i]))])
    assert not index.maintain() and not index.ann  # below ann_min
    for i in range(700, 1000):
        index.replace("n", f"k{i}", None, [("$", blob(data[i]))])
    before = index.nbytes
    assert index.maintain() and index.ann
    assert index.nbytes > before + 1000 * DIMS * 4  # the IVF's copy of the vectors is counted
    assert not index.maintain()  # nothing changed
    # updates between rebuilds reach the IVF: each memory is its own nearest neighbour
    for i in range(0, 1000, 7):
        index.replace("n", f"k{i}", None, [("$", blob(data[1000 + i]))])
    for i in range(0, 1000, 7):
        assert index.search(data[1000 + i], 1, now_ms=0) == [("n", f"k{i}", pytest.approx(1.0, abs=1e-5))]
    for i in range(1000, 2000):
        index.replace("n", f"k{i}", None, [("$", blob(data[i]))])
    assert index.maintain()  # doubled since trained
    before = index.nbytes
    for i in range(0, 600):
        index.remove("n", f"k{i}")
    assert index.nbytes < before
    assert index._ivf.ntotal == len(index) == 1400  # noqa: SLF001 - removals leave the IVF too
    assert index.maintain()  # > 20 % removed
    assert len(index) == index.memories == 1400
    for i in range(0, 1400):
        index.remove("n", f"k{i + 600}")
    assert index.maintain() and not index.ann  # empty: exact scans again
    assert index.search(data[0], 5, now_ms=0) == []


def test_updates_and_searches_run_during_a_rebuild_and_reach_the_new_ivf(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(10)
    data = rng.standard_normal((1400, DIMS)).astype(np.float32)
    index = VectorIndex(DIMS, "cosine", exact_max=10, ann_min=500, nprobe=1)
    for i in range(1000):
        index.replace("n", f"k{i}", None, [("$", blob(data[i]))])
    building, finish = threading.Event(), threading.Event()
    real_build = VectorIndex._build

    def slow_build(self: VectorIndex, *args: object) -> object:
        ivf = real_build(self, *args)  # type: ignore[arg-type]
        building.set()
        assert finish.wait(10)
        return ivf

    monkeypatch.setattr(VectorIndex, "_build", slow_build)
    outcome: list[bool] = []
    t = threading.Thread(target=lambda: outcome.append(index.maintain()))
    t.start()
    try:
        assert building.wait(10)
        # the build is under way (and holds no lock): updates and searches go on
        for i in range(0, 200):
            index.remove("n", f"k{i}")
        for i in range(1000, 1400):
            index.replace("n", f"k{i}", None, [("$", blob(data[i]))])
        index.replace("n", "k500", None, [("$", blob(data[0]))])
        assert index.search(data[0], 1, now_ms=0)[0][:2] == ("n", "k500")
        assert not index.ann and not index.maintain()  # a second maintain() does not start another build
    finally:
        finish.set()
        t.join(10)
    assert outcome == [True] and index.ann
    assert index._ivf.ntotal == len(index) == 1200  # noqa: SLF001
    everything = index._eligible("", 0, None, None)  # noqa: SLF001
    for i in [*range(200, 1400, 5), 500]:
        vec = data[0] if i == 500 else data[i]
        got = index._ann(vec, 1, everything)  # noqa: SLF001 - the IVF alone
        assert got is not None and index._mems[int(got[0])].key == f"k{i}"  # noqa: SLF001


def test_concurrent_searches_updates_and_rebuilds_stay_consistent() -> None:
    """Searches in threads while one thread replaces/removes and another rebuilds the IVF."""
    rng = np.random.default_rng(8)
    n_stable, n_churn = 1500, 1500
    data = rng.standard_normal((n_stable + n_churn, DIMS)).astype(np.float32)
    index = VectorIndex(DIMS, "cosine", exact_max=20, ann_min=500, nprobe=2)
    for i in range(n_stable):
        index.replace(f"s.{i % 5}", f"k{i}", None, [("$", blob(data[i]))])
    for i in range(n_churn):
        index.replace(f"w.{i % 5}", f"k{i}", None, [("$", blob(data[n_stable + i]))])
    assert index.maintain()
    latest: dict[int, np.ndarray | None] = {i: data[n_stable + i][None, :] for i in range(n_churn)}
    stable_allowed = {(f"s.{i % 5}", f"k{i}") for i in range(0, n_stable, 10)}
    stop = threading.Event()
    errors: list[BaseException] = []
    searches = [0]
    rebuilds = [0]

    def guarded(fn):  # noqa: ANN001, ANN202
        def run() -> None:
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)
                stop.set()
        return run

    @guarded
    def searcher() -> None:
        local = np.random.default_rng(threading.get_ident() % 1000)
        while not stop.is_set():
            q = local.standard_normal(DIMS).astype(np.float32)
            for kwargs, count, ok in (({"prefix": "s"}, n_stable, lambda ns: ns.startswith("s.")),
                                      ({"allowed": stable_allowed}, len(stable_allowed), lambda ns: ns.startswith("s.")),
                                      ({}, None, lambda ns: True)):
                result = index.search(q, 10, now_ms=0, **kwargs)  # type: ignore[arg-type]
                pairs = [(ns, key) for ns, key, _ in result]
                scores = [s for _, _, s in result]
                assert len(set(pairs)) == len(pairs)
                assert scores == sorted(scores, reverse=True)
                assert all(ok(ns) for ns, _ in pairs)
                if "allowed" in kwargs:
                    assert set(pairs) <= stable_allowed
                if count is not None:
                    assert len(result) == 10
                searches[0] += 1

    @guarded
    def writer() -> None:
        local = np.random.default_rng(9)
        while not stop.is_set():
            i = int(local.integers(0, n_churn))
            if local.random() < 0.5:
                index.remove(f"w.{i % 5}", f"k{i}")
                latest[i] = None
            else:
                vecs = local.standard_normal((int(local.integers(1, 4)), DIMS)).astype(np.float32)
                index.replace(f"w.{i % 5}", f"k{i}", None, [(str(j), blob(v)) for j, v in enumerate(vecs)])
                latest[i] = vecs

    @guarded
    def maintainer() -> None:
        while not stop.is_set():
            if index.maintain():
                rebuilds[0] += 1
            time.sleep(0.01)

    threads = [threading.Thread(target=t) for t in (searcher, searcher, writer, maintainer)]
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # hand the GIL over often: interleave the threads' Python steps finely
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline and not stop.is_set() and rebuilds[0] < 3:
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        sys.setswitchinterval(switch)
    assert not any(t.is_alive() for t in threads)
    if errors:
        raise errors[0]
    assert rebuilds[0] >= 1 and searches[0] > 50, (rebuilds, searches)
    # after the dust settles the IVF holds every live vector, where it belongs (updates made while it
    # was rebuilt included): each vector finds its own memory first, by the IVF alone (its own list
    # is the first probed), and the IVF holds no other entries
    assert index.ann
    assert index._ivf.ntotal == len(index)  # noqa: SLF001
    everything = index._eligible("", 0, None, None)  # noqa: SLF001
    live = [(f"s.{i % 5}", f"k{i}", data[i]) for i in range(0, n_stable, 3)]
    live += [(f"w.{i % 5}", f"k{i}", vecs[-1]) for i, vecs in latest.items() if vecs is not None]
    for ns, key, vec in live:
        got = index._ann(vec, 1, everything)  # noqa: SLF001 - the IVF without the exact fallback
        assert got is not None
        mem = index._mems[int(got[0])]  # noqa: SLF001
        assert (index._ns_names[mem.ns], mem.key) == (ns, key)  # noqa: SLF001


def test_lock_excludes_writers_from_readers_and_lets_readers_share() -> None:
    lock = vectors._RWLock()  # noqa: SLF001
    events: list[str] = []

    def hold(kind: str, entered: threading.Event, release: threading.Event) -> None:
        with getattr(lock, kind)():
            events.append(f"{kind} in")
            entered.set()
            release.wait(10)
            events.append(f"{kind} out")

    def start(kind: str) -> tuple[threading.Thread, threading.Event, threading.Event]:
        entered, release = threading.Event(), threading.Event()
        t = threading.Thread(target=hold, args=(kind, entered, release))
        t.start()
        started.append((t, entered, release))
        return t, entered, release

    started: list[tuple[threading.Thread, threading.Event, threading.Event]] = []
    try:
        _, r1_in, r1_go = start("read")
        assert r1_in.wait(5)
        _, r2_in, r2_go = start("read")
        assert r2_in.wait(5), "readers share the lock"
        _, w_in, w_go = start("write")
        assert not w_in.wait(0.2), "a writer waits for the readers"
        _, r3_in, r3_go = start("read")
        assert not r3_in.wait(0.2), "a waiting writer holds new readers back"
        r1_go.set()
        r2_go.set()
        assert w_in.wait(5)
        assert not r3_in.wait(0.2), "no reader while the writer holds the lock"
        w_go.set()
        assert r3_in.wait(5)
        r3_go.set()
    finally:
        for t, _, release in started:
            release.set()
            t.join(5)
    assert events.index("write in") > events.index("read out") and events[-2:] == ["read in", "read out"]


@pytest.mark.parametrize("ann", [False, True])
def test_ties_at_the_cut_go_by_namespace_then_key(ann: bool) -> None:
    """Equal scores: the memories kept and their order follow (ns, key), whatever order the scan met them."""
    rng = np.random.default_rng(11)
    index = VectorIndex(DIMS, "cosine", exact_max=10 if ann else 10**9, ann_min=500, nprobe=4)
    for i in range(1500):  # background
        index.replace("bg", f"k{i}", None, [("$", blob(rng.standard_normal(DIMS)))])
    same = rng.standard_normal(DIMS).astype(np.float32)
    names = [("b", "k2"), ("a", "k9"), ("b", "k1"), ("a", "k10"), ("c", "k0"), ("a", "k3")]
    for ns, key in names:
        index.replace(ns, key, None, [("$", blob(same))])
    if ann:
        assert index.maintain() and index.ann
    got = index.search(same, 4, now_ms=0)
    assert [(ns, key) for ns, key, _ in got] == sorted(names)[:4]
    assert all(score == pytest.approx(1.0, abs=1e-6) for _, _, score in got)


def test_search_rejects_a_query_of_the_wrong_shape() -> None:
    index = VectorIndex(4, "cosine")
    with pytest.raises(ValueError, match="4"):
        index.search(np.ones(3, dtype=np.float32), 1, now_ms=0)


def test_importing_the_module_loads_neither_faiss_nor_blas() -> None:
    """faiss (and OpenBLAS with it) loads on first IVF use: a daemon with small indexes never loads it."""
    code = ("import sys, numpy as np; from memd.store.vectors import VectorIndex, check_vector\n"
            "ix = VectorIndex(8, 'cosine')\n"
            "ix.replace('a', 'k', None, [('$', np.ones(8, dtype='<f4').tobytes())])\n"
            "assert ix.search(check_vector(np.ones(8, dtype='<f4').tobytes(), 8, 'cosine'), 3, now_ms=0)\n"
            "print('faiss' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_constants_are_consistent() -> None:
    """The IVF is only worth building when a search can use it."""
    assert vectors.ANN_MIN >= vectors.EXACT_MAX
    assert vectors.NPROBE >= 1 and vectors.TRAIN_PER_LIST >= 39
