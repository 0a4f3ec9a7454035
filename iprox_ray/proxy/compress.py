"""Replace each targeted linear of a model by a low-rank module (IPSVD, plain SVD or random)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from iprox_ray.models.lowrank import LowRankLinear
from iprox_ray.models.selection import linear_dims, linear_weight, select_modules
from iprox_ray.proxy.ipsvd import ipsvd_factors, keeps_full_rank, random_factors, rank_for, svd_factors


@dataclass(frozen=True)
class LayerPlan:
    name: str
    d_out: int
    d_in: int
    rank: int  # 0 = kept full-rank (and frozen)

    def as_dict(self) -> dict:
        return asdict(self)


def plan_ranks(model: nn.Module, patterns: list[str], rho: float, multiple: int) -> list[LayerPlan]:
    plans = []
    for name, module in select_modules(model, patterns, expand_lowrank=False):
        d_out, d_in = linear_dims(module)
        rank = rank_for(d_out, d_in, rho, multiple)
        plans.append(LayerPlan(name, d_out, d_in, 0 if keeps_full_rank(rank, d_out, d_in) else rank))
    return plans


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def apply_plan(model: nn.Module, plans: list[LayerPlan]) -> None:
    """Swap in empty low-rank modules of the planned ranks (used when loading a saved proxy)."""
    for plan in plans:
        if plan.rank:
            module = model.get_submodule(plan.name)
            weight = linear_weight(module)
            has_bias = getattr(module, "bias", None) is not None
            replace_module(
                model,
                plan.name,
                LowRankLinear(plan.d_in, plan.d_out, plan.rank, has_bias, dtype=weight.dtype, device=weight.device),
            )


def compress(
    model: nn.Module,
    plans: list[LayerPlan],
    method: str,
    probe_columns=None,
    ridge: float = 1e-3,
    seed: int = 0,
) -> None:
    """Factor every planned layer in place. `probe_columns(name) -> (H, Δ)` is needed for ipsvd."""
    generator = torch.Generator().manual_seed(seed)
    for plan in plans:
        if not plan.rank:
            continue
        module = model.get_submodule(plan.name)
        weight = linear_weight(module).detach()
        if method == "ipsvd":
            h, delta = probe_columns(plan.name)
            a, b = ipsvd_factors(weight, h, delta, plan.rank, ridge)
        elif method == "svd":
            a, b = svd_factors(weight, plan.rank)
        elif method == "random":
            a, b = random_factors(weight, plan.rank, generator)
        else:
            raise ValueError(f"unknown compression method {method!r}")
        bias = module.bias.detach() if getattr(module, "bias", None) is not None else None
        replace_module(model, plan.name, LowRankLinear.from_factors(a, b, bias))
