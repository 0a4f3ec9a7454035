"""How a unit sketch row is kept on disk: float16, or int8 with one float32 scale per row.

int8: q = round(u / s), s = max|u| / 127, so u ≈ s·q with an error of at most s/2 per entry. A
sketch row is a sum of many random projections, so its entries are near-Gaussian and the max is
~4–5 standard deviations: the rounding error is ~1 % of an entry's spread, far below the
projection's own error (bench/RESULTS.md, "sketch frontier"). Scores need no float copy: a dot
product of the int8 row with a float vector, times s (influence/int8_scores.py).
"""

from __future__ import annotations

import numpy as np

SKETCH_DTYPES = ("float16", "int8")
INT8_LEVELS = 127
NORM_BYTES = 4  # the float32 row norm every sketch row keeps beside it (`sketch_norm`)


def quantize_rows(unit: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(payload [B, D] in `dtype`, per-row float32 scale [B] for int8, else None)."""
    unit = np.asarray(unit, dtype=np.float32)
    if dtype == "float32":
        return unit, None
    if dtype == "float16":
        return unit.astype(np.float16), None
    if dtype != "int8":
        raise ValueError(f"unknown sketch dtype {dtype!r} (one of {', '.join(SKETCH_DTYPES)})")
    peak = np.abs(unit).max(axis=1) if unit.shape[1] else np.zeros(len(unit), np.float32)
    scale = np.where(peak > 0, peak / INT8_LEVELS, 1.0).astype(np.float32)
    q = np.rint(unit / scale[:, None])
    return np.clip(q, -INT8_LEVELS, INT8_LEVELS).astype(np.int8), scale


def dequantize_rows(payload: np.ndarray, scale: np.ndarray | None) -> np.ndarray:
    """The float32 rows a payload stands for (tests and small reads; scoring avoids this copy)."""
    rows = np.asarray(payload, dtype=np.float32)
    return rows if scale is None else rows * np.asarray(scale, dtype=np.float32)[:, None]


def row_bytes(dim: int, dtype: str) -> int:
    """Bytes a row costs in the store: the sketch, its norm, and the int8 scale."""
    item = {"float32": 4, "float16": 2, "int8": 1}[dtype]
    return dim * item + NORM_BYTES + (4 if dtype == "int8" else 0)
