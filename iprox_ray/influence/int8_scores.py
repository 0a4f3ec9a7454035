"""Scores of stored sketch rows against target rows, reading int8 rows as they are on disk.

A stored row is a unit sketch u kept as float16, or as int8 q with u ≈ s·q (store/quantize.py).
LESS scores are cosines, u·t / ‖u‖ = q·t / ‖q‖ (the scale cancels); TracIn scores are inner
products of the raw sketches, ‖g‖ · s · q·t. For int8 the kernel reads the int8 row once and
forms both q·t and ‖q‖² (exactly, in integers) without a float copy of the block: the store is
read at disk speed, not converted.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from iprox_ray.influence.less import unit_rows


@njit(parallel=True, cache=True, fastmath=True, nogil=True)  # nogil: the next shards are read meanwhile
def _int8_dots(q: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(q @ t.T as float32 [n, c], ‖q_i‖² as int64 [n]) for q int8 [n, d], t float32 [c, d], c ≥ 1.
    ‖q_i‖² is summed in int32 beside the first column's dot product (one pass over the row): exact
    while d · 127² < 2³¹, i.e. d < 133,000 (row_scores checks)."""
    n, d = q.shape
    c = t.shape[0]
    out = np.zeros((n, c), dtype=np.float32)
    squares = np.zeros(n, dtype=np.int64)
    for i in prange(n):
        row = q[i]
        first = t[0]
        total = np.int32(0)
        acc = np.float32(0.0)
        for k in range(d):
            v = row[k]
            total += np.int32(v) * np.int32(v)
            acc += np.float32(v) * first[k]
        squares[i] = total
        out[i, 0] = acc
        for j in range(1, c):
            tj = t[j]
            acc = np.float32(0.0)
            for k in range(d):
                acc += np.float32(row[k]) * tj[k]
            out[i, j] = acc
    return out, squares


INT32_EXACT_DIM = (2**31 - 1) // (127 * 127)  # widest row whose ‖q‖² fits int32


def row_scores(payload: np.ndarray, scale: np.ndarray | None, targets: np.ndarray,
               norms: np.ndarray | None = None) -> np.ndarray:
    """[n, C] scores of stored rows against target rows [C, D]: cosines (norms None, LESS) or inner
    products of the raw sketches unit row × norm (norms given, TracIn). A zero row has no cosine:
    NaN (never selected), as `less.unit_rows` gives."""
    targets = np.ascontiguousarray(targets, dtype=np.float32)
    if payload.dtype != np.int8:
        units = payload.astype(np.float32)
        feats = unit_rows(units) if norms is None else units * norms[:, None]
        return feats @ targets.T
    if len(payload) == 0 or len(targets) == 0:
        return np.zeros((len(payload), len(targets)), dtype=np.float32)
    if payload.shape[1] > INT32_EXACT_DIM:
        raise ValueError(f"int8 rows of {payload.shape[1]:,} columns: the kernel sums ‖q‖² in int32, exact "
                         f"up to {INT32_EXACT_DIM:,}")
    dots, squares = _int8_dots(np.ascontiguousarray(payload), targets)
    if norms is None:
        length = np.sqrt(squares.astype(np.float64))
        return (dots / np.where(length > 0, length, np.nan)[:, None]).astype(np.float32)
    return dots * (np.asarray(scale, dtype=np.float32) * norms)[:, None]
