"""Influence Distillation's second-order term through Hessian-vector products (docs/methods.md §5).

Objective: min_w −pᵀw + (η/2)·wᵀQw + (λ/2)‖w‖², Q = (1/N)·G̃_S H_T G̃_Sᵀ, where G̃_S holds the
pool's unit gradients and H_T is the Hessian of the mean target loss. Q is never formed. Around
the first-order weights w₀ the quadratic term is linear in w with gradient η·Q·w₀, so the
effective score becomes

    p' = p − (η/N)·G̃_S h,   h = H_T u,   u = G̃_Sᵀ w₀ = Σ_i w₀_i g_i/‖g_i‖,

one weighted backward over the support (u), one Hessian-vector product on the target set (h),
and inner products of every pool row's unit gradient with h — through the same Kronecker
projection as the sketches: ⟨ĝ_i, h⟩ ≈ ⟨ŝ_i, P h⟩, P h = P_out H_m P_inᵀ per module.

All gradients are restricted to the sketched parameters (the subset the scores live in): the
linears' weights, then the vector parameters (norms, biases) the sketch keeps beside them.
Parameters are named by their dotted keys; a linear's gradient comes back as [d_out, d_in].
Pure torch: batches in, tensors out.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch
from torch import nn

from iprox_ray.models.loss import per_sample_loss
from iprox_ray.sketch.projection import projection_matrix

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # input_ids, attention_mask, trainable


def module_weights(model: nn.Module, keys: list[str]) -> list[torch.Tensor]:
    """The named parameters gradients are taken for."""
    return [model.get_parameter(key) for key in keys]


def _as_out_in(model: nn.Module, key: str, grad: torch.Tensor) -> torch.Tensor:
    # transformers' Conv1D stores its weight as [in, out]
    owner = model.get_submodule(key.rpartition(".")[0])
    return grad.t() if grad.ndim == 2 and not isinstance(owner, nn.Linear) else grad


def weighted_gradient(model: nn.Module, names: list[str],
                      batches: Iterable[tuple[Batch, torch.Tensor]]) -> list[torch.Tensor]:
    """Σ_i c_i ∇ ℓ_i for each named parameter (linears [d_out, d_in]); (batch, coefficient) pairs."""
    weights = module_weights(model, names)
    total = [torch.zeros_like(w, dtype=torch.float32) for w in weights]
    for (ids, mask, trainable), coef in batches:
        loss = per_sample_loss(model(input_ids=ids, attention_mask=mask).logits, ids, trainable)
        grads = torch.autograd.grad((loss * coef.to(loss)).sum(), weights)
        for acc, g in zip(total, grads):
            acc += g.float()
    return [_as_out_in(model, n, t) for n, t in zip(names, total)]


def target_hvp(model: nn.Module, names: list[str], batches: Iterable[Batch], vector: list[torch.Tensor],
               n_examples: int) -> list[torch.Tensor]:
    """H_T·v for the mean loss over `n_examples` target examples (double backward per batch)."""
    weights = module_weights(model, names)
    v = [_as_out_in(model, n, x).to(w) for n, x, w in zip(names, vector, weights)]
    total = [torch.zeros_like(w, dtype=torch.float32) for w in weights]
    for ids, mask, trainable in batches:
        loss = per_sample_loss(model(input_ids=ids, attention_mask=mask).logits, ids, trainable).sum() / n_examples
        grads = torch.autograd.grad(loss, weights, create_graph=True)
        dot = sum((g * x).sum() for g, x in zip(grads, v))
        for acc, hv in zip(total, torch.autograd.grad(dot, weights)):
            acc += hv.float()
    return [_as_out_in(model, n, t) for n, t in zip(names, total)]


def kron_project(matrices: list[torch.Tensor], modules: list[list], seed: int, kind: str) -> np.ndarray:
    """The sketch-space image of per-module weight-space matrices: concat of P_out M P_inᵀ,
    in the store's column order (`modules`: [name, d_out, d_in, k_out, k_in] rows)."""
    parts = []
    for m, (name, d_out, d_in, k_out, k_in) in zip(matrices, modules):
        p_out = projection_matrix(seed, name, "out", k_out, d_out, kind)
        p_in = projection_matrix(seed, name, "in", k_in, d_in, kind)
        parts.append((p_out @ m.detach().float().cpu() @ p_in.T).flatten())
    return torch.cat(parts).numpy()
