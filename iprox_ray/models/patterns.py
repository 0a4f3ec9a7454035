"""Find a model's parameters by name patterns from the config, never by attribute paths.

A pattern is a glob over dotted module names (`*.mlp.down_proj`) or a regex prefixed `re:`.
One pattern list serves the target model and its IProX proxy alike: a matched low-rank module
is one linear of the dense layer's shape (the sketch sees its input and output, i.e. the gradient
of the product A·B), or, with `expand_lowrank`, its two factor linears.
"""

from __future__ import annotations

import fnmatch
import re

import torch
from torch import nn

from iprox_ray.models.lowrank import LowRankLinear


def _compile(patterns: list[str]):
    compiled = []
    for p in patterns:
        if p.startswith("re:"):
            compiled.append(re.compile(p[3:]))
        else:
            compiled.append(re.compile(fnmatch.translate(p)))
    return compiled


def is_linear_like(module: nn.Module) -> bool:
    """nn.Linear, or transformers' Conv1D (GPT-2), whose weight is stored transposed."""
    return isinstance(module, nn.Linear) or is_conv1d(module)


def linear_dims(module: nn.Module) -> tuple[int, int]:
    """(d_out, d_in) of a linear-like or low-rank module."""
    if isinstance(module, (nn.Linear, LowRankLinear)):
        return module.out_features, module.in_features
    d_in, d_out = module.weight.shape  # Conv1D stores [in, out]
    return d_out, d_in


def linear_weight(module: nn.Module) -> torch.Tensor:
    """The weight as [d_out, d_in] whatever the storage convention (a view, not a copy)."""
    return module.weight if isinstance(module, nn.Linear) else module.weight.t()


def is_conv1d(module: nn.Module) -> bool:
    """transformers' Conv1D: its weight is stored [d_in, d_out]."""
    return type(module).__name__ == "Conv1D"


def select_modules(model: nn.Module, patterns: list[str], expand_lowrank: bool = False) -> list[tuple[str, nn.Module]]:
    """Linear-like modules whose dotted name matches any pattern, in model order."""
    compiled = _compile(patterns)
    chosen: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        if not any(rx.fullmatch(name) for rx in compiled):
            continue
        if isinstance(module, LowRankLinear) and expand_lowrank:
            chosen.extend((f"{name}.{child}", getattr(module, child)) for child in LowRankLinear.FACTORS)
        elif is_linear_like(module) or isinstance(module, LowRankLinear):
            chosen.append((name, module))
    if not chosen:
        raise ValueError(f"no linear module matches {patterns}; "
                         f"first names: {[n for n, _ in model.named_modules()][:8]}")
    return chosen


def find_modules(model: nn.Module, patterns: list[str]) -> list[tuple[str, nn.Module]]:
    """Modules of any type whose dotted name matches a pattern, in model order (maybe none)."""
    compiled = _compile(patterns)
    return [(name, m) for name, m in model.named_modules() if any(rx.fullmatch(name) for rx in compiled)]


def select_blocks(model: nn.Module, patterns: list[str]) -> list[tuple[str, nn.Module]]:
    """Transformer blocks (any module type) whose dotted name matches a pattern, in model order."""
    blocks = find_modules(model, patterns)
    if not blocks:
        raise ValueError(f"no block matches {patterns}; first names: {[n for n, _ in model.named_modules()][:8]}")
    return blocks
