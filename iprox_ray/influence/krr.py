"""Kernel ridge regression from landmarks to the whole pool (Influence Distillation, §5 step 6).

Fit on the L landmarks only: K_LL (RBF, σ = scale × median pairwise landmark distance on ≤ 1000
of them, or linear), ridge = factor·mean(diag K_LL), α = (K_LL + ridge·I)⁻¹ (P_L − c), with c the
landmark mean of each column when centred (else 0: the published form, which pulls rows far from
every landmark towards score 0 rather than towards the typical score). Predict any block of
embeddings as K(E_block, E_L)·α + c: callers stream the pool block by block, so memory is
O(L·(dim + C) + block·L), never N×L.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from iprox_ray.influence.agreement import spearman, top_overlap


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
    offset: np.ndarray | None = None  # float32 [C], c above
    _landmark_sq: np.ndarray | None = None

    def predict(self, embeddings: np.ndarray) -> np.ndarray:
        """[n, E] -> [n, C] propagated scores (float32)."""
        e = np.asarray(embeddings, dtype=np.float32)
        if self._landmark_sq is None:
            self._landmark_sq = np.einsum("ij,ij->i", self.landmarks, self.landmarks)
        out = kernel(e, self.landmarks, self.kind, self.sigma, self._landmark_sq) @ self.alpha
        return out if self.offset is None else out + self.offset

    def flops_per_row(self) -> int:
        """Multiply-adds ×2 for one predicted row (kernel row + the α product)."""
        L, E = self.landmarks.shape
        return 2 * L * E + 2 * L * self.alpha.shape[1] + (4 * L if self.kind == "rbf" else 0)


def fit(landmarks: np.ndarray, targets: np.ndarray, kind: str = "rbf", ridge_factor: float = 0.01,
        bandwidth_sample: int = 1000, seed: int = 0, bandwidth_scale: float = 1.0,
        center: bool = False) -> KernelRidge:
    """landmarks [L, E] embeddings, targets [L, C] exact scores at the landmarks; RBF σ is
    bandwidth_scale × the median pairwise landmark distance."""
    E_L = np.asarray(landmarks, dtype=np.float32)
    P_L = np.asarray(targets, dtype=np.float64)
    if P_L.ndim == 1:
        P_L = P_L[:, None]
    if len(E_L) != len(P_L) or len(E_L) == 0:
        raise ValueError(f"{len(E_L)} landmark embeddings but {len(P_L)} landmark score rows")
    sigma = bandwidth_scale * median_bandwidth(E_L, bandwidth_sample, seed) if kind == "rbf" else 1.0
    K = kernel(E_L.astype(np.float64), E_L.astype(np.float64), kind, sigma)
    ridge = ridge_factor * float(np.mean(np.diag(K)))
    K[np.diag_indices_from(K)] += ridge
    offset = P_L.mean(axis=0) if center else None
    alpha = np.linalg.solve(K, P_L if offset is None else P_L - offset)
    return KernelRidge(E_L, alpha.astype(np.float32), kind, sigma, ridge,
                       None if offset is None else offset.astype(np.float32))


def holdout(landmarks: np.ndarray, targets: np.ndarray, folds: int = 5, seed: int = 0,
            fit_fold: Callable[[np.ndarray, np.ndarray], KernelRidge] = fit) -> dict:
    """Leave-some-landmarks-out check of the propagation: fit on all folds but one, predict the
    held-out fold's exact scores; Spearman and top-5 % share over every landmark's held-out
    prediction (of the column mean: what top-k selection ranks). Needs ≥ 2·folds landmarks."""
    E_L = np.asarray(landmarks, dtype=np.float32)
    P = np.asarray(targets, dtype=np.float64)
    P = P.mean(axis=1) if P.ndim == 2 else P
    if len(E_L) < 2 * folds:
        return {"landmarks": int(len(E_L)), "folds": folds, "spearman": None, "top5": None}
    fold = np.random.default_rng(seed).permutation(len(E_L)) % folds
    predicted = np.empty(len(E_L))
    for f in range(folds):
        held = fold == f
        model = fit_fold(E_L[~held], P[~held])
        predicted[held] = model.predict(E_L[held])[:, 0]
    return {"landmarks": int(len(E_L)), "folds": folds, "spearman": spearman(P, predicted),
            "top5": top_overlap(P, predicted, 0.05)[0]}
