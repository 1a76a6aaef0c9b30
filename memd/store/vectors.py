"""The in-memory vector index of one declared index: exact scan for small candidate sets, faiss IVF above.

Pure (numpy + faiss, no connection): the SQLite store owns the vectors (``mem_vectors``) and keeps
one :class:`VectorIndex` per declared index current after each flush; KNN runs here.

Layout. Vectors live in one growable float32 matrix, a row per vector ("slot"); freed slots are
reused. Per slot: the memory it belongs to, its namespace id and its memory's expiry, so that
eligibility (prefix, TTL, FILTER's ``allowed`` set, access rules) is a few vectorised array
operations. Cosine vectors are normalised at insert, so cosine search is an inner product.

Search. When the eligible vectors number at most ``exact_max``: an exact scan (gather + matrix-vector
product in the calling thread, partial sort). Above, and once :meth:`VectorIndex.maintain` has built one: a faiss
IVF-Flat index searched with a bitmap IDSelector of the eligible slots, so filters apply before the
cut to k; when it yields fewer than k distinct memories it is widened once and then an exact scan
of the eligible slots answers, so a search always returns min(k, eligible memories) results.
Returned scores are recomputed in float64 from the stored vectors.

Why faiss IVF-Flat: at 100k x 384 on 2 cores it builds in 0.5 s (3 s on a box loaded 2x over) and
answers in ~0.5 ms at recall@10 1.000, filters through an IDSelector during the scan of its lists,
and adds and removes vectors in place. HNSW graphs build too slowly for a start-up budget of 5 s
(usearch 40 s, faiss HNSW 10.6 s at recall 0.97) and do not remove in place; an exact scan of 100k
costs 11-20 ms, at or over the 15 ms budget.

The thresholds below come from ``python3 benchmarks/bench_vector_index.py`` (100k x 384
hierarchical clusters, cosine, k=10, 200 queries a row), run 2026-12-07 on 2 CPUs at load average
0.4-0.7 (wall clock ~= the search thread's CPU time), on this search code before the branch was
rebased onto the batch loader (commit 88787fd then; 7c7f204 now):

    scope        path            p50 / p99 ms    recall@10
    all          exact           10.9 / 12.6       1.000
    all          IVF nprobe 4     0.71 / 1.09      1.000
    all          IVF nprobe 8     0.53 / 0.93      1.000   (chosen)
    prefix 10%   exact            4.0 / 4.6        1.000
    prefix 10%   IVF nprobe 4     0.73 / 0.97      0.954
    prefix 10%   IVF nprobe 8     0.69 / 0.91      1.000   (chosen)
    filter 1%    exact            0.78 / 0.95      1.000   (chosen)
    filter 1%    IVF nprobe 8     0.62 / 0.76      0.988
    filter 5%    exact            4.0 / 6.8        1.000
    filter 5%    IVF nprobe 8     2.1 / 4.9        0.993   (chosen)

    maintain() (IVF build, 316 lists) 0.54 s; numpy ``matrix @ q`` over all 100k: 6.3 / 8.8 ms.

On commit 3e76638 (ties at the cut by (ns, key)) at load average 1-2: p50/p99 1.50/7.2 ms (all),
1.43/6.2 ms (prefix 10%), 2.3/6.4 ms (filter 1%), recall 1.000, maintain() 2.6 s. An earlier run on
the box loaded 2x over (load average 4-5) doubled the CPU times; its wall-clock p99s reached 12 ms
(all), 35 ms (prefix 10%), 15 ms (filter 1%), and maintain() took 3.0 s. A filtered search's cost grows with the ``allowed`` set:
each pair is a dictionary lookup.

Threads: a readers-writer lock. Searches share it (numpy and faiss release the GIL, so searches
run in parallel); updates take it alone for microseconds; :meth:`VectorIndex.maintain` builds a new
IVF from a snapshot without the lock, records the slots changed meanwhile, and applies them and
swaps the index under a short exclusive section.
"""

from __future__ import annotations

import bisect
import logging
import math
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from itertools import chain

from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import faiss

log = logging.getLogger("memd.vectors")

