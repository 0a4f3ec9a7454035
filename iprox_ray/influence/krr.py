"""Kernel ridge regression from landmarks to the whole pool (Influence Distillation, §5 step 6).

Fit on the L landmarks only: K_LL (RBF, σ = median pairwise landmark distance on ≤ 1000 of them,
or linear), ridge = factor·mean(diag K_LL), α = (K_LL + ridge·I)⁻¹ P_L. Predict any block of
embeddings as K(E_block, E_L)·α: callers stream the pool block by block, so memory is
O(L·(dim + C) + block·L), never N×L.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def sq_distances(a: np.ndarray, b: np.ndarray, b_sq: np.ndarray | None = None) -> np.ndarray:
    """‖a_i − b_j‖² through one matrix product (clamped at 0 against rounding)."""
    a_sq = np.einsum("ij,ij->i", a, a)
    b_sq = np.einsum("ij,ij->i", b, b) if b_sq is None else b_sq
    d2 = a @ b.T
    d2 *= -2.0
    d2 += a_sq[:, None]
    d2 += b_sq[None, :]
    return np.maximum(d2, 0.0, out=d2)


def median_bandwidth(landmarks: np.ndarray, max_samples: int = 1000, seed: int = 0) -> float:
    """Median pairwise distance over ≤ max_samples landmarks (a seeded subset), at least 1e-6."""
    x = np.asarray(landmarks, dtype=np.float64)
    if len(x) > max_samples:
        x = x[np.sort(np.random.default_rng(seed).choice(len(x), max_samples, replace=False))]
    if len(x) < 2:
        return 1.0
    d2 = sq_distances(x, x)
    i, j = np.triu_indices(len(x), k=1)
    return max(float(np.sqrt(np.median(d2[i, j]))), 1e-6)


def kernel(a: np.ndarray, b: np.ndarray, kind: str, sigma: float, b_sq: np.ndarray | None = None) -> np.ndarray:
    if kind == "linear":
        return a @ b.T
    if kind == "rbf":
        k = sq_distances(a, b, b_sq)
        k *= -1.0 / (2.0 * sigma * sigma)
        return np.exp(k, out=k)
    raise ValueError(f"unknown kernel {kind!r}")


@dataclass
class KernelRidge:
    landmarks: np.ndarray  # float32 [L, E]
    alpha: np.ndarray  # float32 [L, C]
    kind: str
    sigma: float
    ridge: float
    _landmark_sq: np.ndarray | None = None

    def predict(self, embeddings: np.ndarray) -> np.ndarray:
        """[n, E] -> [n, C] propagated scores (float32)."""
        e = np.asarray(embeddings, dtype=np.float32)
        if self._landmark_sq is None:
            self._landmark_sq = np.einsum("ij,ij->i", self.landmarks, self.landmarks)
        return kernel(e, self.landmarks, self.kind, self.sigma, self._landmark_sq) @ self.alpha

    def flops_per_row(self) -> int:
        """Multiply-adds ×2 for one predicted row (kernel row + the α product)."""
        L, E = self.landmarks.shape
        return 2 * L * E + 2 * L * self.alpha.shape[1] + (4 * L if self.kind == "rbf" else 0)


def fit(landmarks: np.ndarray, targets: np.ndarray, kind: str = "rbf", ridge_factor: float = 0.01,
        bandwidth_sample: int = 1000, seed: int = 0) -> KernelRidge:
    """landmarks [L, E] embeddings, targets [L, C] exact scores at the landmarks."""
    E_L = np.asarray(landmarks, dtype=np.float32)
    P_L = np.asarray(targets, dtype=np.float64)
    if P_L.ndim == 1:
        P_L = P_L[:, None]
    if len(E_L) != len(P_L) or len(E_L) == 0:
        raise ValueError(f"{len(E_L)} landmark embeddings but {len(P_L)} landmark score rows")
    sigma = median_bandwidth(E_L, bandwidth_sample, seed) if kind == "rbf" else 1.0
    K = kernel(E_L.astype(np.float64), E_L.astype(np.float64), kind, sigma)
    ridge = ridge_factor * float(np.mean(np.diag(K)))
    K[np.diag_indices_from(K)] += ridge
    alpha = np.linalg.solve(K, P_L)
    return KernelRidge(E_L, alpha.astype(np.float32), kind, sigma, ridge)
