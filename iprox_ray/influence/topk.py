"""Exact streaming top-k with Numba, over chunks of a score array addressed by global row offsets.

Order: higher score first; equal scores are ordered by lower global row (a stable, documented tie
rule). NaN and ±inf are never selected; they are counted.

How it stays close to one plain pass over the data, for any k:
- A threshold, the current k-th best (score, row), rules out almost every value once known. The
  first one comes from the first big chunk's strided 1/8 sample (its k-th best is safe: k values
  at least as good exist), later ones from the candidates.
- Threshold / count / prefix-sum gather, in one pass, in parallel over blocks of a chunk
  (`prange`): each block writes the positions of its values ≥ threshold into its own region of a
  reused chunk-sized scratch buffer and counts them; prefix sums of the counts place the blocks'
  candidates side by side. Branchy when few values pass (well predicted), branch-free when many
  do (chosen from the previous chunk's pass rate). Non-finite values are counted by numpy.
- Candidates accumulate until there are 2k, then are cut back to the exact top-k by a linear-time
  partition, which also raises the threshold. Total work is linear in the rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numba
import numpy as np

DENSE_PASS_RATE = 0.05  # above this share of passing values the branch-free scan is faster


@numba.njit(cache=True)
def _scan_block(values, lo, hi, tv, inf, out):
    """Chunk positions of the finite values ≥ tv in values[lo:hi], written to out[lo:]. Passing is
    rare once a threshold is known, so the branch is well predicted. Returns the count."""
    count = 0
    for i in range(lo, hi):
        v = values[i]
        if v >= tv:
            out[lo + count] = i
            count += abs(v) < inf
    return count


@numba.njit(cache=True)
def _scan_block_dense(values, lo, hi, tv, inf, out):
    """As _scan_block, branch-free (every position is written, the cursor advances if it passes):
    faster when many values pass. Needs one spare slot after the block's region."""
    count = 0
    for i in range(lo, hi):
        v = values[i]
        out[lo + count] = i
        count += (v >= tv) & (abs(v) < inf)
    return count


@numba.njit(parallel=True, cache=True)
def _scan_chunk(values, n_blocks, tv, inf, dense, out):
    """Per-block candidates under prange: block b fills out[b*per:] (out holds n+1 slots) with
    chunk positions. Returns (count per block, per)."""
    n = values.shape[0]
    per = (n + n_blocks - 1) // n_blocks
    kept = np.zeros(n_blocks, dtype=np.int64)
    for b in numba.prange(n_blocks):
        lo, hi = b * per, min(n, (b + 1) * per)
        if dense:
            kept[b] = _scan_block_dense(values, lo, hi, tv, inf, out)
        else:
            kept[b] = _scan_block(values, lo, hi, tv, inf, out)
    return kept, per


@numba.njit(cache=True)
def _compact_above(vals, idx, m, kth):
    """Move the entries with value > kth to the front (stable, in place, branch-free: about half
    of them move); return their count and the rows of the entries equal to kth."""
    n_ties = 0
    for i in range(m):
        n_ties += vals[i] == kth
    ties = np.empty(n_ties, dtype=np.int64)
    t = 0
    for i in range(m):
        if vals[i] == kth:  # rare: well predicted
            ties[t] = idx[i]
            t += 1
    count = 0
    for i in range(m):
        v = vals[i]
        r = idx[i]
        vals[count] = v
        idx[count] = r
        count += v > kth
    return count, ties


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


