"""Round-robin selection over target examples (Influence Distillation, RDS+).

Each round visits the target examples in a fresh random order; each takes its best not yet
selected pool row (ties: lower row), until k rows are chosen. Exact from per-column top-k lists:
when a column makes its t-th pick, every row above the pick in its ranking is already selected
(at most k−1 rows), so its top-k list always holds the pick.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True)
def _rounds(cand: np.ndarray, n_cand: np.ndarray, k: int, orders: np.ndarray, taken_rows: np.ndarray):
    """cand [C, K] rows best first (n_cand valid per column); orders [R, C] visiting order per
    round. Returns (picked rows, picking column, rounds used)."""
    n_cols = cand.shape[0]
    pointer = np.zeros(n_cols, dtype=np.int64)
    picked = np.empty(k, dtype=np.int64)
    by = np.empty(k, dtype=np.int64)
    count = 0
    rounds = 0
    for r in range(orders.shape[0]):
        if count >= k:
            break
        rounds += 1
        progressed = False
        for j in orders[r]:
            if count >= k:
                break
            p = pointer[j]
            while p < n_cand[j] and taken_rows[cand[j, p]]:
                p += 1
            pointer[j] = p
            if p < n_cand[j]:
                row = cand[j, p]
                taken_rows[row] = True
                picked[count] = row
                by[count] = j
                count += 1
                pointer[j] = p + 1
                progressed = True
        if not progressed:
            break
    return picked[:count], by[:count], rounds


def round_robin(candidates: list[np.ndarray], k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """candidates[j]: column j's rows, best first (its exact top-min(k, n) finite rows).

    Returns (selected rows in pick order, the column that picked each). The visiting order of
    round r is the r-th `rng.permutation(C)` of `np.random.default_rng(seed)`. Memory is
    O(C·k), whatever the pool size.
    """
    n_cols = len(candidates)
    if n_cols == 0 or k <= 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    rows, compact = np.unique(np.concatenate([np.asarray(c, np.int64) for c in candidates]), return_inverse=True)
    width = max(1, max(len(c) for c in candidates))
    cand = np.zeros((n_cols, width), dtype=np.int64)
    n_cand = np.zeros(n_cols, dtype=np.int64)
    start = 0
    for j, c in enumerate(candidates):
        cand[j, : len(c)] = compact[start : start + len(c)]
        n_cand[j] = len(c)
        start += len(c)
    rng = np.random.default_rng(seed)
    taken = np.zeros(len(rows), dtype=np.bool_)
    picked, by = [], []
    done = 0
    # Every productive round picks a row, so k rounds suffice; orders are drawn in blocks so
    # that memory stays O(block × C).
    while done < k:
        block = min(k - done, max(1, 65536 // n_cols))
        orders = np.stack([rng.permutation(n_cols) for _ in range(block)]).astype(np.int64)
        p, b, used = _rounds(cand, n_cand, k - sum(len(x) for x in picked), orders, taken)
        picked.append(p)
        by.append(b)
        done += block
        if sum(len(x) for x in picked) >= k or used < block:
            break
    return rows[np.concatenate(picked)], np.concatenate(by)
