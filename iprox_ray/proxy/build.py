"""Make a proxy from a loaded target: stage 1 (IPSVD or a baseline), then optional stage 2.

Pure model code: batches in, a proxy model out. The pipeline stage (stages/proxy.py) and the
real-model benchmark both call `make_proxy`, so what is measured is what runs.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from iprox_ray.models.patterns import select_modules
from iprox_ray.proxy.align import Batch
from iprox_ray.proxy.baselines import extract_layers, layers_to_keep
from iprox_ray.proxy.compress import LayerPlan, compress, compress_global, plan_ranks
from iprox_ray.proxy.probes import ProbeCollector
from iprox_ray.proxy.stage2 import AlignReport, Stage2Settings, train_factors
from iprox_ray.spec.proxy import ProxySpec


@dataclass
class BuiltProxy:
    model: nn.Module
    plans: list[LayerPlan]
    kept_layers: list[int] | None
    stage1_seconds: float
    stage2: AlignReport | None


def collect_probes(target: nn.Module, spec: ProxySpec, batches: Sequence[Batch], n_rows: int,
                   seed: int) -> ProbeCollector:
    """Second moments of the inputs and output gradients of every module IPSVD compresses."""
    modules = select_modules(target, spec.modules)
    collector = ProbeCollector(modules, spec.max_probe_columns, n_rows, seed, spec.probe_loss)
    try:
        for batch in batches:
            collector.run(target, *batch)
    finally:
        collector.close()
    return collector


def alignment_split(rows: Sequence, spec: ProxySpec, seed: int) -> tuple[list, list]:
    """(training rows, held-out rows) for stage 2 from the construction rows that are not probes.

    `align_rows` caps how many are used: a seeded draw, or those with the most trainable tokens
    (`align_row_choice`); `align_holdout_fraction` of them (at least one batch when there are
    enough rows for both) decide early stopping."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(rows)).tolist()
    if spec.align_row_choice == "most-trainable":
        order.sort(key=lambda i: -int(rows[i].trainable.sum()))  # stable: ties keep the seeded order
    if spec.align_rows:
        order = order[: spec.align_rows]
    order = [order[i] for i in rng.permutation(len(order))]  # the held-out share is not the longest rows
    n_held = max(min(spec.align_batch_size, len(order) // 2), round(spec.align_holdout_fraction * len(order)))
    return [rows[i] for i in order[n_held:]], [rows[i] for i in order[:n_held]]


def stage2_settings(spec: ProxySpec) -> Stage2Settings:
    return Stage2Settings(objective=spec.align_objective, lr=spec.align_lr, weight_decay=spec.align_weight_decay,
                          lambda_kl=spec.lambda_kl, tau=spec.temperature, schedule=spec.align_schedule,
                          warmup=spec.align_warmup, eval_every=spec.align_eval_every, patience=spec.align_patience)


def make_proxy(
    target: nn.Module,
    spec: ProxySpec,
    probe_batches: Sequence[Batch],
    n_probe_rows: int,
    align_epochs: Sequence[Sequence[Batch]] | None,
    seed: int,
    heldout: Sequence[Batch] = (),
) -> BuiltProxy:
    """The proxy `spec` describes; the target is only read (its copy is compressed). Stage 2
    runs when the spec asks for it and alignment batches are given; `heldout` batches decide
    when it stops and which factors it keeps (stage2.train_factors)."""
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
            plans = compress_global(proxy, every, moments, spec.rho, spec.rank_multiple, spec.ridge,
                                    spec.relative_ridge)
        else:
            compress(proxy, plans, spec.method, moments, spec.ridge, seed=seed + 5, relative_ridge=spec.relative_ridge)
        del moments  # the probe moments (GBs on a real model) are not needed by stage 2
    stage1 = time.perf_counter() - start
    report = None
    if spec.is_low_rank and spec.align_epochs and align_epochs:
        report = train_factors(target, proxy, align_epochs, heldout, stage2_settings(spec))
    for p in proxy.parameters():
        p.requires_grad_(False)
    return BuiltProxy(proxy, plans, kept, stage1, report)


def device_for_build() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def stage2_summary(stage2: dict) -> str:
    """One phrase for a saved stage-2 record: its held-out objective and where it stopped."""
    held = stage2.get("heldout") or {}
    first, best = held.get("first") or {}, held.get("best") or {}
    kept = (f"kept step {stage2.get('best_step', stage2['steps'])} of {stage2['steps']}"
            + (", stopped early" if stage2.get("stopped_early") else ""))
    objective = (stage2.get("settings") or {}).get("objective", "?")
    return (f"stage 2 ({objective}): held-out objective {first.get('total', float('nan')):.4f} -> "
            f"{best.get('total', float('nan')):.4f} ({kept}) in {stage2['seconds']:.1f}s")