DISTANCES = ("cosine", "ip", "l2")

# Eligible vectors at or below which a search scans exactly rather than asking the IVF: a 1,000-vector
# filter scans exactly at about the IVF's cost and recall 1.000 (IVF: 0.988); by 5,000 the scan costs
# 2x the IVF, and at 10,000 (a 10 % prefix) 6x (table above).
EXACT_MAX = 2_000
# Vectors at or above which maintain() builds an IVF. Below, a search scans at most this many
# vectors (~1-2 ms); above, a full scan heads for the 15 ms budget (100k: 11-20 ms).
ANN_MIN = 10_000
# IVF lists: NLIST_PER_SQRT * sqrt(vectors) (316 for 100k), k-means of TRAIN_ITERATIONS rounds on
# TRAIN_PER_LIST sampled vectors per list (faiss asks for >= 39). At 100k x 384: 64 a list and
# faiss's 25 rounds trained in 2.5 s, 40 and 10 rounds in 0.9 s, both at recall@10 1.000 (nprobe 8).
NLIST_PER_SQRT = 1.0
TRAIN_PER_LIST = 40
TRAIN_ITERATIONS = 10
# Lists probed per query (of ~316 at 100k): 4 lost recall under a prefix (0.954) and on small
# filters (0.891); 8 kept 1.000 / 0.988 at the same cost. A search that yields fewer than k
# memories retries once with WIDEN x the lists and neighbours, then scans exactly.
NPROBE = 8
WIDEN = 4
# maintain() rebuilds when the vectors doubled since the IVF was trained or REBUILD_REMOVED of
# them have been removed since (the centroids drift from the data).
REBUILD_GROWTH = 2.0
REBUILD_REMOVED = 0.2

_NEVER = np.iinfo(np.int64).max  # expires_at None
_FREE = np.iinfo(np.int64).min  # a free slot's expiry: never eligible
_ADD_CHUNK = 16_384  # rows per faiss add: bounds the temporary copies of a rebuild
_MEMORY_OVERHEAD = 200  # bytes per memory for its Python bookkeeping (dict entry, record, slot list)


def _faiss() -> ModuleType:
    """faiss, imported on first use (an update or search of an IVF, or its build).

    Loading faiss starts its OpenBLAS, which maps two 128 MiB buffers with an mbind() NUMA hint (a
    syscall memd.service's filter refuses, harmlessly: the hint is optional): a daemon whose indexes
    stay below ANN_MIN never pays for either. For the same reason this module does no BLAS call
    (einsum rather than ``@``, norms by hand).
    """
    import faiss  # noqa: PLC0415 - deliberately lazy, see above

    return faiss


def check_vector(blob: bytes, dims: int, distance: str) -> np.ndarray:
    """The blob as a float32 array of ``dims``; ValueError saying what to fix.

    Used for writes and queries alike: wrong length (the expected byte count is in the message),
    NaN or infinity, a zero vector under cosine (it has no direction; ip and l2 accept it).
    """
    if distance not in DISTANCES:
        raise ValueError(f"unknown distance {distance!r}: use one of {', '.join(DISTANCES)}")
    expected = dims * 4
    if len(blob) != expected:
        raise ValueError(f"vector is {len(blob)} bytes; this index takes {dims} float32 values ({expected} bytes), "
                         "little-endian")
    vec = np.frombuffer(blob, dtype="<f4").astype(np.float32)
    # One reduction answers the common case (every MEM.PUT with a vector pays for this check): the
    # squared norm is finite and non-zero exactly when no value is NaN or infinite and one is not
    # zero, unless the squares overflow float32 (values beyond ~1.8e19), which the slow path settles.
    square = float(np.dot(vec, vec))
    if math.isfinite(square) and square > 0:
        return vec
    bad = np.flatnonzero(~np.isfinite(vec))
    if bad.size:
        raise ValueError(f"vector holds NaN or infinity (first at position {int(bad[0])}): send finite float32 values")
    if distance == "cosine" and not vec.any():
        raise ValueError("zero vector under cosine distance has no direction: send a non-zero vector "
                         "(or declare the index with DISTANCE ip or l2)")
    return vec


