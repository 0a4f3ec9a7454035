"""LESS-style scores: cosines between pool sketches and target sketches, η̄-weighted over checkpoints."""

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


def checkpoint_weights(mean_lrs: list[float] | np.ndarray) -> np.ndarray:
    """η̄ per checkpoint (its epoch's mean learning rate), renormalised to sum 1 (LESS)."""
    lrs = np.asarray(mean_lrs, dtype=np.float64)
    if lrs.ndim != 1 or len(lrs) == 0 or np.any(lrs < 0) or lrs.sum() <= 0:
        raise ValueError(f"checkpoint learning rates must be non-negative with a positive sum, got {mean_lrs}")
    return lrs / lrs.sum()


def combine_checkpoints(scores: list[np.ndarray], mean_lrs: list[float] | np.ndarray) -> np.ndarray:
    """Σ_ckpt η̄_ckpt · score_ckpt, for per-checkpoint score arrays of one shape."""
    weights = checkpoint_weights(mean_lrs)
    if len(weights) != len(scores):
        raise ValueError(f"{len(scores)} score arrays but {len(weights)} checkpoint learning rates")
    out = np.zeros_like(np.asarray(scores[0], dtype=np.float32))
    for w, s in zip(weights, scores):
        out += np.float32(w) * np.asarray(s, dtype=np.float32)
    return out
