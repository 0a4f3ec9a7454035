"""Landmark choice over per-row embeddings: uniform, k-means++ seeding, farthest-point.

k-means++ and farthest-point need every candidate in memory and O(L·candidates·dim) work, so they
run on a seeded uniform subset of `candidates` rows (all rows when the pool is smaller).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from iprox_ray.influence.krr import sq_distances


def uniform(valid_rows: np.ndarray, count: int, seed: int) -> np.ndarray:
    """`count` distinct rows drawn uniformly (sorted)."""
    count = min(count, len(valid_rows))
    return np.sort(np.random.default_rng(seed).choice(valid_rows, size=count, replace=False))


def _spread(x: np.ndarray, count: int, rng: np.random.Generator, pick: Callable) -> np.ndarray:
    """Greedy seeding: start uniformly, then `pick(min squared distances)` each next point."""
    count = min(count, len(x))
    x = np.asarray(x, dtype=np.float32)
    chosen = [int(rng.integers(len(x)))]
    nearest = sq_distances(x, x[chosen[-1] : chosen[-1] + 1])[:, 0].astype(np.float64)
    while len(chosen) < count:
        nearest[chosen[-1]] = 0.0
        nxt = pick(nearest)
        if nxt is None:  # every remaining point coincides with a chosen one
            rest = np.setdiff1d(np.arange(len(x)), chosen)
            chosen += rng.choice(rest, count - len(chosen), replace=False).tolist()
            break
        chosen.append(int(nxt))
        np.minimum(nearest, sq_distances(x, x[nxt : nxt + 1])[:, 0], out=nearest)
    return np.asarray(chosen, dtype=np.int64)


def kmeans_pp(x: np.ndarray, count: int, seed: int) -> np.ndarray:
    """k-means++ seeding: each next point drawn with probability ∝ squared distance to the chosen."""
    rng = np.random.default_rng(seed)

    def pick(d2):
        total = d2.sum()
        return None if total <= 0 else rng.choice(len(d2), p=d2 / total)

    return _spread(x, count, rng, pick)


def farthest_point(x: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Greedy farthest-point traversal (ties: lowest index)."""
    rng = np.random.default_rng(seed)
    return _spread(x, count, rng, lambda d2: None if d2.max() <= 0 else int(np.argmax(d2)))


def choose(method: str, valid_rows: np.ndarray, count: int, seed: int, candidates: int,
           embeddings_of: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Sorted landmark rows among `valid_rows`; `embeddings_of(rows)` reads embeddings."""
    valid_rows = np.asarray(valid_rows, dtype=np.int64)
    if method == "uniform":
        return uniform(valid_rows, count, seed)
    pool = uniform(valid_rows, candidates, seed + 1)
    spread = {"kmeans++": kmeans_pp, "farthest-point": farthest_point}[method]
    return np.sort(pool[spread(embeddings_of(pool), count, seed)])
