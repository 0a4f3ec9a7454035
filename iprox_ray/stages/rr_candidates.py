"""Round-robin candidates: each target example's best k pool rows, kept while scoring.

Round-robin picks k rows in all, so no column needs more than its best k (influence/roundrobin.py):
the score stage streams every [rows, C] block through a per-column top-k and stores only these
C × k candidates (`score_candidates/<target>`: `rows` int64 and `scores` float32, both [C, k],
best first, row −1 / NaN past a column's finite rows), never the rows × C score matrix.
"""

from __future__ import annotations

import numpy as np

from iprox_ray.influence.column_topk import BYTES_PER_CANDIDATE, candidate_bytes
from iprox_ray.spec import SpecError
from iprox_ray.spec.selection import SelectionSpec
from iprox_ray.store import driver_arrays
from iprox_ray.store.digest import read_checked

WRITE_BYTES = 64 << 20  # columns written per batch: at most this much of the [C, k] matrices


def check_round_robin_budget(n_columns: int, k: int, memory_gib: float, estimated: bool = False) -> None:
    """Refuse a round-robin whose C × k candidates would not fit: at preflight from the checked
    rows (`estimated`, before any sketching), and again before scoring with the exact counts."""
    need = candidate_bytes(n_columns, k)
    if need > memory_gib * (1 << 30):
        basis = " (estimated from the inputs' usable rows before sketching)" if estimated else ""
        raise SpecError(
            f"round-robin over {n_columns} target examples keeps each one's best k={k} pool rows{basis}: "
            f"{n_columns} × {k} × {BYTES_PER_CANDIDATE} B = {need / (1 << 30):.1f} GiB, over "
            f"selection.round_robin_memory_gib = {memory_gib:g}. Lower selection.k or selection.fraction, "
            f"use fewer target examples, use selection.strategy = 'topk' (one aggregated score), or raise "
            f"selection.round_robin_memory_gib to at least {need / (1 << 30):.1f} if the driver has that memory")


def check_round_robin_estimate(selection: SelectionSpec, target_rows: int, pool_rows: int, pool_share: float) -> None:
    """The check before any sketching (preflight, `iprox-ray plan`): C from the target rows that
    parse, k from the pool's rows times the share of its checked rows that parse."""
    if target_rows > 1:
        k = selection.size_for(max(1, round(pool_rows * pool_share)))
        check_round_robin_budget(target_rows, k, selection.round_robin_memory_gib, estimated=True)


def write_candidates(root, path: str, rows: list[np.ndarray], scores: list[np.ndarray], k: int,
                     labels: list[str]) -> None:
    """Store the per-column candidate lists (best first) as [C, k] arrays, a batch of columns at a time."""
    if path in root:
        del root[path]
    root.create_group(path)
    n_cols = len(rows)
    step = max(1, min(n_cols, WRITE_BYTES // (8 * k)))
    row_arr = driver_arrays.create(root, f"{path}/rows", shape=(n_cols, k), chunks=(step, k), dtype="int64",
                                   fill_value=-1)
    score_arr = driver_arrays.create(root, f"{path}/scores", shape=(n_cols, k), chunks=(step, k), dtype="float32",
                                     fill_value=np.nan)
    for lo in range(0, n_cols, step):
        hi = min(n_cols, lo + step)
        r = np.full((hi - lo, k), -1, np.int64)
        s = np.full((hi - lo, k), np.nan, np.float32)
        for j in range(lo, hi):
            r[j - lo, : len(rows[j])] = rows[j]
            s[j - lo, : len(scores[j])] = scores[j]
        row_arr[lo:hi] = r
        score_arr[lo:hi] = s
    root[path].attrs.update({"columns": "examples", "labels": list(labels), "k": int(k)})


def read_candidates(group, k: int) -> tuple[list[np.ndarray], list[str]]:
    """(each column's best rows, best first, at most k; column labels), read a batch at a time."""
    stored_k = int(group.attrs["k"])
    if stored_k < k:
        raise ValueError(f"{group.path} holds {stored_k} candidates per target example, the selection needs {k}: "
                         "rescore the target")
    arr = group["rows"]
    n_cols = arr.shape[0]
    step = max(1, min(n_cols, WRITE_BYTES // (8 * stored_k)))
    out = []
    for lo in range(0, n_cols, step):
        for column in read_checked(arr, slice(lo, lo + step)):
            out.append(column[:k][column[:k] >= 0])
    return out, list(group.attrs.get("labels", []))
