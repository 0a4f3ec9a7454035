"""Adam-aware train features (docs/methods.md §4, §5), from a warm-up Adam state held fixed.

- less: the LESS update direction Γ = m'/sqrt(v' + ε), m' = β1 m + (1−β1) g, v' = β2 v + (1−β2) g².
- influence-distillation: a ⊙ g with a = [(1−β1)/(1−β1^{t+1})] / (sqrt(v̂) + ε), v̂ = v/(1−β2^{t+1}).

Both are element-wise, so they are exact only where the per-sample gradient is materialised
(`exact`). For the Kronecker path `factored` gives an approximation that folds into the two
projections: the element-wise scale A (d_out×d_in, non-negative) is replaced by its best rank-1
approximation r cᵀ (power iteration), so A ⊙ G ≈ diag(r) G diag(c) and
P_out diag(r) G diag(c) P_inᵀ is again a Kronecker sketch. For LESS the (1−β2) g² term in the
denominator is also dropped (it is the only non-linear part), leaving a constant offset
β1 m/sqrt(β2 v + ε) plus (1−β1) g/sqrt(β2 v + ε). The relative Frobenius error of each rank-1
fit is reported (`rank1_error`); tests measure the end-to-end sketch error.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from iprox_ray.models.optimizer_state import AdamState
from iprox_ray.models.patterns import is_conv1d, linear_dims

MODES = ("less", "influence-distillation")


@dataclass
class Factored:
    row: torch.Tensor  # [d_out]
    col: torch.Tensor  # [d_in]
    constant: torch.Tensor | None  # [d_out, d_in] feature offset shared by every sample
    rank1_error: float  # ‖A − r cᵀ‖_F / ‖A‖_F


class AdamFeatures:
    """The moments of the sketched modules' weights, in [d_out, d_in] layout."""

    def __init__(self, state: AdamState, modules: list[tuple[str, nn.Module]], mode: str):
        if mode not in MODES:
            raise ValueError(f"unknown optimizer feature mode {mode!r}; expected one of {MODES}")
        self.mode = mode
        self.beta1, self.beta2 = state.betas
        self.eps = state.eps
        self.step = state.step
        self._state = state
        self.m: dict[str, torch.Tensor] = {}
        self.v: dict[str, torch.Tensor] = {}
        for name, module in modules:
            key = f"{name}.weight"
            m, v = self._moments(key)
            if is_conv1d(module):  # Conv1D stores [d_in, d_out]
                m, v = m.t(), v.t()
            if tuple(m.shape) != linear_dims(module):
                raise ValueError(f"Adam moments of {key!r} have shape {tuple(m.shape)}, "
                                 f"the module {linear_dims(module)}")
            device = next(module.parameters()).device
            self.m[name], self.v[name] = m.contiguous().to(device), v.contiguous().to(device)

    def load_vector(self, key: str, numel: int) -> None:
        """Also hold the moments of a 1-D parameter (norm weight, bias), flattened."""
        if key not in self.m:
            device = next(iter(self.m.values())).device if self.m else "cpu"
            m, v = self._moments(key)
            if m.numel() != numel:
                raise ValueError(f"Adam moments of {key!r} have {m.numel()} entries, the parameter {numel}")
            self.m[key], self.v[key] = m.flatten().to(device), v.flatten().to(device)

    def _moments(self, key: str) -> tuple[torch.Tensor, torch.Tensor]:
        if key not in self._state.exp_avg or key not in self._state.exp_avg_sq:
            have = sorted(self._state.exp_avg)[:4]
            raise KeyError(f"the Adam state has no moments for {key!r} (it has e.g. {have}); it must come "
                           "from training the model being sketched (a proxy's factors need their own state)")
        return self._state.exp_avg[key].float(), self._state.exp_avg_sq[key].float()

    def id_scale(self, name: str) -> torch.Tensor:
        """The Influence Distillation factor a (same shape as the weight)."""
        t = self.step + 1
        v_hat = self.v[name] / (1 - self.beta2**t)
        return ((1 - self.beta1) / (1 - self.beta1**t)) / (v_hat.sqrt() + self.eps)

    def exact(self, name: str, grad: torch.Tensor) -> torch.Tensor:
        """Features of per-sample gradients grad [B, d_out, d_in] (or [B, n] of a vector)."""
        if self.mode == "influence-distillation":
            return grad * self.id_scale(name)
        m = self.beta1 * self.m[name] + (1 - self.beta1) * grad
        v = self.beta2 * self.v[name] + (1 - self.beta2) * grad.square()
        return m / (v + self.eps).sqrt()

    def factored(self, name: str) -> Factored:
        if self.mode == "influence-distillation":
            row, col, err = rank1(self.id_scale(name))
            return Factored(row, col, None, err)
        inv = (self.beta2 * self.v[name] + self.eps).rsqrt()
        row, col, err = rank1((1 - self.beta1) * inv)
        return Factored(row, col, self.beta1 * self.m[name] * inv, err)


def rank1(a: torch.Tensor, iterations: int = 30) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Best rank-1 fit r cᵀ of a non-negative matrix by power iteration (Perron vectors)."""
    col = torch.ones(a.shape[1], dtype=a.dtype, device=a.device)
    row = a @ col
    for _ in range(iterations):
        row = a @ col
        row = row / row.norm().clamp_min(1e-30)
        col = a.T @ row
    err = float((a - torch.outer(row, col)).norm() / a.norm().clamp_min(1e-30))
    return row, col, err
