"""Driver side of the sketch stage: create each split's arrays once, then fan shards out.

All splits share one worker pool, so each worker loads the model once.
"""

from __future__ import annotations

from iprox_ray.execution.planning import WorkerPlan, make_executor
from iprox_ray.execution.runner import StageReport, StageWork, run_sharded_stages
from iprox_ray.models.selection import linear_dims, select_modules
from iprox_ray.spec import SketchSpec
from iprox_ray.stages.context import RunContext
from iprox_ray.stages.inputs import POOL, manifest_for, source_for, tokenizer_path
from iprox_ray.stages.model_ref import ModelRef
from iprox_ray.stages.sketch_task import SketchShardTask, SplitInputs
from iprox_ray.store.layout import sketch_stage
from iprox_ray.store.markers import ShardMarkers
from iprox_ray.store.sketch_store import SplitStore, open_root


def sketch_modules(ref: ModelRef, spec: SketchSpec) -> list[list]:
    """[name, d_out, d_in, k_out, k_in] per sketched module, in sketch column order."""
    model = ref.meta()
    return [[name, *linear_dims(m), spec.proj_out, spec.proj_in] for name, m in select_modules(model, spec.modules)]


def sketch_fingerprint(ctx: RunContext, split: str) -> str:
    data = "data.pool" if split == POOL else "data.target"
    return ctx.job.stage_fingerprint("run.seed", "model", "warmup", "proxy", "sketch",
                                     "data.max_length", "data.truncation", data)


def markers_for(ctx: RunContext, split: str) -> ShardMarkers:
    stage = sketch_stage(split)
    return ShardMarkers(ctx.layout.completions(stage), ctx.layout.failures(stage), ctx.layout.inflight(stage))


def create_split_store(ctx: RunContext, split: str, ref: ModelRef, modules: list[list]) -> SplitStore:
    job = ctx.job
    manifest = manifest_for(ctx, split)
    open_root(ctx.layout.store, job.fingerprint())
    return SplitStore.create(
        ctx.layout.store,
        split,
        manifest.n_shards,
        manifest.rows_per_shard,
        sum(m[3] * m[4] for m in modules),
        {
            "sketch_fingerprint": sketch_fingerprint(ctx, split),
            "projection": {"kind": "kronecker", "distribution": job.sketch.projection,
                           "seed": job.sketch.seed, "proj_in": job.sketch.proj_in, "proj_out": job.sketch.proj_out},
            "modules": modules,
            "model": ref.identity(),
        },
    )


def run_sketch(ctx: RunContext, splits: list[str], ref: ModelRef, plan: WorkerPlan) -> StageReport:
    job = ctx.job
    modules = sketch_modules(ref, job.sketch)
    work, inputs = [], {}
    for split in splits:
        store = create_split_store(ctx, split, ref, modules)
        stage = sketch_stage(split)
        work.append(StageWork(stage, store.n_shards, markers_for(ctx, split)))
        inputs[stage] = SplitInputs(split, source_for(ctx, split),
                                    (ctx.layout.manifest(split), ctx.layout.manifest_info(split)),
                                    ctx.layout.quarantine_dir(split))
    task = SketchShardTask(
        name="sketch",
        resources=plan.resources,
        splits=inputs,
        sketch=job.sketch,
        model=ref,
        tokenizer_dir=tokenizer_path(ctx),
        max_length=job.data.max_length,
        truncation=job.data.truncation,
        store_path=ctx.layout.store,
    )
    return run_sharded_stages(work, task, make_executor(plan), job.cluster.max_shard_retries,
                              show_progress=not ctx.quiet, select=ctx.shard_filter)
