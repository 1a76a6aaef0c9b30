"""In-memory vector index (exact scan): the interface the store builds on.

(An exact-only first version; the ANN path replaces it.)
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Sequence

import numpy as np

DISTANCES = ("cosine", "ip", "l2")


def check_vector(blob: bytes, dims: int, distance: str) -> np.ndarray:
    if len(blob) != dims * 4:
        raise ValueError(f"vector is {len(blob)} bytes; this index takes {dims} float32 values ({dims * 4} bytes)")
    v = np.frombuffer(blob, dtype="<f4").astype(np.float32)
    if not np.isfinite(v).all():
        raise ValueError("vector holds NaN or infinity")
    if distance == "cosine" and not v.any():
        raise ValueError("a zero vector has no direction: cosine distance is undefined for it")
    return v


class VectorIndex:
    def __init__(self, dims: int, distance: str) -> None:
        self.dims = dims
        self.distance = distance
        self._lock = threading.Lock()
        self._items: dict[tuple[str, str], tuple[int | None, np.ndarray]] = {}

    def replace(self, ns: str, key: str, expires_at: int | None, vectors: Sequence[tuple[str, bytes]]) -> None:
        with self._lock:
            if not vectors:
                self._items.pop((ns, key), None)
                return
            m = np.stack([np.frombuffer(b, dtype="<f4").astype(np.float32) for _, b in vectors])
            if self.distance == "cosine":
                m /= np.linalg.norm(m, axis=1, keepdims=True)
            self._items[(ns, key)] = (expires_at, m)

    def set_expiry(self, ns: str, key: str, expires_at: int | None) -> None:
        with self._lock:
            item = self._items.get((ns, key))
            if item is not None:
                self._items[(ns, key)] = (expires_at, item[1])

    def remove(self, ns: str, key: str) -> None:
        with self._lock:
            self._items.pop((ns, key), None)

    def search(self, query: np.ndarray, k: int, *, prefix: str = "", now_ms: int,
               allowed: Collection[tuple[str, str]] | None = None,
               readable: Callable[[str], bool] | None = None) -> list[tuple[str, str, float]]:
        q = query.astype(np.float32)
        if self.distance == "cosine":
            q = q / np.linalg.norm(q)
        out = []
        with self._lock:
            items = list(self._items.items())
        for (ns, key), (exp, m) in items:
            if prefix and ns != prefix and not ns.startswith(prefix + "."):
                continue
            if exp is not None and exp <= now_ms:
                continue
            if allowed is not None and (ns, key) not in allowed:
                continue
            if readable is not None and not readable(ns):
                continue
            if self.distance == "l2":
                score = -float(np.min(np.linalg.norm(m - q, axis=1)))
            else:
                score = float(np.max(m @ q))
            out.append((ns, key, score))
        out.sort(key=lambda t: (-t[2], t[0], t[1]))
        return out[:k]

    def __len__(self) -> int:
        return sum(len(m) for _, m in self._items.values())

    @property
    def memories(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        return sum(m.nbytes for _, m in self._items.values())

    @property
    def ann(self) -> bool:
        return False

    def maintain(self) -> bool:
        return False