def sort_best_first(vals: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, scores) by score descending, then row ascending."""
    as32 = vals.astype(np.float32) + np.float32(0.0)  # -0.0 -> +0.0: they tie, as everywhere else
    if len(vals) > 4096 and np.array_equal(as32, vals) and idx.min() >= 0 and idx.max() < 1 << 32:
        # Sorting one 64-bit key is much faster than a two-key lexsort: the score's bits made
        # order-preserving and inverted (descending) in the high half, the row in the low half.
        bits = as32.view(np.uint32).astype(np.uint64)
        ordered = np.where(bits >> np.uint64(31), ~bits, bits | np.uint64(1 << 31)) & np.uint64(0xFFFFFFFF)
        key = np.sort(((np.uint64(0xFFFFFFFF) - ordered) << np.uint64(32)) | idx.astype(np.uint64))
        rows = (key & np.uint64(0xFFFFFFFF)).astype(np.int64)
        high = np.uint64(0xFFFFFFFF) - (key >> np.uint64(32))
        bits = np.where(high >> np.uint64(31), high & np.uint64(0x7FFFFFFF), ~high & np.uint64(0xFFFFFFFF))
        return rows, bits.astype(np.uint32).view(np.float32).astype(np.float64)
    order = np.lexsort((idx, -vals))
    return idx[order].astype(np.int64), vals[order].astype(np.float64)


def worst_kept(vals: np.ndarray, idx: np.ndarray) -> tuple[float, int]:
    """The last of (vals, idx) under the tie rule: lowest score, then highest row."""
    lowest = np.flatnonzero(vals == vals.min())
    worst = lowest[np.argmax(idx[lowest])]
    return float(vals[worst]), int(idx[worst])


def sampled_threshold(values: np.ndarray, offset: int, k: int, stride: int = 8) -> tuple[float, int] | None:
    """The k-th best of a strided sample: safe as a threshold (k values at least as good exist)."""
    sample = values[::stride]
    finite = np.flatnonzero(np.isfinite(sample))
    if len(finite) < k:
        return None
    vals = sample[finite].astype(np.float64)
    rows = offset + finite.astype(np.int64) * stride
    keep = exact_top(vals, rows, k)
    return worst_kept(vals[keep], rows[keep])


@dataclass
class StreamingTopK:
    """Feed chunks with their global offset; `result()` gives rows and scores, best first.

    Memory: a candidate buffer of ~2k + (passing rows of one chunk) entries and a chunk-sized
    scratch buffer, 16 bytes per entry.
    """

    k: int
    non_finite: int = 0
    _vals: np.ndarray = field(default_factory=lambda: np.empty(0, np.float32))
    _part: np.ndarray = field(default_factory=lambda: np.empty(0, np.float32))
    _idx: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    _size: int = 0  # live candidates at the front of _vals/_idx
    _threshold: tuple[float, int] | None = None  # the k-th best (value, row) once known
    _scratch: np.ndarray = field(default_factory=lambda: np.empty(0, np.int32))
    _pass_rate: float = 1.0

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
        if self._threshold is None and n >= 8 * self.k:
            self._threshold = sampled_threshold(values, offset, self.k)
        # Without a threshold yet every finite value passes (tv = -inf, ti beyond any row).
        tv, ti = self._threshold if self._threshold is not None else (-np.inf, np.iinfo(np.int64).max)
        if values.dtype == np.float32 and float(np.float32(tv)) != tv:
            values = values.astype(np.float64)  # compare in a type that holds the threshold exactly
        dtype = values.dtype.type
        if self._scratch.size < n + 1:
            self._scratch = np.empty(n + 1, np.int32)  # reused across chunks: no page faults
        n_blocks = max(1, min(numba.get_num_threads() * 4, n // 4096 or 1))
        dense = self._pass_rate > DENSE_PASS_RATE  # many values passed last time: go branch-free
        kept, per = _scan_chunk(values, n_blocks, dtype(tv), dtype(np.inf), dense, self._scratch)
        self.non_finite += n - int(np.count_nonzero(np.isfinite(values)))
        total = int(kept.sum())
        self._pass_rate = total / n
        if total == 0:
            return
        # Prefix sums of the block counts place each block's candidates side by side.
        pos = np.concatenate([self._scratch[b * per : b * per + c] for b, c in enumerate(kept.tolist()) if c])
        vals = values[pos]
        rows = pos.astype(np.int64) + offset
        if self._threshold is not None:  # a value equal to the threshold passes only with a lower row
            keep = (vals > tv) | (rows <= ti)
            if not keep.all():
                vals, rows = vals[keep], rows[keep]
        self._reserve(self._size + len(vals), values.dtype)
        self._vals[self._size : self._size + len(vals)] = vals
        self._idx[self._size : self._size + len(vals)] = rows
        self._size += len(vals)
        # Cut back at 2k (amortised linear); the first time as soon as k exist, to get a threshold.
        if self._size >= 2 * self.k or (self._threshold is None and self._size > self.k):
            self._reduce()

    def _reserve(self, capacity: int, dtype: np.dtype) -> None:
        """Room for `capacity` candidates of `dtype` (float32 scores stay float32)."""
        dtype = np.promote_types(self._vals.dtype, dtype) if self._size else np.dtype(dtype)
        if capacity > self._vals.size or dtype != self._vals.dtype:
            grown = max(capacity, 2 * self.k + 1, int(self._vals.size * 1.5))
            vals, idx = np.empty(grown, dtype), np.empty(grown, np.int64)
            vals[: self._size], idx[: self._size] = self._vals[: self._size], self._idx[: self._size]
            self._vals, self._idx, self._part = vals, idx, np.empty(grown, dtype)

    def _reduce(self) -> None:
        """Cut the candidates back to the exact top-k, in place (no allocation but the ties')."""
        m, k = self._size, self.k
        if m > k:
            part = self._part[:m]
            part[:] = self._vals[:m]
            part.partition(m - k)
            kth = part[m - k]  # the k-th largest value
            above, tie_rows = _compact_above(self._vals, self._idx, m, kth)
            need = k - above
            if need < len(tie_rows):
                tie_rows = tie_rows[np.argpartition(tie_rows, need - 1)[:need]]  # lower rows win ties
            self._vals[above : above + need] = kth
            self._idx[above : above + need] = tie_rows
            self._size = k
        if self._size == self.k:
            self._threshold = worst_kept(self._vals[: self._size], self._idx[: self._size])

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        if self._size == 0:
            return np.empty(0, np.int64), np.empty(0, np.float64)
        self._reduce()
        return sort_best_first(self._vals[: self._size], self._idx[: self._size])


def topk_stream(chunks: Iterable[tuple[int, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Top-k over (global offset, values) chunks: (rows, scores, non-finite count)."""
    acc = StreamingTopK(k)
    for offset, values in chunks:
        acc.push(values, offset)
    rows, scores = acc.result()
    return rows, scores, acc.non_finite
