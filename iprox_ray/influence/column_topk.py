"""Exact streaming top-k of every column of [rows, C] score blocks at once (round-robin candidates).

Round-robin picks at most k rows in all, so a column never needs more than its best k rows (see
influence/roundrobin.py): the candidates are C lists of k, whatever the pool size. Each entry is
one uint64 key whose ascending order is the selection order (topk.order_key: higher score
first, −0.0 and 0.0 equal, ties to the lower row), the tie rule of influence/topk.py. A column's buffer
takes keys below its threshold (its current k-th best) until it holds 2k, then is sorted and cut
back to k (amortised O(log k) per accepted entry); columns run in parallel (prange).
"""

from __future__ import annotations

import numba
import numpy as np

from iprox_ray.influence.topk import decode_keys, order_key

NEVER = np.uint64(0xFFFFFFFFFFFFFFFF)  # the key of a non-finite score: never a candidate
MAX_ROWS = 1 << 32  # rows must fit the key's low half
# Memory per (column, candidate): the 2k-key buffer while scoring (16 bytes); rows, the compact
# index, the dense candidate matrix and sort scratch while round-robin picks (~32 bytes).
BYTES_PER_CANDIDATE = 48


def candidate_bytes(n_columns: int, k: int) -> int:
    """What C per-column lists of k candidates cost in memory (the larger of scoring and picking)."""
    return int(n_columns) * int(k) * BYTES_PER_CANDIDATE


@numba.njit(parallel=True, cache=True)
def _push(bits, finite, offset, k, buf, size, threshold):
    """Merge block rows (float32 bits [S, C], finite mask) at global row offset into the buffers."""
    n_rows, n_cols = bits.shape
    for j in numba.prange(n_cols):
        for i in range(n_rows):
            if not finite[i, j]:
                continue
            key = order_key(bits[i, j], offset + i)
            if key >= threshold[j]:
                continue
            buf[j, size[j]] = key
            size[j] += 1
            if size[j] == 2 * k:
                buf[j, :] = np.sort(buf[j, :])
                size[j] = k
                threshold[j] = buf[j, k - 1]


class ColumnTopK:
    """Push [rows, C] float score blocks with their global row offset; `result()` gives each
    column's best min(k, finite) rows (best first) and their scores. Memory: 16·C·k bytes."""

    def __init__(self, n_columns: int, k: int):
        if k < 1 or n_columns < 1:
            raise ValueError(f"need k ≥ 1 and at least one column, got k={k}, columns={n_columns}")
        self.k = int(k)
        self.buf = np.empty((n_columns, 2 * self.k), np.uint64)
        self.size = np.zeros(n_columns, np.int64)
        self.threshold = np.full(n_columns, NEVER, np.uint64)

    def push(self, block: np.ndarray, offset: int) -> None:
        values = np.ascontiguousarray(block, dtype=np.float32) + np.float32(0.0)  # −0.0 -> 0.0
        if values.ndim != 2 or values.shape[1] != self.buf.shape[0]:
            raise ValueError(f"expected a [rows, {self.buf.shape[0]}] block, got {values.shape}")
        if offset < 0 or offset + len(values) > MAX_ROWS:
            raise ValueError(f"rows {offset}..{offset + len(values)} do not fit below {MAX_ROWS}")
        _push(values.view(np.uint32), np.isfinite(values), int(offset), self.k, self.buf, self.size, self.threshold)

    def result(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        rows, scores = [], []
        for j in range(self.buf.shape[0]):
            best = np.sort(self.buf[j, : self.size[j]])[: self.k]
            r, bits = decode_keys(best)
            rows.append(r)
            scores.append(bits.view(np.float32))
        return rows, scores
