"""Replace each targeted linear of a model by a low-rank module (IPSVD, plain SVD or random)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from iprox_ray.models.lowrank import LowRankLinear
from iprox_ray.models.patterns import linear_dims, linear_weight, select_modules
from iprox_ray.proxy.ipsvd import (
    allocate_ranks,
    balance_factors,
    dense_rank,
    ipsvd_spectrum,
    keeps_full_rank,
    random_factors,
    rank_for,
    svd_factors,
    whitening,
)


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


def balance_lowrank(model: nn.Module) -> int:
    """Balance, in place, the factors of every low-rank module (a proxy saved before factors were
    balanced); returns how many modules it touched."""
    touched = 0
    for module in model.modules():
        if isinstance(module, LowRankLinear):
            with torch.no_grad():
                a, b = balance_factors(module.A.weight, module.B.weight)
                module.A.weight.copy_(a)
                module.B.weight.copy_(b)
            touched += 1
    return touched


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


class Whitenings:
    """`whitening` of each probe second moment, computed once per moment object (q/k/v share C_h)."""

    def __init__(self, probe_moments, ridge: float, relative: bool):
        self.probe_moments, self.ridge, self.relative = probe_moments, ridge, relative
        self._by_id: dict[int, tuple] = {}

    def _of(self, c: torch.Tensor):
        if id(c) not in self._by_id:
            self._by_id[id(c)] = (c, whitening(c, self.ridge, self.relative))  # c held: its id stays unique
        return self._by_id[id(c)][1]

    def __call__(self, name: str):
        c_h, c_d = self.probe_moments(name)
        return self._of(c_h), whitening(c_d, self.ridge, self.relative)


def compress_global(model: nn.Module, plans: list[LayerPlan], probe_moments, rho: float, multiple: int,
                    ridge: float = 1e-3, relative_ridge: bool = False) -> list[LayerPlan]:
    """IPSVD with the global rank rule (ipsvd.allocate_ranks): one spectrum per layer, then the
    ranks that spend the parameter budget where the whitened energy is. Returns the plans applied."""
    spectra, factors = {}, {}
    sides = Whitenings(probe_moments, ridge, relative_ridge)
    for plan in plans:
        module = model.get_submodule(plan.name)
        a, b, sigma = ipsvd_spectrum(linear_weight(module).detach(), *sides(plan.name),
                                     dense_rank(plan.d_out, plan.d_in))
        spectra[plan.name], factors[plan.name] = (sigma, plan.d_out, plan.d_in), (a, b)
    ranks = allocate_ranks(spectra, rho, multiple)
    applied = []
    for plan in plans:
        rank = ranks[plan.name]
        applied.append(LayerPlan(plan.name, plan.d_out, plan.d_in, rank))
        a, b = factors.pop(plan.name)
        if rank:
            _factor_in_place(model, plan.name, a[:, :rank].contiguous(), b[:rank].contiguous())
    return applied


def _factor_in_place(model: nn.Module, name: str, a: torch.Tensor, b: torch.Tensor) -> None:
    """Swap the linear `name` for A·B, keeping its bias. Every construction passes here, so every
    proxy the product builds has balanced factors (`balance_factors`)."""
    a, b = balance_factors(a, b)
    module = model.get_submodule(name)
    bias = module.bias.detach() if getattr(module, "bias", None) is not None else None
    replace_module(model, name, LowRankLinear.from_factors(a, b, bias))


def compress(
    model: nn.Module,
    plans: list[LayerPlan],
    method: str,
    probe_moments=None,
    ridge: float = 1e-3,
    seed: int = 0,
    relative_ridge: bool = False,
) -> None:
    """Factor every planned layer in place. `probe_moments(name) -> (C_h, C_δ)` is needed for ipsvd."""
    generator = torch.Generator().manual_seed(seed)
    sides = Whitenings(probe_moments, ridge, relative_ridge) if method == "ipsvd" else None
    for plan in plans:
        if not plan.rank:
            continue
        module = model.get_submodule(plan.name)
        weight = linear_weight(module).detach()
        if method == "ipsvd":
            a, b, _ = ipsvd_spectrum(weight, *sides(plan.name), plan.rank)
        elif method == "svd":
            a, b = svd_factors(weight, plan.rank)
        elif method == "random":
            a, b = random_factors(weight, plan.rank, generator)
        else:
            raise ValueError(f"unknown compression method {method!r}")
        _factor_in_place(model, plan.name, a, b)