@contextmanager
def _faiss_threads(n: int) -> Iterator[None]:
    """faiss's OpenMP thread count for this thread (libgomp keeps it per thread) within the block.

    One thread for single-vector calls: waking an OpenMP team costs ~0.6 ms on a busy 2-core box,
    20x the work of adding one vector (28 us). The IVF build uses every core.
    """
    lib = _faiss()
    before = lib.omp_get_max_threads()
    lib.omp_set_num_threads(n)
    try:
        yield
    finally:
        lib.omp_set_num_threads(before)


class _RWLock:
    """Many readers or one writer; a waiting writer holds new readers back (no writer starvation)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class _Memory:
    """One memory's place in the index: its namespace id, key, expiry and slots."""

    __slots__ = ("ns", "key", "expires", "slots")

    def __init__(self, ns: int, key: str, expires: int, slots: list[int]) -> None:
        self.ns = ns
        self.key = key
        self.expires = expires
        self.slots = slots


class VectorIndex:
    """Every vector of one declared index, in memory; every method is thread-safe.

    Flushes call :meth:`replace` / :meth:`remove` / :meth:`set_expiry` from the store's writer thread,
    searches come from pool threads, :meth:`maintain` from another worker.
    """

    def __init__(self, dims: int, distance: str, *, exact_max: int = EXACT_MAX, ann_min: int = ANN_MIN,
                 nprobe: int = NPROBE) -> None:
        if distance not in DISTANCES:
            raise ValueError(f"unknown distance {distance!r}: use one of {', '.join(DISTANCES)}")
        if not 1 <= dims <= 4096:
            raise ValueError(f"dims {dims} out of range: 1 to 4096")
        self.dims = dims
        self.distance = distance
        self.exact_max = exact_max
        self.ann_min = ann_min
        self.nprobe = nprobe
        self._lock = _RWLock()
        self._maintaining = threading.Lock()
        cap = 64
        self._mat = np.zeros((cap, dims), dtype=np.float32)
        self._slot_mem = np.full(cap, -1, dtype=np.int32)  # memory id, -1 = free
        self._slot_ns = np.zeros(cap, dtype=np.int32)
        self._slot_exp = np.full(cap, _FREE, dtype=np.int64)
        self._slot_sq = np.zeros(cap, dtype=np.float32)  # squared norms (l2 ranking)
        self._hi = 0  # slots [0, hi) have been used
        self._free: list[int] = []
        self._count = 0
        self._mems: list[_Memory | None] = []
        self._free_mems: list[int] = []
        self._mem_slot = np.zeros(64, dtype=np.int64)  # a memory's first slot: `allowed` without its record
        self._mem_single = np.zeros(64, dtype=bool)  # whether that is its only slot
        self._by_key: dict[tuple[str, str], int] = {}
        self._key_bytes = 0
        self._ns_ids: dict[str, int] = {}
        self._ns_names: list[str] = []
        # namespace names sorted, and their ids in that order; None: sort again before the next prefix lookup
        self._ns_sorted: tuple[list[str], np.ndarray] | None = ([], np.zeros(0, dtype=np.int32))
        self._ivf: faiss.IndexIVFFlat | None = None
        self._trained = 0  # vectors when the IVF was built
        self._removed = 0  # vectors removed (or replaced) since
        self._changed: set[int] | None = None  # slots changed while maintain() builds

    # -- sizes ---------------------------------------------------------------------------------

    def __len__(self) -> int:
        """Vectors held."""
        return self._count

    @property
    def memories(self) -> int:
        """Memories with at least one vector."""
        return len(self._by_key)

    @property
    def ann(self) -> bool:
        """Whether an IVF is in use for large searches."""
        return self._ivf is not None

    @property
    def nbytes(self) -> int:
        """Bytes held: the matrix's capacity, per-slot arrays, bookkeeping per memory, the IVF."""
        with self._lock.read():
            total = (self._mat.nbytes + self._slot_mem.nbytes + self._slot_ns.nbytes + self._slot_exp.nbytes
                     + self._slot_sq.nbytes + len(self._by_key) * _MEMORY_OVERHEAD + self._key_bytes
                     + 8 * self._count)
            ivf = self._ivf
            if ivf is not None:
                # list entries (vector + id), the centroids, the id -> list hashtable (~32 bytes an entry)
                total += ivf.ntotal * (self.dims * 4 + 8 + 32) + ivf.nlist * self.dims * 4
            return total

    # -- updates -------------------------------------------------------------------------------

    def _prepare(self, vectors: Sequence[tuple[str, bytes]]) -> np.ndarray:
        """The blobs as one float32 matrix (normalised under cosine): one join and one frombuffer for
        all of them, not a call per vector (a load of 100,000 is one call)."""
        size = self.dims * 4
        for i, (_, blob) in enumerate(vectors):
            if len(blob) != size:
                raise ValueError(f"vector {i} is {len(blob)} bytes; this index takes {size}")
        rows = np.frombuffer(b"".join(blob for _, blob in vectors), dtype="<f4").reshape(len(vectors), self.dims)
        rows = rows.astype(np.float32)  # a writable copy in native order
        # callers validated with check_vector; a bad vector slipping through would poison every search
        if not np.isfinite(rows).all():
            raise ValueError("vector holds NaN or infinity: validate it with check_vector first")
        if self.distance == "cosine":
            norms = np.sqrt(np.einsum("ij,ij->i", rows, rows, dtype=np.float64))[:, None]
            if not norms.all():
                raise ValueError("zero vector under cosine distance: validate it with check_vector first")
            rows = (rows / norms).astype(np.float32)
        return rows

    def replace(self, ns: str, key: str, expires_at: int | None, vectors: Sequence[tuple[str, bytes]]) -> None:
        """The memory's vectors become exactly these (already validated; empty = remove the memory)."""
        self.replace_many([(ns, key, expires_at, vectors)])

    def replace_many(self, items: Sequence[tuple[str, str, int | None, Sequence[tuple[str, bytes]]]]) -> None:
        """:meth:`replace` for many memories at once: what a flush or the load at start does.

        One validation pass over every row, one exclusive section, one faiss removal and one faiss
        addition, array writes for all slots at once: per memory, only the bookkeeping dicts are
        touched in Python. (Memory by memory, loading 20,000 took 3.7 s; the start-up budget for
        100,000 is 5 s.) A memory listed twice ends with its last entry's vectors.
        """
        if not items:
            return
        last = {(ns, key): i for i, (ns, key, _, _) in enumerate(items)}
        if len(last) != len(items):  # (a flush never repeats one; be exact anyway)
            items = [items[i] for i in sorted(last.values())]
        rows = self._prepare([pair for *_, vectors in items for pair in vectors])
        with self._lock.write():
            dropped: list[int] = []
            for ns, key, _, _ in items:
                self._drop(ns, key, dropped)
            if dropped and self._ivf is not None:
                with _faiss_threads(1):
                    self._ivf.remove_ids(_faiss().IDSelectorArray(np.asarray(dropped, dtype=np.int64)))
            if not len(rows):
                return
            slots = self._alloc(len(rows))
            slot_mem = np.empty(len(rows), dtype=np.int32)
            slot_ns = np.empty(len(rows), dtype=np.int32)
            slot_exp = np.empty(len(rows), dtype=np.int64)
            need = len(self._mems) + len(items)  # memory ids beyond the current ones: room for all at once
            if need > len(self._mem_slot):
                cap = max(need, 2 * len(self._mem_slot))
                self._mem_slot = np.concatenate([self._mem_slot, np.zeros(cap - len(self._mem_slot), np.int64)])
                self._mem_single = np.concatenate([self._mem_single, np.zeros(cap - len(self._mem_single), bool)])
            mem_ids: list[int] = []
            firsts: list[int] = []
            singles: list[bool] = []
            at = 0
            for ns, key, expires_at, vectors in items:
                n = len(vectors)
                if not n:
                    continue
                ns_id = self._ns_ids.get(ns)
                if ns_id is None:
                    ns_id = self._ns_ids[ns] = len(self._ns_names)
                    self._ns_names.append(ns)
                    self._ns_sorted = None
                exp = _NEVER if expires_at is None else expires_at
                mine = slots[at:at + n]
                mem_id = self._free_mems.pop() if self._free_mems else len(self._mems)
                mem = _Memory(ns_id, key, exp, mine)
                if mem_id == len(self._mems):
                    self._mems.append(mem)
                else:
                    self._mems[mem_id] = mem
                mem_ids.append(mem_id)
                firsts.append(mine[0])
                singles.append(n == 1)
                self._by_key[(ns, key)] = mem_id
                self._key_bytes += len(ns) + len(key)
                if n == 1:
                    slot_mem[at] = mem_id
                    slot_ns[at] = ns_id
                    slot_exp[at] = exp
                else:
                    slot_mem[at:at + n] = mem_id
                    slot_ns[at:at + n] = ns_id
                    slot_exp[at:at + n] = exp
                at += n
            self._mem_slot[mem_ids] = firsts
            self._mem_single[mem_ids] = singles
            idx = np.asarray(slots, dtype=np.int64)
            self._mat[idx] = rows
            self._slot_mem[idx] = slot_mem
            self._slot_ns[idx] = slot_ns
            self._slot_exp[idx] = slot_exp
            if self.distance == "l2":
                self._slot_sq[idx] = np.einsum("ij,ij->i", rows, rows)
            self._count += len(slots)
            if self._ivf is not None:
                with _faiss_threads(1):
                    self._ivf.add_with_ids(rows, idx)
            if self._changed is not None:
                self._changed.update(slots)

    def remove(self, ns: str, key: str) -> None:
        """The memory leaves the index (no-op when it has no vectors)."""
        self.replace_many([(ns, key, None, ())])

    def set_expiry(self, ns: str, key: str, expires_at: int | None) -> None:
        """A new expiry for the memory's vectors (no-op when it has none)."""
        with self._lock.write():
            mem_id = self._by_key.get((ns, key))
            if mem_id is None:
                return
            mem = self._mems[mem_id]
            assert mem is not None
            mem.expires = _NEVER if expires_at is None else expires_at
            self._slot_exp[np.asarray(mem.slots, dtype=np.int64)] = mem.expires

    def _drop(self, ns: str, key: str, dropped: list[int]) -> None:
        """Free the memory's slots (exclusive lock held); they are added to ``dropped``, which the
        caller removes from the IVF in one call for many memories."""
        mem_id = self._by_key.pop((ns, key), None)
        if mem_id is None:
            return
        mem = self._mems[mem_id]
        assert mem is not None
        self._mems[mem_id] = None
        self._free_mems.append(mem_id)
        self._key_bytes -= len(ns) + len(key)
        idx = np.asarray(mem.slots, dtype=np.int64)
        self._slot_mem[idx] = -1
        self._slot_exp[idx] = _FREE
        self._free.extend(mem.slots)
        self._count -= len(mem.slots)
        self._removed += len(mem.slots)
        dropped.extend(mem.slots)
        if self._changed is not None:
            self._changed.update(mem.slots)

    def _alloc(self, n: int) -> list[int]:
        """n free slots, growing the arrays (x2) when the free list runs out (exclusive lock held)."""
        slots = [self._free.pop() for _ in range(min(n, len(self._free)))]
        need = n - len(slots)
        if need:
            if self._hi + need > len(self._mat):
                self._grow(max(2 * len(self._mat), self._hi + need))
            slots.extend(range(self._hi, self._hi + need))
            self._hi += need
        return slots

    def _grow(self, cap: int) -> None:
        # new arrays, not resize in place: a maintain() building from the old matrix keeps reading it
        old = len(self._mat)
        mat = np.zeros((cap, self.dims), dtype=np.float32)
        mat[:old] = self._mat
        self._mat = mat
        for name, fill in (("_slot_mem", -1), ("_slot_ns", 0), ("_slot_exp", _FREE), ("_slot_sq", 0)):
            arr = getattr(self, name)
            new = np.full(cap, fill, dtype=arr.dtype)
            new[:old] = arr
            setattr(self, name, new)

    # -- search --------------------------------------------------------------------------------

    def _ns_table(self, prefix: str, readable: Callable[[str], bool] | None) -> np.ndarray | None:
        """Eligible namespace ids as a boolean table, None when every namespace is (read lock held)."""
        if not prefix:
            if readable is None:
                return None
            return np.fromiter((bool(readable(name)) for name in self._ns_names), dtype=bool,
                               count=len(self._ns_names))
        if self._ns_sorted is None:  # a namespace was added since: sort again (once per new namespace)
            order = np.asarray(sorted(range(len(self._ns_names)), key=self._ns_names.__getitem__), dtype=np.int32)
            # one assignment: concurrent readers (shared lock) may each sort, and all see a matching pair
            self._ns_sorted = ([self._ns_names[i] for i in order.tolist()], order)
        names, order = self._ns_sorted
        table = np.zeros(len(self._ns_names), dtype=bool)
        # "prefix.x..." sort in [prefix + ".", prefix + "/"): '/' follows '.'
        ids = order[bisect.bisect_left(names, prefix + "."):bisect.bisect_left(names, prefix + "/")]
        exact = self._ns_ids.get(prefix)
        if exact is not None:
            ids = np.append(ids, exact)
        if readable is None:
            table[ids] = True
        else:
            table[ids] = [bool(readable(self._ns_names[i])) for i in ids]
        return table

    def _eligible(self, prefix: str, now_ms: int, allowed: Collection[tuple[str, str]] | None,
                  readable: Callable[[str], bool] | None) -> np.ndarray:
        """Eligible slots, ascending (read lock held)."""
        table = self._ns_table(prefix, readable)
        if allowed is not None:
            # O(len(allowed)) dict lookups (~0.5 us each at 100k memories), never a pass over every memory;
            # slots from arrays, not from the records (scattered objects: a cache miss each)
            found = np.asarray([mem_id for mem_id in map(self._by_key.get, allowed) if mem_id is not None],
                               dtype=np.int64)
            single = self._mem_single[found]
            idx = self._mem_slot[found[single]]
            if not single.all():
                mems = self._mems
                more = chain.from_iterable(mems[mem_id].slots for mem_id in found[~single].tolist())  # type: ignore[union-attr]
                idx = np.concatenate([idx, np.fromiter(more, dtype=np.int64)])
            idx = np.sort(idx)
            keep = self._slot_exp[idx] > now_ms
            if table is not None:
                keep &= table[self._slot_ns[idx]]
            return idx[keep]
        hi = self._hi
        mask = self._slot_exp[:hi] > now_ms
        if table is not None:
            mask &= table[self._slot_ns[:hi]]
        return np.flatnonzero(mask)

    def search(self, query: np.ndarray, k: int, *, prefix: str = "", now_ms: int,
               allowed: Collection[tuple[str, str]] | None = None,
               readable: Callable[[str], bool] | None = None) -> list[tuple[str, str, float]]:
        """Up to k distinct memories, best first: (ns, key, score).

        Score: cosine -> cosine similarity; ip -> dot product; l2 -> negative euclidean distance.
        Eligible: ns == prefix or ns starts with prefix + "." (prefix "" = all); expires_at None or
        > now_ms; (ns, key) in ``allowed`` when given; readable(ns) when given. Returns exactly
        min(k, #eligible memories) results.
        """
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        if q.shape[0] != self.dims:
            raise ValueError(f"query has {q.shape[0]} dims; this index takes {self.dims}")
        if self.distance == "cosine":
            q64 = q.astype(np.float64)
            norm = math.sqrt(float(np.einsum("i,i->", q64, q64)))
            if norm == 0.0:
                raise ValueError("zero query vector under cosine distance has no direction: send a non-zero vector")
            q = (q64 / norm).astype(np.float32)
        if k <= 0:
            return []
        with self._lock.read():
            idx = self._eligible(prefix, now_ms, allowed, readable)
            if not len(idx):
                return []
            mem_ids: np.ndarray | None = None
            if self._ivf is not None and len(idx) > self.exact_max:
                mem_ids = self._ann(q, k, idx)
            if mem_ids is None:
                mem_ids = self._exact(q, k, idx)
            return self._rescore(q, mem_ids, k)

    def _ranking(self, rows: np.ndarray, q: np.ndarray, sq: np.ndarray) -> np.ndarray:
        """float32 scores ordering rows as the distance does (for l2: 2 q.v - |v|^2 = |q|^2 - |q-v|^2)."""
        # einsum, not BLAS: OpenBLAS's threads spin-wait after a product, and on a busy 2-core box
        # they took the core from the rest of the search (p50 15 ms instead of 0.2 ms at 2k rows)
        dots = np.einsum("ij,j->i", rows, q)
        if self.distance == "l2":
            return 2 * dots - sq
        return dots

    def _exact(self, q: np.ndarray, k: int, idx: np.ndarray) -> np.ndarray:
        """Memory ids of the k best distinct memories among slots idx, by a full scan (read lock held)."""
        hi = self._hi
        if 2 * len(idx) >= hi:  # dense: one product over the whole matrix beats a gather
            scores = self._ranking(self._mat[:hi], q, self._slot_sq[:hi])[idx]
        else:
            scores = self._ranking(self._mat[idx], q, self._slot_sq[idx])
        return _top_distinct(scores, self._slot_mem[idx], k)

    def _ann(self, q: np.ndarray, k: int, idx: np.ndarray) -> np.ndarray | None:
        """Memory ids of k distinct memories from the IVF, or None when it yields fewer (read lock held)."""
        ivf = self._ivf
        assert ivf is not None
        sel = None
        if len(idx) < self._count:  # else every vector in the IVF is eligible
            mask = np.zeros(self._hi, dtype=bool)
            mask[idx] = True
            bits = np.packbits(mask, bitorder="little")  # a local: alive until the searches are done
            sel = _faiss().IDSelectorBitmap(bits)
        per_memory = self._count / max(1, len(self._by_key))
        want = min(len(idx), math.ceil(k * per_memory * 1.5) + 8)
        nprobe = self.nprobe
        for _ in range(2):
            params = _faiss().SearchParametersIVF(sel=sel, nprobe=min(nprobe, ivf.nlist))
            with _faiss_threads(1):
                dist, labels = ivf.search(q[None, :], want, params=params)
            keep = labels[0] >= 0
            found, dist = labels[0][keep], dist[0][keep]
            mems = self._slot_mem[found]
            _, first = np.unique(mems, return_index=True)
            if len(first) >= k:
                # the k-th memory and every one tied with it (best first: ties are contiguous), so that
                # the final order breaks ties by (ns, key) and not by faiss's order
                kth = np.sort(first)[k - 1]
                cut = kth + 1 + int(np.count_nonzero(dist[kth + 1:] == dist[kth]))
                return np.unique(mems[:cut])
            want = min(len(idx), want * WIDEN)
            nprobe *= WIDEN
        return None

    def _rescore(self, q: np.ndarray, mem_ids: np.ndarray, k: int) -> list[tuple[str, str, float]]:
        """The k best of ``mem_ids`` as (ns, key, best float64 score over the memory's vectors) (read lock held)."""
        q64 = q.astype(np.float64)
        out = []
        for mem_id in mem_ids.tolist():
            mem = self._mems[mem_id]
            assert mem is not None
            rows = self._mat[mem.slots].astype(np.float64)
            if self.distance == "l2":
                score = -float(np.sqrt(((rows - q64) ** 2).sum(axis=1)).min())
            else:
                score = float(np.einsum("ij,j->i", rows, q64).max())
            out.append((self._ns_names[mem.ns], mem.key, score))
        out.sort(key=lambda r: (-r[2], r[0], r[1]))  # ties: by namespace, then key
        return out[:k]

    # -- maintenance ---------------------------------------------------------------------------

    def maintain(self) -> bool:
        """(Re)build the IVF when warranted; returns whether it rebuilt (or dropped) it.

        Warranted: at least ``ann_min`` vectors and no IVF yet, or the vectors doubled since it was
        trained, or more than a fifth of them were removed since. Slow (seconds at 100k): call from a
        worker thread. The build reads a snapshot without the lock; updates made meanwhile are
        recorded and applied to the new IVF before it replaces the old one under the lock.
        """
        if not self._maintaining.acquire(blocking=False):
            return False  # another thread is building
        try:
            with self._lock.write():
                count = self._count
                if count < self.ann_min:
                    if self._ivf is not None and count < self.ann_min // 2:
                        self._ivf = None  # small again: exact scans are cheap, free the lists
                        log.info("vector_ann_dropped vectors=%d", count)
                        return True
                    return False
                if self._ivf is not None and count < REBUILD_GROWTH * self._trained \
                        and self._removed <= REBUILD_REMOVED * self._trained:
                    return False
                mat = self._mat
                used = np.flatnonzero(self._slot_mem[:self._hi] >= 0)
                self._changed = set()
                self._trained = count
                self._removed = 0
            started = time.perf_counter()
            try:
                ivf = self._build(mat, used)
            except BaseException:
                with self._lock.write():
                    self._changed = None
                raise
            with self._lock.write():
                changed = np.fromiter(sorted(self._changed or ()), dtype=np.int64)
                if len(changed):
                    ivf.remove_ids(_faiss().IDSelectorArray(changed))
                    live = changed[self._slot_mem[changed] >= 0]
                    if len(live):
                        ivf.add_with_ids(self._mat[live], live)
                self._ivf = ivf
                self._changed = None
            log.info("vector_ann_built vectors=%d nlist=%d changed_meanwhile=%d seconds=%.3f", len(used), ivf.nlist,
                     len(changed), time.perf_counter() - started)
            return True
        finally:
            self._maintaining.release()

    def _build(self, mat: np.ndarray, used: np.ndarray) -> faiss.IndexIVFFlat:
        """A trained IVF holding rows ``used`` of ``mat`` (no lock held: rows changed meanwhile are redone)."""
        n = len(used)
        nlist = max(1, min(int(round(NLIST_PER_SQRT * math.sqrt(n))), n // 39))  # faiss wants >= 39 points a list
        faiss = _faiss()
        metric = faiss.METRIC_L2 if self.distance == "l2" else faiss.METRIC_INNER_PRODUCT
        quantizer = faiss.IndexFlatL2(self.dims) if metric == faiss.METRIC_L2 else faiss.IndexFlatIP(self.dims)
        ivf = faiss.IndexIVFFlat(quantizer, self.dims, nlist, metric)
        ivf.cp.niter = TRAIN_ITERATIONS
        sample_n = min(n, TRAIN_PER_LIST * nlist)
        sample = np.sort(np.random.default_rng(n).choice(used, size=sample_n, replace=False)) if sample_n < n else used
        ivf.train(mat[sample])
        ivf.set_direct_map_type(faiss.DirectMap.Hashtable)  # remove_ids by id without scanning every list
        for start in range(0, n, _ADD_CHUNK):
            chunk = used[start:start + _ADD_CHUNK]
            ivf.add_with_ids(mat[chunk], chunk.astype(np.int64))
        return ivf


def _top_distinct(scores: np.ndarray, mems: np.ndarray, k: int) -> np.ndarray:
    """The k memories of the highest scores (a memory counts once, by its best), and any tied with the k-th.

    Takes the top c scores, c growing x4 until they hold k distinct memories: a memory absent from
    the top c scores no higher than the c-th, so the first k distinct ones are the answer, up to
    ties at the cut: those are all returned, for :meth:`VectorIndex._rescore` to order by (ns, key).
    """
    n = len(scores)
    c = min(n, max(2 * k, k + 16))
    while True:
        top = np.argpartition(scores, n - c)[n - c:] if c < n else np.arange(n)
        order = top[np.argsort(-scores[top], kind="stable")]
        ranked = mems[order]
        _, first = np.unique(ranked, return_index=True)
        if len(first) >= k:
            kth = scores[order[np.sort(first)[k - 1]]]
            return np.unique(mems[scores >= kth])
        if c >= n:
            return ranked[first]
        c = min(n, 4 * c)
