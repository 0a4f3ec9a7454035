"""IProX stage 1: influence-preserving SVD of each targeted linear (docs/methods.md §1).

Minimises ‖C_δ^{1/2}(W − Ŵ)C_h^{1/2}‖_F over rank-r Ŵ = AB, C = E[x xᵀ] + ridge·I. The square
roots come from eigendecompositions of the d×d second moments (accumulated by probes.py):
faster than thin SVDs of probe columns at thousands of tokens, and exact when fewer tokens than
dimensions were probed.
"""

from __future__ import annotations

import math

import numpy as np
import torch

SINGULAR_FLOOR = 1e-6


def rank_for(d_out: int, d_in: int, rho: float, multiple: int) -> int:
    """r = ceil(round((1−ρ)·m·n/(m+n)) / multiple) · multiple, r_raw clipped to [1, min(m, n)]."""
    raw = round((1.0 - rho) * d_out * d_in / (d_out + d_in))
    raw = min(max(raw, 1), min(d_out, d_in))
    return math.ceil(raw / multiple) * multiple


def keeps_full_rank(rank: int, d_out: int, d_in: int) -> bool:
    return rank >= min(d_out, d_in)


def whitening(c: torch.Tensor, ridge: float, relative: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(U, D) with U D² Uᵀ = C + ridge·I for a second moment C (d×d, from moments or X Xᵀ/N).

    The eigenbasis spans the whole space even when fewer than d tokens were probed: directions
    no probe reached keep the ridge's weight instead of being dropped from Ŵ (a thin SVD of the
    columns would drop them).
    """
    eig, u = torch.linalg.eigh(c.double())
    eig = eig.clamp_min(0.0)
    mean = float(eig.mean())
    scale = ridge * mean if relative and mean > 0 else ridge
    return u, torch.sqrt(eig + scale).clamp_min(SINGULAR_FLOOR)


def ipsvd_spectrum(
    weight: torch.Tensor, input_side, output_side, max_rank: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(A [m, k], B [k, n], σ [k]) for k = min(max_rank, ·) from the two whitenings (U, D)
    (`whitening` of C_h and of C_δ): the first r columns of A and rows of B are the IPSVD factors
    of rank r; σ_i² is what dropping component i costs in the whitened objective (comparable
    across layers: δ carries the loss's own scale)."""
    w = weight.double()
    u_h, d_h = input_side
    u_d, d_d = output_side
    core = d_d[:, None] * (u_d.T @ w @ u_h) * d_h[None, :]
    p, sigma, qt = torch.linalg.svd(core, full_matrices=False)
    k = min(max_rank, sigma.numel())
    root = sigma[:k].sqrt()
    a = u_d @ ((1.0 / d_d)[:, None] * p[:, :k] * root[None, :])
    b = (root[:, None] * qt[:k]) * (1.0 / d_h)[None, :] @ u_h.T
    return a.to(weight.dtype), b.to(weight.dtype), sigma[:k]


def ipsvd_factors(
    weight: torch.Tensor, h: torch.Tensor, delta: torch.Tensor, rank: int, ridge: float = 1e-3,
    relative_ridge: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed-form IPSVD from probe columns. weight [m, n]; h [n, N] inputs; delta [m, N] output grads.

    Returns A [m, r], B [r, n] with AB the whitened-optimal rank-r approximation.
    relative_ridge: the ridge is a share of each side's mean eigenvalue (the paper's absolute
    1e-3 swamps δ, whose second moments are ~1e-8 on a real model, so C_δ drops out).
    """
    h, delta = h.double(), delta.double()
    sides = [whitening(x @ x.T / x.shape[1], ridge, relative_ridge) for x in (h, delta)]
    a, b, _ = ipsvd_spectrum(weight, sides[0], sides[1], rank)
    return a, b


def dense_rank(d_out: int, d_in: int) -> int:
    """The rank at which A·B has as many parameters as the dense layer (keep it dense from there)."""
    return d_out * d_in // (d_out + d_in)


def allocate_ranks(spectra: dict[str, tuple[torch.Tensor, int, int]], rho: float, multiple: int) -> dict[str, int]:
    """Global rank rule: keep the components with the most whitened energy per parameter, σ²/(m+n),
    across all layers, until the factors hold (1 − ρ) of the layers' dense parameters.

    spectra: name -> (σ, m, n). Returns name -> rank, 0 meaning "keep dense" (the rank reached
    the dense-equivalent one). Every layer keeps at least `multiple` components.
    """
    budget = (1.0 - rho) * sum(m * n for _, m, n in spectra.values())
    names = list(spectra)
    gains = np.concatenate([(spectra[k][0].double() ** 2 / (spectra[k][1] + spectra[k][2])).cpu().numpy()
                            for k in names])
    owner = np.concatenate([np.full(len(spectra[k][0]), i) for i, k in enumerate(names)])
    index = np.concatenate([np.arange(len(spectra[k][0])) for k in names])
    cost = [spectra[k][1] + spectra[k][2] for k in names]
    ranks = [0] * len(names)
    spent = 0.0
    for j in np.lexsort((index, -gains)).tolist():  # most gain first; ties go layer by layer
        i = int(owner[j])
        if spent + cost[i] > budget:
            break
        ranks[i] += 1
        spent += cost[i]
    out = {}
    for i, name in enumerate(names):
        _, m, n = spectra[name]
        r = max(multiple, math.ceil(ranks[i] / multiple) * multiple)
        out[name] = 0 if r >= dense_rank(m, n) else r
    return out


def balance_factors(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rescale every rank-1 component so that its A column and B row have equal norms; A·B is
    unchanged (up to rounding: the scales are taken in float64).

    Why: IPSVD's factors carry the whitenings' scales (‖A‖/‖B‖ ~ 1e3–1e5 per layer on a real
    model). AdamW moves every entry by ~lr per step whatever its size, so stage 2 rewrites the
    tiny side within a few steps while the large one barely moves, and the factor sketches and
    the factor-gradient objective weigh the two sides by that imbalance (bench/RESULTS.md,
    "IProX stage 2 on the real model")."""
    a64, b64 = a.double(), b.double()
    na, nb = a64.norm(dim=0), b64.norm(dim=1)
    alive = (na > 0) & (nb > 0)
    scale = torch.where(alive, torch.sqrt(nb / torch.where(alive, na, 1.0)), torch.ones_like(na))
    return (a64 * scale).to(a.dtype), (b64 / scale[:, None]).to(b.dtype)


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
