"""Exact streaming top-k with Numba, over chunks of a score array addressed by global row offsets.

Order: higher score first; equal scores are ordered by lower global row (a stable, documented tie
rule). NaN and ±inf are never selected; they are counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numba
import numpy as np


@numba.njit(inline="always")
def _better(va, ia, vb, ib):
    return va > vb or (va == vb and ia < ib)


@numba.njit(cache=True)
def _sift_down(vals, idx, size, pos):
    # min-heap on "better": the root is the worst kept candidate
    while True:
        left = 2 * pos + 1
        if left >= size:
            return
        worst = left
        right = left + 1
        if right < size and _better(vals[worst], idx[worst], vals[right], idx[right]):
            worst = right
        if _better(vals[pos], idx[pos], vals[worst], idx[worst]):
            vals[pos], vals[worst] = vals[worst], vals[pos]
            idx[pos], idx[worst] = idx[worst], idx[pos]
            pos = worst
        else:
            return


@numba.njit(cache=True)
def _heap_block(values, lo, hi, offset, k, out_vals, out_idx):
    """Top-k of values[lo:hi] into out_* (unsorted); returns (#kept, #non-finite)."""
    size = 0
    bad = 0
    for i in range(lo, hi):
        v = values[i]
        if not np.isfinite(v):
            bad += 1
            continue
        g = offset + i
        if size < k:
            # insert and sift up
            pos = size
            out_vals[pos] = v
            out_idx[pos] = g
            size += 1
            while pos > 0:
                parent = (pos - 1) // 2
                if _better(out_vals[parent], out_idx[parent], out_vals[pos], out_idx[pos]):
                    out_vals[parent], out_vals[pos] = out_vals[pos], out_vals[parent]
                    out_idx[parent], out_idx[pos] = out_idx[pos], out_idx[parent]
                    pos = parent
                else:
                    break
        elif _better(v, g, out_vals[0], out_idx[0]):
            out_vals[0] = v
            out_idx[0] = g
            _sift_down(out_vals, out_idx, size, 0)
    return size, bad


@numba.njit(parallel=True, cache=True)
def _chunk_candidates(values, offset, k, n_blocks):
    n = values.shape[0]
    per = (n + n_blocks - 1) // n_blocks
    vals = np.empty((n_blocks, k), dtype=np.float64)
    idx = np.empty((n_blocks, k), dtype=np.int64)
    kept = np.zeros(n_blocks, dtype=np.int64)
    bad = np.zeros(n_blocks, dtype=np.int64)
    for b in numba.prange(n_blocks):
        lo = b * per
        hi = min(n, lo + per)
        if lo < hi:
            kept[b], bad[b] = _heap_block(values, lo, hi, offset, k, vals[b], idx[b])
    return vals, idx, kept, bad


def _order(vals: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return np.lexsort((idx, -vals))  # by score desc, then row asc


@dataclass
class StreamingTopK:
    """Feed chunks with their global offset; `result()` gives rows and scores, best first."""

    k: int
    vals: np.ndarray = field(default_factory=lambda: np.empty(0, np.float64))
    idx: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    non_finite: int = 0

    def push(self, values: np.ndarray, offset: int) -> None:
        values = np.ascontiguousarray(values)
        if values.size == 0:
            return
        n_blocks = max(1, min(numba.get_num_threads() * 4, values.size // max(self.k, 1024) or 1))
        vals, idx, kept, bad = _chunk_candidates(values, offset, self.k, n_blocks)
        self.non_finite += int(bad.sum())
        take_v = [self.vals] + [vals[b, : kept[b]] for b in range(n_blocks)]
        take_i = [self.idx] + [idx[b, : kept[b]] for b in range(n_blocks)]
        all_v, all_i = np.concatenate(take_v), np.concatenate(take_i)
        best = _order(all_v, all_i)[: self.k]
        self.vals, self.idx = all_v[best], all_i[best]

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        return self.idx.copy(), self.vals.copy()


def topk_stream(chunks: Iterable[tuple[int, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Top-k over (global offset, values) chunks: (rows, scores, non-finite count)."""
    acc = StreamingTopK(k)
    for offset, values in chunks:
        acc.push(values, offset)
    rows, scores = acc.result()
    return rows, scores, acc.non_finite
