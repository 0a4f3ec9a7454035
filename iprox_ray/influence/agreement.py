"""Rank agreement of two score vectors: Spearman, Kendall tau-b, top-share overlap."""

from __future__ import annotations

import numpy as np


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties sharing their mean rank."""
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    ranks = np.empty(len(x), dtype=np.float64)
    boundaries = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1], True])
    for lo, hi in zip(boundaries[:-1], boundaries[1:]):
        ranks[order[lo:hi]] = (lo + hi + 1) / 2.0
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(average_ranks(a), average_ranks(b))[0, 1])


def kendall_tau_b(a: np.ndarray, b: np.ndarray, block: int = 512) -> float:
    """Kendall's tau-b by blocked pair counting (O(n²) time, O(block·n) memory)."""
    n = len(a)
    concordant = discordant = ties_a = ties_b = 0
    for start in range(0, n, block):
        da = np.sign(a[start : start + block, None] - a[None, :])
        db = np.sign(b[start : start + block, None] - b[None, :])
        upper = np.arange(start, min(n, start + block))[:, None] < np.arange(n)[None, :]
        prod = (da * db)[upper]
        concordant += int((prod > 0).sum())
        discordant += int((prod < 0).sum())
        ties_a += int(((da == 0) & (db != 0))[upper].sum())
        ties_b += int(((db == 0) & (da != 0))[upper].sum())
    denom = np.sqrt((concordant + discordant + ties_a) * (concordant + discordant + ties_b))
    return float((concordant - discordant) / denom) if denom else float("nan")


def top_overlap(a: np.ndarray, b: np.ndarray, fraction: float) -> tuple[float, int, int]:
    """Share of a's top `fraction` that is also in b's (ties broken by lower index)."""
    k = max(1, round(fraction * len(a)))
    top_a = set(np.lexsort((np.arange(len(a)), -a))[:k].tolist())
    top_b = set(np.lexsort((np.arange(len(b)), -b))[:k].tolist())
    hits = len(top_a & top_b)
    return hits / k, hits, k


def correlations(a: np.ndarray, b: np.ndarray) -> dict:
    return {"pearson": float(np.corrcoef(a, b)[0, 1]), "spearman": spearman(a, b)}
