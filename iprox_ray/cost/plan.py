"""`iprox-ray plan`: predict a job's rows, tokens, store size, stage seconds and memory before it runs.

Counts come from the inputs' metadata and a seeded, tokenised sample; the sketch's width and bytes
a row from the sketch factory on the model's module tree (cost/sizes.py); seconds and memory from a
few batches run on this machine through the workers' own code (cost/timed_plan.py). Where this
machine cannot hold the sketched model (weights absent, or too large for its free memory), the
plan works from the model's config alone on the meta device: counts, width, store bytes and the
modelled memory (sketch/memory.py), no seconds, and the notes say so. `sketch.token_budget =
"auto"` is resolved by the run's own rule (tasks/sketch_budget.py) and printed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from iprox_ray.cost.measure import rss
from iprox_ray.cost.plan_inputs import MAIN_SPLIT, Inputs, common_notes, sample_inputs, split_costs
from iprox_ray.cost.result import CostPlan, SplitCost, WorkerCost
from iprox_ray.cost.sizes import sketch_sizes, store_dtype
from iprox_ray.cost.target_model import target_bytes
from iprox_ray.cost.timed import choose_model, config_only_reason, sketched_meta
from iprox_ray.cost.timed_plan import timed_plan
from iprox_ray.cost.workers import driver_peak, list_schedule
from iprox_ray.execution.worker_layout import WORKER_BASE_BYTES, worker_layout
from iprox_ray.methods.registry import check_job
from iprox_ray.sketch.kinds import check_sketch
from iprox_ray.sketch.memory import peak_model
from iprox_ray.spec import JobSpec, SpecError
from iprox_ray.store.atomic import read_json
from iprox_ray.store.layout import POOL, SKETCH_BUDGET_STAGE, RunLayout
from iprox_ray.tasks.sketch_budget import budget_for

FALLBACK_BUDGET = 8192  # planned with where the workers' memory cannot be seen from here (GPUs)


def resolve_budget(job: JobSpec, layout, run_dir: Path | None, meta: torch.nn.Module, config,
                   notes: list[str]) -> tuple[JobSpec, dict | None]:
    """(the job with the integer token budget the run will use, the auto choice's record). A run
    directory that recorded its choice keeps it; otherwise the run's own rule (tasks/sketch_budget.py) on
    this machine's view of the workers' memory."""
    if job.sketch.token_budget != "auto":
        return job, None
    recorded = RunLayout(run_dir).stage_done(SKETCH_BUDGET_STAGE) if run_dir is not None else None
    if recorded is not None and recorded.exists():
        record = read_json(recorded)
        notes.append(f"sketch.token_budget = auto: {record['token_budget']}, as {run_dir} recorded at its first sketch")
    else:
        try:
            choice = budget_for(job, meta, config, layout)
        except SpecError as exc:
            notes.append(f"the run would stop before sketching: {exc}; planned at one row a batch")
            record = {"auto": True, "token_budget": job.data.max_length, "limit": "does not fit"}
        else:
            if choice is None:
                record = {"auto": True, "token_budget": FALLBACK_BUDGET, "limit": "unknown"}
                notes.append("sketch.token_budget = auto needs the GPU workers' memory, which this machine cannot see: "
                             f"planned at {FALLBACK_BUDGET}; the run's driver chooses on its node")
            else:
                record = choice.record()
                notes.append(f"sketch.token_budget = auto: {choice.describe()}")
    sketch = job.sketch.model_copy(update={"token_budget": int(record["token_budget"])})
    return job.model_copy(update={"sketch": sketch}), record


def plan_job(job: JobSpec, run_dir: Path | None = None, sample_rows: int = 256, batches: int = 4,
             profile: str = "") -> CostPlan:
    """Predict the job's cost on the cluster profile it names; times on this machine, or, where
    this machine cannot hold the sketched model, sizes it from its config and times nothing."""
    check_sketch(job.sketch)  # as check_names does; a plan may be asked for without the CLI
    scoring = check_job(job)
    notes: list[str] = []
    base = rss()  # the driver's interpreter and imports, before any model or data
    layout = worker_layout(job)
    reason = config_only_reason(job)
    inputs = sample_inputs(job, scoring.needs, sample_rows, run_dir, notes)
    timed = None
    if reason is not None:
        notes.append(f"sizes from the model's config alone (meta device): {reason}; nothing was timed (seconds "
                     "left out), memory is modelled (sketch/memory.py)")
        if run_dir is not None:
            notes.append(f"--run-dir {run_dir} was not used: building the warm-up or proxy would load the model")
    else:
        timed = choose_model(job, run_dir, notes)
    meta, config = sketched_meta(job, timed)
    job, auto = resolve_budget(job, layout, run_dir, meta, config, notes)
    sizes = sketch_sizes(meta, job.sketch, store_dtype(job))
    costs, padded = split_costs(job, inputs, sizes.width, sizes.dtype)
    inline = job.cluster.executor == "inline"
    peaks = peak_model(job, meta, config, base if inline else WORKER_BASE_BYTES)
    if timed is None:
        return _config_plan(job, scoring, inputs, layout, base, sizes, costs, padded, auto, peaks, reason, notes,
                            profile)
    plan = timed_plan(job, scoring, inputs, layout, base, timed, sizes.width, costs, padded, batches, notes,
                      profile)
    return dataclasses.replace(plan, sketch_sizes=sizes.to_dict(), token_budget=job.sketch.token_budget,
                               token_budget_auto=auto, sizes_from="model",
                               worker_peak_modelled_bytes=peaks.peak(job.sketch.token_budget))


def _config_plan(job: JobSpec, scoring, inputs: Inputs, layout, base: int, sizes, costs: list[SplitCost],
                 padded: dict[str, dict[int, float]], auto: dict | None, peaks, reason: str, notes: list[str],
                 profile: str) -> CostPlan:
    """The counts, store bytes and modelled memory of a job whose model this machine cannot time."""
    pool = inputs.samples[POOL]
    per_token = peaks.bytes_per_token
    target = target_bytes(job)
    if job.warmup.enabled and not job.warmup.checkpoint:
        notes.append("the warm-up step was modelled, not measured (the model was not loaded)")
    driver, driver_stage = driver_peak(job, base, target, job.proxy.method not in ("none", "model"), per_token,
                                       pool.manifest.n_rows, pool.manifest.rows_per_shard,
                                       inputs.samples[MAIN_SPLIT].manifest.n_rows, sizes.width, inputs.checkpoints)
    if scoring.needs.embeddings:
        notes.append(f"the {scoring.needs.embeddings[0]} embedding pass was not timed either")
    common_notes(job, scoring, inputs, notes)
    budget = job.sketch.token_budget
    # Shards spread as the actor pool spreads them, each weighed by its padded tokens (no rate measured).
    work = [1.0 + tokens * inputs.share[split] for split, shards in padded.items() for tokens in shards.values()]
    _, max_shards = list_schedule(work, layout.workers)
    return CostPlan(
        job=job.run.name, profile=profile or (job.cluster.profile or job.cluster.kind), method=job.scoring.method,
        rows=pool.manifest.n_rows, tokens=pool.tokens, shards=pool.manifest.n_shards,
        store_bytes=sum(c.sketch_bytes for c in costs),
        sketch_seconds=None, sketch_seconds_idle=None, sketch_worker_seconds=None, sketch_cpu_seconds=None,
        embed_seconds=None, embed_worker_seconds=None,
        worker_peak_bytes=peaks.peak(budget), driver_peak_bytes=driver, driver_peak_stage=driver_stage,
        timed=f"nothing: {reason}",
        per_worker=WorkerCost(layout.workers, layout.nodes, "cuda" if layout.uses_gpu else "cpu", layout.threads,
                              max_shards, None, None),
        splits=costs, sketch_timing=None, embed_timing=None, notes=notes,
        sketch_sizes=sizes.to_dict(), token_budget=budget,
        token_budget_auto=auto, sizes_from="config", worker_peak_modelled_bytes=peaks.peak(budget),
    )
