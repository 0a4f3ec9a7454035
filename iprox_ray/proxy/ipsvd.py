"""IProX stage 1: influence-preserving SVD of each targeted linear (methods.md §1).

Minimises ‖C_δ^{1/2}(W − Ŵ)C_h^{1/2}‖_F over rank-r Ŵ = AB without forming C_h or C_δ:
thin SVDs of the probe matrices H (n×N) and Δ (m×N) give their square roots directly.
"""

from __future__ import annotations

import math

import torch

SINGULAR_FLOOR = 1e-6


def rank_for(d_out: int, d_in: int, rho: float, multiple: int) -> int:
    """r = ceil(round((1−ρ)·m·n/(m+n)) / multiple) · multiple, r_raw clipped to [1, min(m, n)]."""
    raw = round((1.0 - rho) * d_out * d_in / (d_out + d_in))
    raw = min(max(raw, 1), min(d_out, d_in))
    return math.ceil(raw / multiple) * multiple


def keeps_full_rank(rank: int, d_out: int, d_in: int) -> bool:
    return rank >= min(d_out, d_in)


def _thin_svd(mat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    u, s, _ = torch.linalg.svd(mat, full_matrices=False)
    return u, s.clamp_min(SINGULAR_FLOOR)


def ipsvd_factors(
    weight: torch.Tensor, h: torch.Tensor, delta: torch.Tensor, rank: int, ridge: float = 1e-3
) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed-form IPSVD. weight [m, n]; h [n, N] inputs; delta [m, N] output grads.

    Returns A [m, r], B [r, n] with AB the whitened-optimal rank-r approximation.
    """
    w = weight.double()
    h = h.double()
    delta = delta.double()
    if not torch.any(delta):
        delta = delta + 1e-8 * torch.randn_like(delta)  # all-zero gradients: keep SVD defined
    n_cols = h.shape[1]
    u_h, s_h = _thin_svd(h)
    u_d, s_d = _thin_svd(delta)
    d_h = torch.sqrt(s_h**2 / n_cols + ridge)
    d_d = torch.sqrt(s_d**2 / n_cols + ridge)
    core = d_d[:, None] * (u_d.T @ w @ u_h) * d_h[None, :]
    p, sigma, qt = torch.linalg.svd(core, full_matrices=False)
    r = min(rank, sigma.numel())
    root = sigma[:r].sqrt()
    a = u_d @ ((1.0 / d_d)[:, None] * p[:, :r] * root[None, :])
    b = (root[:, None] * qt[:r]) * (1.0 / d_h)[None, :] @ u_h.T
    return a.to(weight.dtype), b.to(weight.dtype)


def svd_factors(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain truncated SVD baseline: A = U_r Σ_r, B = V_rᵀ."""
    u, s, vt = torch.linalg.svd(weight.double(), full_matrices=False)
    return (u[:, :rank] * s[:rank]).to(weight.dtype), vt[:rank].to(weight.dtype)


def random_factors(weight: torch.Tensor, rank: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random-init baseline, scaled like nn.Linear's default so activations stay bounded."""
    d_out, d_in = weight.shape
    a = (torch.rand(d_out, rank, generator=generator) * 2 - 1) / math.sqrt(rank)
    b = (torch.rand(rank, d_in, generator=generator) * 2 - 1) / math.sqrt(d_in)
    return a.to(weight.dtype), b.to(weight.dtype)
