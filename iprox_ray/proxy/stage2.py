"""IProX stage 2, the training loop: AdamW on the factors under a warm-up + decay schedule, with
early stopping on held-out rows (the objectives themselves are in align.py).

The loop never hands back a proxy that is worse on its own objective than the one it was given:
the held-out objective is measured before the first step and every `eval_every` steps, the best
factors seen are kept, training stops after `patience` checks without improvement, and the best
factors are restored at the end (the stage-1 factors when no step helped).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn

from iprox_ray.proxy.align import Batch, alignment_loss, factor_parameters, layer_pairs


@dataclass(frozen=True)
class Stage2Settings:
    objective: str = "kl"  # factors | product | kl (align.alignment_loss)
    lr: float = 1e-4
    weight_decay: float = 0.01
    lambda_kl: float = 1.0
    tau: float = 2.0
    schedule: str = "cosine"  # constant | linear | cosine (after the warm-up)
    warmup: float = 0.1  # share of the steps spent ramping the learning rate up from 0
    eval_every: int = 8  # steps between held-out checks
    patience: int = 3  # checks without improvement before stopping


@dataclass
class AlignReport:
    steps: int = 0
    seconds: float = 0.0
    history: list[dict] = field(default_factory=list)  # per step: total, ga, kl, lr
    heldout: list[dict] = field(default_factory=list)  # per check: step, total, ga, kl
    best_step: int = 0  # the step whose factors were kept (0: the stage-1 factors)
    stopped_early: bool = False
    settings: dict = field(default_factory=dict)

    def summary(self) -> dict:
        first, last = (self.history[0], self.history[-1]) if self.history else ({}, {})
        held = ({"first": self.heldout[0], "best": self.best_heldout(), "last": self.heldout[-1]}
                if self.heldout else None)
        return {"steps": self.steps, "seconds": round(self.seconds, 3), "first": first, "last": last,
                "heldout": held, "best_step": self.best_step, "stopped_early": self.stopped_early,
                "settings": self.settings}

    def best_heldout(self) -> dict | None:
        return next((h for h in self.heldout if h["step"] == self.best_step), None)


def lr_factor(step: int, total: int, warmup: float, schedule: str) -> float:
    """Multiplier of the base learning rate at optimizer step `step` (0-based) of `total`."""
    ramp = max(1, round(warmup * total)) if warmup > 0 else 0
    if step < ramp:
        return (step + 1) / ramp
    if schedule == "constant":
        return 1.0
    progress = (step - ramp + 1) / max(1, total - ramp)
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    raise ValueError(f"unknown learning-rate schedule {schedule!r}")


def heldout_objective(target: nn.Module, proxy: nn.Module, pairs, batches: Sequence[Batch],
                      s: Stage2Settings) -> dict:
    """Mean (total, ga, kl) of the stage-2 objective over held-out batches, weighted by rows."""
    sums, rows = {"total": 0.0, "ga": 0.0, "kl": 0.0}, 0
    for batch in batches:
        values = alignment_loss(target, proxy, pairs, batch, s.lambda_kl, s.tau, s.objective)
        n = int(batch[0].shape[0])
        for key, value in zip(("total", "ga", "kl"), values):
            sums[key] += float(value.detach()) * n
        rows += n
    return {k: v / max(rows, 1) for k, v in sums.items()}


def train_factors(
    target: nn.Module,
    proxy: nn.Module,
    epochs: Sequence[Sequence[Batch]],
    heldout: Sequence[Batch],
    s: Stage2Settings,
    on_step: Callable[[int, dict], None] | None = None,
) -> AlignReport:
    """Train the proxy's factors in place (the target is only read); returns the report."""
    if not heldout:
        raise ValueError("stage 2 needs held-out rows to stop on (proxy.align_holdout_fraction)")
    pairs = layer_pairs(target, proxy)
    for p in list(target.parameters()) + list(proxy.parameters()):
        p.requires_grad_(False)  # alignment_loss re-enables exactly what it differentiates
    factors = factor_parameters(proxy)
    optimizer = torch.optim.AdamW(factors, lr=s.lr, weight_decay=s.weight_decay)
    total_steps = sum(len(batches) for batches in epochs)
    report = AlignReport(settings=asdict(s))
    target.eval()
    start = time.perf_counter()
    best = _check(report, 0, heldout_objective(target, proxy, pairs, heldout, s), None, factors)
    misses = 0
    try:
        proxy.train()
        for batches in epochs:
            for batch in batches:
                rate = s.lr * lr_factor(report.steps, total_steps, s.warmup, s.schedule)
                for group in optimizer.param_groups:
                    group["lr"] = rate
                total, l_ga, l_kl = alignment_loss(target, proxy, pairs, batch, s.lambda_kl, s.tau, s.objective)
                optimizer.zero_grad(set_to_none=True)
                total.backward()
                optimizer.step()
                report.steps += 1
                step = {"total": total.item(), "ga": l_ga.item(), "kl": l_kl.item(), "lr": rate}
                report.history.append(step)
                if on_step:
                    on_step(report.steps, step)
                if report.steps % s.eval_every == 0 or report.steps == total_steps:
                    improved = _check(report, report.steps, heldout_objective(target, proxy, pairs, heldout, s),
                                      best, factors)
                    best, misses = (improved, 0) if improved is not best else (best, misses + 1)
                    if misses >= s.patience:
                        report.stopped_early = report.steps < total_steps
                        raise _Stop
    except _Stop:
        pass
    finally:
        proxy.eval()
    with torch.no_grad():  # keep the best factors seen on the held-out rows
        for p, kept in zip(factors, best["factors"]):
            p.copy_(kept)
    report.best_step = best["step"]
    report.seconds = time.perf_counter() - start
    return report


class _Stop(Exception):
    """Early stop: out of the two nested loops at once."""


def _check(report: AlignReport, step: int, values: dict, best: dict | None, factors) -> dict:
    """Record a held-out check; the new best (with a copy of the factors) or the old one."""
    report.heldout.append({"step": step, **values})
    if best is not None and values["total"] >= best["total"]:
        return best
    return {"step": step, "total": values["total"], "factors": [p.detach().clone() for p in factors]}
