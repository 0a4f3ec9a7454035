"""LESS-style scores: cosines between pool sketches and the target direction (the η̄-weighted sum over
checkpoints is methods/scorers.SketchScorer)."""

from __future__ import annotations

import numpy as np


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32); zero rows become NaN so they can never be chosen."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return x / np.where(norms > 0, norms, np.nan)


def target_direction(target_sketches: np.ndarray) -> np.ndarray:
    """Mean of the unit target rows: the cosine to it is the mean cosine over target examples."""
    units = unit_rows(target_sketches)
    units = units[np.isfinite(units).all(axis=1)]
    if len(units) == 0:
        raise ValueError("no usable target example (all quarantined or zero gradients)")
    return units.mean(axis=0)


def cosine_scores(pool_block: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Mean cosine of each pool row to the target examples (direction [D], or columns [D, C])."""
    return unit_rows(pool_block) @ direction.astype(np.float32)
