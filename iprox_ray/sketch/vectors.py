"""Exact per-sample gradients of the small parameters full fine-tuning also trains.

Norm weights (and norm / linear biases) are vectors: their per-sample gradients cost next to
nothing to form exactly, yet on real models they carry a large share of the gradient inner
products that rank the pool (bench/RESULTS.md, "real model"). They are sketched beside the
linears: the block is either kept exact (`dim` = their total size) or SRHT-projected to `dim`
columns, one independent block per parameter, summed (an unbiased JL map of their concatenation).

Norm modules are treated as black boxes: the gradient of one sample's output·δ with respect to
the module's own parameters, vmapped over the batch, so any norm (RMSNorm, LayerNorm, Gemma's
1 + w) is exact without knowing its formula. A linear's bias gradient is Σ_t δ_t.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from iprox_ray.models.patterns import find_modules
from iprox_ray.sketch.dense_projection import DenseProjector


@dataclass(frozen=True)
class VectorParam:
    key: str  # the parameter's full dotted name, e.g. model.layers.0.input_layernorm.weight
    numel: int


def vector_modules(model: nn.Module, patterns: list[str]) -> list[tuple[str, nn.Module]]:
    """Modules matched by `patterns` that own 1-D parameters directly (norms), in model order."""
    return [(n, m) for n, m in find_modules(model, patterns)
            if any(p.ndim == 1 for p in m.parameters(recurse=False))]


def vector_params(model: nn.Module, patterns: list[str], linears: list[tuple[str, nn.Module]],
                  biases: bool) -> list[VectorParam]:
    """Every sketched vector parameter in column order: norm parameters, then linear biases."""
    out = [VectorParam(f"{name}.{p}", t.numel()) for name, m in vector_modules(model, patterns)
           for p, t in m.named_parameters(recurse=False) if t.ndim == 1]
    if biases:
        out += [VectorParam(f"{name}.bias", m.bias.numel()) for name, m in linears
                if getattr(m, "bias", None) is not None]
    return out


def block_dim(params: list[VectorParam], dim: int) -> int:
    """Columns of the vector block: exact when dim is 0 or not smaller than the parameters."""
    total = sum(p.numel for p in params)
    return total if dim == 0 or dim >= total else dim


def vector_record(params: list[VectorParam], dim: int, seed: int) -> dict:
    """The store's `vectors` attribute: which parameters, and how they were projected."""
    d = block_dim(params, dim)
    total = sum(p.numel for p in params)
    return {"params": [[p.key, p.numel] for p in params], "dim": d,
            "kind": "exact" if d == total else "srht", "seed": seed}


def vector_project(values: list[torch.Tensor], record: dict) -> np.ndarray:
    """The vector block's image of one weight-space vector per parameter of `record` (as stored)."""
    flat = [v.detach().float().cpu().flatten() for v in values]
    if record["kind"] == "exact":
        return (torch.cat(flat) if flat else torch.zeros(0)).numpy()
    projector = DenseProjector(record["seed"], record["dim"], "srht")
    total = torch.zeros(1, record["dim"])
    for (key, _), v in zip(record["params"], flat):
        total += projector.project(key, v.unsqueeze(0))
    return total[0].numpy()


class VectorBlock:
    """Adds per-sample vector-parameter gradients of a batch into the last `dim` sketch columns."""

    def __init__(self, model: nn.Module, patterns: list[str], linears: list[tuple[str, nn.Module]],
                 biases: bool, dim: int, seed: int, adam=None):
        self.modules = vector_modules(model, patterns)
        self.module_by_name = dict(self.modules)
        self.params = vector_params(model, patterns, linears, biases)
        self.bias_keys = {name: f"{name}.bias" for name, m in linears
                          if biases and getattr(m, "bias", None) is not None}
        self.dim = block_dim(self.params, dim)
        total = sum(p.numel for p in self.params)
        self.projector = None if self.dim == total else DenseProjector(seed, self.dim, "srht")
        self.offsets: dict[str, slice] = {}
        offset = 0
        for p in self.params:
            self.offsets[p.key] = slice(offset, offset + p.numel)
            offset += p.numel
        self.adam = adam
        if adam is not None:
            for p in self.params:
                adam.load_vector(p.key, p.numel)

    def module_gradients(self, name: str, module: nn.Module, x: torch.Tensor, delta: torch.Tensor) -> dict:
        """{param key: [B, n]} per-sample gradients of the module's own 1-D parameters.

        x [B, T, d] is the module input, delta [B, T, d] the (padding-masked) output gradient."""
        own = {p: t.detach().float() for p, t in module.named_parameters(recurse=False) if t.ndim == 1}
        fixed = {p: t.detach() for p, t in module.named_parameters(recurse=False) if t.ndim != 1}

        def contribution(params, xb, db):
            y = functional_call(module, {**params, **fixed}, (xb.unsqueeze(0),))
            return (y.float() * db.unsqueeze(0)).sum()

        with torch.enable_grad():
            per_sample = vmap(grad(contribution), in_dims=(None, 0, 0))(own, x.float(), delta.float())
        return {f"{name}.{p}": g for p, g in per_sample.items()}

    def add(self, key: str, g: torch.Tensor, rows: torch.Tensor) -> None:
        """rows [B, dim] += the features of parameter `key`'s per-sample gradients g [B, n]."""
        if self.adam is not None:
            g = self.adam.exact(key, g)
        if self.projector is None:
            rows[:, self.offsets[key]] += g
        else:
            rows += self.projector.project(key, g)
