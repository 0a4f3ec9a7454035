"""Exact streaming top-k with Numba, over chunks of a score array addressed by global row offsets.

Order: higher score first; equal scores are ordered by lower global row (a stable, documented tie
rule). NaN and ±inf are never selected; they are counted.

How it stays close to one plain pass over the data, for any k:
- A threshold, the current k-th best (score, row), rules out almost every value once known. The
  first one comes from the first big chunk's strided 1/8 sample (its k-th best is safe: k values
  at least as good exist), later ones from the candidates.
- Threshold / count / prefix-sum gather, in parallel over blocks of a chunk (`prange`). Each block
  tests 32 values at a time with a vectorised any-pass check that also counts non-finite values,
  so a chunk with few passing values costs about one plain pass; a group with a hit writes its
  passing positions into the block's region of a reused scratch buffer (visiting the set bits of
  its 32-bit pass mask when few values pass, branch-free when many do, chosen from the previous
  chunk's pass rate). Prefix sums
  of the block counts then place every block's (score, row) candidates side by side, in parallel.
- Candidates accumulate until there are 2k, then are cut back to the exact top-k by a linear-time
  partition, which also raises the threshold. Total work is linear in the rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numba
import numpy as np
from numba.cpython.unsafe.numbers import trailing_zeros

LANES = 32  # values per vectorised any-pass check
DENSE_PASS_RATE = 0.05  # above this share of passing values the branch-free write is faster


@numba.njit(cache=True, inline="always")
def _passes(v, i, tv, ti, offset, inf):
    """Finite and better than the threshold (tv, ti): higher score, or equal with a lower row."""
    return ((v > tv) | ((v == tv) & (offset + i <= ti))) & (abs(v) < inf)


@numba.njit(cache=True)
def _scan_block(values, tv, ti, offset, inf, dense, out, base):
    """Positions (+ base) of the finite values that beat (tv, ti), written to out; values is one
    block, indexed from 0 (provably non-negative indices let LLVM vectorise the check; offset is
    the block's global row). Returns (passing count, non-finite count)."""
    at = 0
    nonfinite = 0
    n = values.size
    full = n - n % LANES
    for start in range(0, full, LANES):
        mask = np.uint32(0)
        bad = np.int32(0)
        for j in range(LANES):  # fixed trip count, no stores, no branches: vectorised
            v = values[start + j]
            mask |= np.uint32(v >= tv) << np.uint32(j)
            bad += np.int32(not (abs(v) < inf))
        nonfinite += bad
        if mask == 0:
            continue
        if dense:  # branch-free: every position is written, the cursor moves if it passes
            for i in range(start, start + LANES):
                out[at] = base + i  # at <= i: never past the block's region
                at += _passes(values[i], i, tv, ti, offset, inf)
        else:  # few pass: visit the set bits only
            while mask:
                i = start + trailing_zeros(mask)
                if _passes(values[i], i, tv, ti, offset, inf):
                    out[at] = base + i
                    at += 1
                mask &= mask - np.uint32(1)
    for i in range(full, n):
        v = values[i]
        nonfinite += not (abs(v) < inf)
        out[at] = base + i
        at += _passes(v, i, tv, ti, offset, inf)
    return at, nonfinite


@numba.njit(parallel=True, cache=True)
def _scan_chunk(values, n_blocks, tv, ti, offset, inf, dense, out):
    """Per-block candidates under prange: block b fills out[b*per:] with chunk positions.
    Returns (count per block, non-finite count, per)."""
    n = values.shape[0]
    per = (n + n_blocks - 1) // n_blocks
    kept = np.zeros(n_blocks, dtype=np.int64)
    bad = np.zeros(n_blocks, dtype=np.int64)
    for b in numba.prange(n_blocks):
        lo, hi = b * per, min(n, (b + 1) * per)
        kept[b], bad[b] = _scan_block(values[lo:hi], tv, ti, offset + lo, inf, dense, out[lo:hi], lo)
    return kept, bad.sum(), per


@numba.njit(parallel=True, cache=True)
def _gather(values, positions, kept, per, offset, vals, idx, at):
    """Append every block's candidates (score, global row) to vals/idx from `at`, side by side."""
    starts = np.empty(kept.size, dtype=np.int64)
    total = at
    for b in range(kept.size):
        starts[b] = total
        total += kept[b]
    for b in numba.prange(kept.size):
        src, dst = b * per, starts[b]
        for t in range(kept[b]):
            p = positions[src + t]
            vals[dst + t] = values[p]
            idx[dst + t] = offset + p
    return total


@numba.njit(cache=True)
def _compact_above(vals, idx, m, kth, ties):
    """Move the entries with value > kth to the front (stable, in place, branch-free) and the rows
    of those equal to kth into `ties` (a branch: ties are few in real scores); return both counts."""
    count = 0
    n_ties = 0
    for i in range(m):
        v = vals[i]
        r = idx[i]
        if v == kth:  # few ties: well predicted
            ties[n_ties] = r
            n_ties += 1
        vals[count] = v
        idx[count] = r
        count += v > kth
    return count, n_ties


@numba.njit(cache=True, inline="always")
def order_key(bits, row):
    """One uint64 whose ascending order is score descending, then row ascending: the float32
    score's bits made order-preserving and inverted in the high half, the row below."""
    b = np.uint64(bits)
    up = (~b & np.uint64(0xFFFFFFFF)) if b >> np.uint64(31) else (b | np.uint64(1 << 31))
    return ((np.uint64(0xFFFFFFFF) - up) << np.uint64(32)) | np.uint64(row)


@numba.njit(cache=True)
def _order_keys(bits, idx):
    keys = np.empty(bits.size, dtype=np.uint64)
    for i in range(bits.size):
        keys[i] = order_key(bits[i], idx[i])
    return keys


@numba.njit(cache=True)
def decode_keys(keys):
    """Inverse of order_key: (rows, float32 score bits)."""
    rows = np.empty(keys.size, dtype=np.int64)
    bits = np.empty(keys.size, dtype=np.uint32)
    for i in range(keys.size):
        rows[i] = np.int64(keys[i] & np.uint64(0xFFFFFFFF))
        up = np.uint64(0xFFFFFFFF) - (keys[i] >> np.uint64(32))
        bits[i] = np.uint32((up & np.uint64(0x7FFFFFFF)) if up >> np.uint64(31) else (~up & np.uint64(0xFFFFFFFF)))
    return rows, bits


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
        # Sorting one 64-bit key is much faster than a two-key lexsort.
        rows, bits = decode_keys(np.sort(_order_keys(as32.view(np.uint32), idx)))
        return rows, bits.view(np.float32).astype(np.float64)
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

    Memory: a candidate buffer of ~2k + (passing rows of one chunk) entries, 24 bytes each with
    float32 scores (score, row, a partition copy, a tie slot), and a chunk-sized scratch buffer.
    """

    k: int
    non_finite: int = 0
    _vals: np.ndarray = field(default_factory=lambda: np.empty(0, np.float32))
    _idx: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    _part: np.ndarray = field(default_factory=lambda: np.empty(0, np.float32))
    _ties: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
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
        if self._scratch.size < n:
            self._scratch = np.empty(n, np.int32)  # reused across chunks: no page faults
        n_blocks = max(1, min(numba.get_num_threads() * 4, n // 4096 or 1))
        dense = self._pass_rate > DENSE_PASS_RATE  # many passed last time: go branch-free
        kept, bad, per = _scan_chunk(values, n_blocks, dtype(tv), ti, offset, dtype(np.inf), dense, self._scratch)
        self.non_finite += int(bad)
        total = int(kept.sum())
        self._pass_rate = total / n
        if total == 0:
            return
        self._reserve(self._size + total, values.dtype)
        self._size = _gather(values, self._scratch, kept, per, offset, self._vals, self._idx, self._size)
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
            self._vals, self._idx = vals, idx
            self._part, self._ties = np.empty(grown, dtype), np.empty(grown, np.int64)

    def _reduce(self) -> None:
        """Cut the candidates back to the exact top-k in place and raise the threshold to the k-th."""
        m, k = self._size, self.k
        if m <= k:
            return
        part = self._part[:m]
        part[:] = self._vals[:m]
        part.partition(m - k)
        kth = part[m - k]  # the k-th largest value
        above, n_ties = _compact_above(self._vals, self._idx, m, kth, self._ties)
        need = k - above  # ≥ 1: kth itself is among the top k
        ties = self._ties[:n_ties]
        if need < n_ties:
            ties.partition(need - 1)  # lower rows win ties
        self._vals[above:k] = kth
        self._idx[above:k] = ties[:need]
        self._size = k
        self._threshold = (float(kth), int(ties[:need].max()))

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
