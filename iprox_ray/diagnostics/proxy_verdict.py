"""proxy.method = 'auto': sketch with the built proxy only where the fidelity check says it pays.

A proxy that ranks the pool unlike the target, or that is not faster, costs a user their
selection or buys them nothing; the check (diagnostics/proxy_fidelity.py: the probe rows sketched by both
models, a few rows scored by exact influence) decides once per run, the decision and its figures
are kept as a stage record, printed, and put in the run summary.
"""

from __future__ import annotations

from pathlib import Path

from iprox_ray.diagnostics.proxy_fidelity import fidelity_report
from iprox_ray.execution.context import RunContext
from iprox_ray.store.layout import PROXY_CHOICE_STAGE
from iprox_ray.tasks.model_ref import ModelRef


def choose_model(ctx: RunContext, warmed_dir: Path, proxy: ModelRef, target: ModelRef) -> ModelRef:
    """The proxy when the fidelity verdict says it pays, else the target; decided once per run."""
    decision = ctx.stage_done(PROXY_CHOICE_STAGE)
    if decision is None:
        report = fidelity_report(ctx, warmed_dir, proxy)  # printed by check_fidelity when fidelity.enabled
        decision = decision_record(report)
        ctx.mark_stage_done(PROXY_CHOICE_STAGE, decision)
    ctx.say(decision_line(decision))
    return proxy if decision["uses_proxy"] else target


def decision_record(report: dict) -> dict:
    """What the run summary and the report show of the choice."""
    speed = report["sketch_tokens_per_s"]
    exact = report.get("exact") or {}
    return {
        "uses_proxy": bool(report["pays"]),
        "candidate": report["proxy"],
        "verdict": report["verdict"],
        "speedup": speed["proxy"] / max(speed["target"], 1e-9),
        "flop_bound_speedup": report.get("flop_bound_speedup"),
        "spearman_vs_target": report["spearman"],
        "exact": {k: exact[k] for k in ("rows", "target_sketch", "proxy") if k in exact} or None,
    }


def decision_line(d: dict) -> str:
    chosen = "sketching with the proxy" if d["uses_proxy"] else "sketching with the target model itself"
    return f"proxy (auto, {d['candidate']['method']} rho={d['candidate']['rho']}): {chosen}; {d['verdict']}"
