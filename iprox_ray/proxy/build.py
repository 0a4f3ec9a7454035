"""Make a proxy from a loaded target: stage 1 (IPSVD or a baseline), then optional stage 2.

Pure model code: batches in, a proxy model out. The pipeline stage (stages/proxy.py) and the
real-model benchmark both call `make_proxy`, so what is measured is what runs.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
from torch import nn

from iprox_ray.models.selection import select_modules
from iprox_ray.proxy.align import AlignReport, Batch, align
from iprox_ray.proxy.baselines import extract_layers, layers_to_keep
from iprox_ray.proxy.compress import LayerPlan, compress, compress_global, plan_ranks
from iprox_ray.proxy.probes import ProbeCollector
from iprox_ray.spec.proxy import ProxySpec


@dataclass
class BuiltProxy:
    model: nn.Module
    plans: list[LayerPlan]
    kept_layers: list[int] | None
    stage1_seconds: float
    stage2: AlignReport | None


def collect_probes(target: nn.Module, spec: ProxySpec, batches: Sequence[Batch], n_rows: int, seed: int) -> ProbeCollector:
    """Second moments of the inputs and output gradients of every module IPSVD compresses."""
    modules = select_modules(target, spec.modules)
    collector = ProbeCollector(modules, spec.max_probe_columns, n_rows, seed, spec.probe_loss)
    try:
        for batch in batches:
            collector.run(target, *batch)
    finally:
        collector.close()
    return collector


def make_proxy(
    target: nn.Module,
    spec: ProxySpec,
    probe_batches: Sequence[Batch],
    n_probe_rows: int,
    align_epochs: Iterable[Sequence[Batch]] | None,
    seed: int,
) -> BuiltProxy:
    """The proxy `spec` describes; the target is only read (its copy is compressed)."""
    start = time.perf_counter()
    proxy = copy.deepcopy(target)
    plans, kept = [], None
    if spec.method == "layer_extraction":
        kept = layers_to_keep(target.config.num_hidden_layers, spec.rho)
        extract_layers(proxy, kept)
    else:
        plans = plan_ranks(target, spec.modules, spec.rho, spec.rank_multiple)
        moments = None
        if spec.method == "ipsvd":
            moments = collect_probes(target, spec, probe_batches, n_probe_rows, seed + 4).moments
        if spec.method == "ipsvd" and spec.rank_rule == "global":
            every = [LayerPlan(p.name, p.d_out, p.d_in, 1) for p in plans]  # the rule decides what stays dense
            plans = compress_global(proxy, every, moments, spec.rho, spec.rank_multiple, spec.ridge, spec.relative_ridge)
        else:
            compress(proxy, plans, spec.method, moments, spec.ridge, seed=seed + 5, relative_ridge=spec.relative_ridge)
        del moments  # the probe moments (GBs on a real model) are not needed by stage 2
    stage1 = time.perf_counter() - start
    report = None
    if spec.is_low_rank and spec.align_epochs and align_epochs is not None:
        report = align(target, proxy, align_epochs, spec.align_lr, spec.align_weight_decay, spec.lambda_kl,
                       spec.temperature, objective=spec.align_objective)
    for p in proxy.parameters():
        p.requires_grad_(False)
    return BuiltProxy(proxy, plans, kept, stage1, report)


def device_for_build() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
