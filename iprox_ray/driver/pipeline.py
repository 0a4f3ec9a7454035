"""The pipeline: warm-up → proxy → (embed → landmarks) → sketch target/pool → dedup → score →
select → outputs.

Every stage is idempotent (markers under the run directory), so rerunning the same command after a
crash resumes where it stopped and produces the same bytes.
"""

from __future__ import annotations

from pathlib import Path

from iprox_ray.diagnostics.landmark_section import format_landmark_section, landmark_section
from iprox_ray.diagnostics.proxy_fidelity import fidelity_report, format_report
from iprox_ray.driver.run import Run
from iprox_ray.driver.rundir import RunPart, open_run
from iprox_ray.execution.launchers import launcher_for
from iprox_ray.spec import JobSpec
from iprox_ray.stages.proxy import checked_model, run_proxy
from iprox_ray.stages.warmup import run_warmup
from iprox_ray.store.layout import MAIN_TARGET, POOL, target_split
from iprox_ray.tasks.inputs import manifest_for
from iprox_ray.tasks.model_ref import ModelRef


def run_job(job: JobSpec, run_dir: Path | None = None, force_new: bool = False, quiet: bool = False,
            break_lock: bool = False, part: RunPart | None = None) -> dict:
    with open_run(job, run_dir, force_new, quiet, break_lock, part) as ctx:
        return _run_stages(Run(ctx), part)


def build_models(run: Run) -> tuple[Path, ModelRef]:
    """Manifests, warm-up and proxy: everything before the first sharded stage."""
    ctx = run.ctx
    splits = [POOL, target_split(MAIN_TARGET)]
    run.manifests(splits)
    run.preflight(splits)
    with ctx.timed("warmup"):
        warmed = run_warmup(ctx)
    with ctx.timed("proxy"):
        ref = run_proxy(ctx, warmed)
    return warmed, ref


def check_fidelity(run: Run, warmed: Path, ref: ModelRef) -> dict | None:
    """Proxy vs target (when there is a proxy) and, for Influence Distillation, landmark propagation."""
    ctx = run.ctx
    proxy = checked_model(ctx, ref)  # under 'auto': the candidate (its report is the one that chose)
    same = proxy.kind == "hf" and proxy.path == warmed
    landmarks = run.method.uses_landmarks
    if same and not landmarks:
        ctx.say("fidelity: the proxy is the target itself (proxy.method = 'none'); nothing to compare")
        return None
    with ctx.timed("fidelity"):
        report = {} if same else fidelity_report(ctx, warmed, proxy)
        if landmarks:
            report["landmarks"] = landmark_section(ctx, ref)
    lines = [] if same else [format_report(report)]
    if landmarks:
        lines.append(format_landmark_section(report["landmarks"]))
    print("\n".join(lines), flush=True)
    return report


def _run_stages(run: Run, part: RunPart | None = None) -> dict:
    ctx = run.ctx
    target = target_split(MAIN_TARGET)
    warmed, ref = build_models(run)
    manifests = {split: manifest_for(ctx, split) for split in (POOL, target)}  # frozen by build_models
    if ctx.job.fidelity.enabled and (part is None or part.group is None):  # once per run, before the sketching
        check_fidelity(run, warmed, ref)
    with launcher_for(ctx.job).workers(ctx.job) as plan:
        ctx.say(f"sketching with {plan.num_workers} {plan.executor} worker(s), {plan.resources}")
        report = run.sketch(ref, plan, [target, POOL])
    if part is not None:  # a run part stops after its own shards
        return {"part": True, "shards_run": report.shards_run, "rows": report.rows, "timings": ctx.timings}
    run.dedup(manifests)
    return run.finish_target(MAIN_TARGET, target, manifests, ref)
