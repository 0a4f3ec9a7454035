"""Exact streaming top-k with Numba, over chunks of a score array addressed by global row offsets.

Order: higher score first; equal scores are ordered by lower global row (a stable, documented tie
rule). NaN and ±inf are never selected; they are counted.

Two exact kernels, both parallel over blocks of a chunk (`prange`) with per-block candidate
buffers merged on the host, and both skipping every value that cannot beat the current k-th best
(the threshold, known once k candidates have been seen):
- small k: a bounded heap per block (k-sized);
- large k: a threshold gather — each block copies its passing values into its own region of a
  chunk-sized buffer, the host concatenates the block prefixes (a prefix sum over the counts).
Candidates accumulate in a buffer that is cut back to the exact top-k (linear-time partition)
whenever it holds 2k, so the total work is linear in the number of rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numba
import numpy as np

HEAP_MAX_SHARE = 16  # heaps only when a block is at least this many times k


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
def _heap_block(values, lo, hi, offset, k, has_thr, tv, ti, out_vals, out_idx):
    """Top-k of values[lo:hi] that beat the threshold, into out_* (unsorted): (#kept, #non-finite)."""
    size = 0
    bad = 0
    for i in range(lo, hi):
        v = values[i]
        if not np.isfinite(v):
            bad += 1
            continue
        g = offset + i
        if has_thr and not _better(v, g, tv, ti):
            continue
        if size < k:
            pos = size
            out_vals[pos] = v
            out_idx[pos] = g
            size += 1
            while pos > 0:  # sift up
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
def _heap_candidates(values, offset, k, n_blocks, has_thr, tv, ti):
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
            kept[b], bad[b] = _heap_block(values, lo, hi, offset, k, has_thr, tv, ti, vals[b], idx[b])
    return vals, idx, kept, bad


@numba.njit(parallel=True, cache=True)
def _gather_candidates(values, offset, n_blocks, has_thr, tv, ti):
    """Every finite value that beats the threshold; block b writes from its own start `b*per`."""
    n = values.shape[0]
    per = (n + n_blocks - 1) // n_blocks
    vals = np.empty(n, dtype=np.float64)
    idx = np.empty(n, dtype=np.int64)
    kept = np.zeros(n_blocks, dtype=np.int64)
    bad = np.zeros(n_blocks, dtype=np.int64)
    for b in numba.prange(n_blocks):
        lo = b * per
        hi = min(n, lo + per)
        count = 0
        nonfinite = 0
        for i in range(lo, hi):
            v = values[i]
            if not np.isfinite(v):
                nonfinite += 1
                continue
            g = offset + i
            if has_thr and not _better(v, g, tv, ti):
                continue
            vals[lo + count] = v
            idx[lo + count] = g
            count += 1
        kept[b] = count
        bad[b] = nonfinite
    return vals, idx, kept, bad, per


def exact_top(vals: np.ndarray, idx: np.ndarray, k: int) -> np.ndarray:
    """Positions of the exact top-k of (vals, idx) under the tie rule, unsorted; linear time."""
    m = len(vals)
    if m <= k:
        return np.arange(m)
    kth = np.partition(vals, m - k)[m - k]  # the k-th largest value
    above = np.flatnonzero(vals > kth)
    ties = np.flatnonzero(vals == kth)
    need = k - len(above)
    if need < len(ties):
        ties = ties[np.argpartition(idx[ties], need - 1)[:need]]  # lower rows win ties
    return np.concatenate([above, ties])


def order_best_first(vals: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return np.lexsort((idx, -vals))  # by score desc, then row asc


@dataclass
class StreamingTopK:
    """Feed chunks with their global offset; `result()` gives rows and scores, best first.

    `kernel` forces "heap" or "gather" (tests); by default heaps serve k small against the chunk.
    """

    k: int
    kernel: str = "auto"
    non_finite: int = 0
    _vals: list = field(default_factory=list)
    _idx: list = field(default_factory=list)
    _buffered: int = 0
    _threshold: tuple[float, int] | None = None  # the k-th best (value, row) once known

    def __post_init__(self):
        if self.k < 1:
            raise ValueError(f"k must be ≥ 1, got {self.k}")

    def push(self, values: np.ndarray, offset: int) -> None:
        values = np.ascontiguousarray(values)
        if values.ndim != 1:
            raise ValueError(f"top-k takes 1-D chunks, got shape {values.shape}")
        n = values.size
        if n == 0:
            return
        if values.dtype not in (np.float32, np.float64):
            values = values.astype(np.float64)
        has_thr = self._threshold is not None
        tv, ti = self._threshold if has_thr else (0.0, 0)
        n_blocks = max(1, min(numba.get_num_threads() * 4, n // 1024 or 1))
        use_heap = self.kernel == "heap" or (self.kernel == "auto" and n // n_blocks >= HEAP_MAX_SHARE * self.k)
        if use_heap:
            vals, idx, kept, bad = _heap_candidates(values, offset, self.k, n_blocks, has_thr, tv, ti)
            parts = [(vals[b, : kept[b]], idx[b, : kept[b]]) for b in range(n_blocks) if kept[b]]
        else:
            vals, idx, kept, bad, per = _gather_candidates(values, offset, n_blocks, has_thr, tv, ti)
            starts = np.arange(n_blocks) * per
            parts = [(vals[s : s + c], idx[s : s + c]) for s, c in zip(starts, kept) if c]
        self.non_finite += int(bad.sum())
        for v, i in parts:
            self._vals.append(v.copy() if not use_heap else v)
            self._idx.append(i.copy() if not use_heap else i)
            self._buffered += len(v)
        # Cut back at 2k (amortised linear); the first time as soon as k exist, to get a threshold.
        if self._buffered >= 2 * self.k or (self._threshold is None and self._buffered > self.k):
            self._reduce()

    def _reduce(self) -> None:
        vals = np.concatenate(self._vals) if len(self._vals) != 1 else self._vals[0]
        idx = np.concatenate(self._idx) if len(self._idx) != 1 else self._idx[0]
        keep = exact_top(vals, idx, self.k)
        vals, idx = vals[keep], idx[keep]
        self._vals, self._idx, self._buffered = [vals], [idx], len(vals)
        if len(vals) == self.k:
            lowest = np.flatnonzero(vals == vals.min())
            worst = lowest[np.argmax(idx[lowest])]  # lowest score, then highest row
            self._threshold = (float(vals[worst]), int(idx[worst]))

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        if not self._vals:
            return np.empty(0, np.int64), np.empty(0, np.float64)
        self._reduce()
        vals, idx = self._vals[0], self._idx[0]
        order = order_best_first(vals, idx)
        return idx[order].astype(np.int64), vals[order].astype(np.float64)


def topk_stream(chunks: Iterable[tuple[int, np.ndarray]], k: int, kernel: str = "auto") -> tuple[np.ndarray, np.ndarray, int]:
    """Top-k over (global offset, values) chunks: (rows, scores, non-finite count)."""
    acc = StreamingTopK(k, kernel)
    for offset, values in chunks:
        acc.push(values, offset)
    rows, scores = acc.result()
    return rows, scores, acc.non_finite
