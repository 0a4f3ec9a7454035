"""Influence Distillation's sample weights: λ-bisection so that exactly k weights are non-zero.

First-order objective (docs/methods.md §5): min_w −pᵀw + (λ/2)‖w‖²  s.t. w ≥ 0, 1ᵀw = N.
Its solution is w_i = max(0, p_i − τ)/λ with the water level τ set by Σ_i max(0, p_i − τ) = λN.
The support grows with λ, so λ is bisected until exactly k weights are non-zero; the support is
then the top-k of p and the weights sum to N.

Only the top k+1 scores matter: for any λ, either the support lies inside them or it is larger
than k. Tie rule: when the k-th and (k+1)-th scores are equal no λ separates them; the support is
then the top-k under the global tie rule (lower row first) and τ is the k-th score minus a
relative 1e-6 of the score range, so every supported weight is positive.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LambdaWeights:
    weights: np.ndarray  # float64 [k], for the top-k rows in their given order
    lam: float
    tau: float
    iterations: int


def water_level(p_sorted: np.ndarray, lam: float, total: float) -> tuple[float, int]:
    """τ and support size s for the sorted (descending) scores: Σ_{i≤s}(p_i − τ) = λ·total.

    s is the largest j with p_j > (Σ_{i≤j} p_i − λ·total)/j (the simplex-projection rule, robust
    to rounding at the breakpoints).
    """
    tau = (np.cumsum(p_sorted) - lam * total) / np.arange(1, len(p_sorted) + 1)
    s = int(np.flatnonzero(p_sorted > tau)[-1]) + 1
    return float(tau[s - 1]), s


def lambda_bisection(top: np.ndarray, k: int, total: float, max_iter: int = 200) -> LambdaWeights:
    """`top`: the best min(k+1, n) finite scores, descending (ties ordered by the caller's rule).

    Returns weights for the first k, exactly k of them > 0, summing to `total` (N).
    """
    p = np.asarray(top, dtype=np.float64)
    if k < 1 or len(p) < k:
        raise ValueError(f"need at least k={k} finite scores, got {len(p)}")
    if not np.all(np.isfinite(p)) or np.any(np.diff(p) > 0):
        raise ValueError("scores must be finite and sorted descending")
    spread = max(float(p[0] - p[k - 1]), float(abs(p[0])), 1.0)
    # A sentinel (k+1)-th score below everything when there is none, or when it ties the k-th.
    below = p[k] if len(p) > k and p[k] < p[k - 1] else p[k - 1] - 1e-6 * spread
    candidates = np.append(p[:k], below)
    lo, hi = 0.0, float(np.sum(p[:k] - below)) / total  # at hi the support is exactly k (τ = below)
    lam, iterations = hi, 0
    for iterations in range(1, max_iter + 1):
        lam = 0.5 * (lo + hi)
        _, s = water_level(candidates, lam, total)
        if s == k:
            break
        lo, hi = (lam, hi) if s < k else (lo, lam)
    else:
        lam = hi  # the closed-form end of the interval
    tau, s = water_level(candidates, lam, total)
    assert s == k, (s, k)
    w = np.maximum(0.0, p[:k] - tau) / lam
    return LambdaWeights(w, lam, tau, iterations)
