"""The low-rank linear that replaces a dense one in a proxy: y = A(Bx) + b."""

from __future__ import annotations

import torch
from torch import nn


class LowRankLinear(nn.Module):
    """B: d_in -> r (no bias), A: r -> d_out (carries the original bias). Only A and B train."""

    FACTORS = ("A", "B")

    def __init__(self, d_in: int, d_out: int, rank: int, bias: bool, dtype=None, device=None):
        super().__init__()
        self.B = nn.Linear(d_in, rank, bias=False, dtype=dtype, device=device)
        self.A = nn.Linear(rank, d_out, bias=bias, dtype=dtype, device=device)

    @property
    def rank(self) -> int:
        return self.B.out_features

    @property
    def in_features(self) -> int:
        return self.B.in_features

    @property
    def out_features(self) -> int:
        return self.A.out_features

    @property
    def bias(self) -> torch.Tensor | None:
        """The layer's bias (kept on A), under the dense layer's name `<layer>.bias`."""
        return self.A.bias

    @classmethod
    def from_factors(cls, a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None) -> "LowRankLinear":
        d_out, rank = a.shape
        module = cls(b.shape[1], d_out, rank, bias is not None, dtype=a.dtype, device=a.device)
        with torch.no_grad():
            module.A.weight.copy_(a)
            module.B.weight.copy_(b)
            if bias is not None:
                module.A.bias.copy_(bias)
        return module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.A(self.B(x))

    def dense_weight(self) -> torch.Tensor:
        return self.A.weight @ self.B.weight


def densify(model: nn.Module) -> nn.Module:
    """Replace, in place, every LowRankLinear by an nn.Linear of weight A·B (the same function).

    The gradient of that weight is the gradient of the product the sketch measures
    (`sketch.lowrank = "product"`), so weight-space computations (Hessian-vector products,
    exact gradients) run on the densified proxy under the dense layers' own names."""
    for name, module in list(model.named_modules()):
        if isinstance(module, LowRankLinear):
            dense = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None,
                              dtype=module.A.weight.dtype, device=module.A.weight.device)
            with torch.no_grad():
                dense.weight.copy_(module.dense_weight())
                if module.bias is not None:
                    dense.bias.copy_(module.bias)
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, dense)
    return model
