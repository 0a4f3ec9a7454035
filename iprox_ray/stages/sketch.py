"""Driver side of the sketch stage: create each split's arrays once, then fan shards out.

All splits share one worker pool, so each worker loads the model(s) once. With
`sketch.checkpoints` the checkpoints' models are sketched (one array each) instead of the
pipeline's model; that needs proxy.method = 'none' (a proxy is built from one model).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from iprox_ray.execution.context import RunContext
from iprox_ray.execution.planning import WorkerPlan, make_executor
from iprox_ray.execution.runner import StageReport, StageWork, run_sharded_stages
from iprox_ray.models.patterns import linear_dims
from iprox_ray.sketch.factory import (
    features_record,
    module_record,
    projection_record,
    sketch_dim,
    sketched_modules,
    vectors_record,
)
from iprox_ray.spec import DataSpec, SketchSpec
from iprox_ray.stages.intact import record_group, redo_lost_shards
from iprox_ray.store.layout import sketch_stage
from iprox_ray.store.markers import ShardMarkers
from iprox_ray.store.sketch_store import SplitStore, open_root
from iprox_ray.tasks.compute import require_precision, sketch_precision
from iprox_ray.tasks.inputs import POOL, encoding_for, manifest_for, source_for, tokenizer_path
from iprox_ray.tasks.model_ref import ModelRef
from iprox_ray.tasks.sketch_budget import sketch_spec
from iprox_ray.tasks.sketch_task import SketchShardTask, SplitInputs


@dataclass(frozen=True)
class RowSubset:
    """Store rows to sketch (sorted), with a name and fingerprint recorded in the split's attributes."""

    name: str
    rows: np.ndarray
    fingerprint: str

    def describe(self) -> dict:
        return {"subset": self.name, "rows": int(len(self.rows)), "fingerprint": self.fingerprint}

    def by_shard(self, rows_per_shard: int) -> dict[int, tuple[int, ...]]:
        out: dict[int, list[int]] = {}
        for row in np.asarray(self.rows, dtype=np.int64).tolist():
            out.setdefault(row // rows_per_shard, []).append(row % rows_per_shard)
        return {shard: tuple(rows) for shard, rows in out.items()}


def sketch_modules(ref: ModelRef, spec: SketchSpec) -> list[list]:
    """Per sketched module, in sketch column order: [name, d_out, d_in, k_out, k_in] (kronecker)
    or [name, d_out, d_in, n_elements] (dense kinds)."""
    model = ref.meta()
    return [module_record(spec, name, *linear_dims(m)) for name, m in sketched_modules(model, spec)]


@dataclass
class Checkpoints:
    """What the sketch stage sketches: one model (and Adam state) per checkpoint."""

    names: list[str]
    weights: list[float]
    models: list[ModelRef]
    adam_states: list[Path | None]

    def record(self) -> list[dict]:
        return [{"name": n, "weight": w} for n, w in zip(self.names, self.weights)]


def plan_checkpoints(ctx: RunContext, ref: ModelRef) -> Checkpoints:
    """The models (and Adam states) to sketch; their presence was checked with the settings
    (stages/model_files.py), before any work."""
    job, spec = ctx.job, ctx.job.sketch
    wants_adam = spec.optimizer != "none"
    if not spec.checkpoints:
        state = job.resolve_path(spec.optimizer_state) if spec.optimizer_state else ctx.layout.warmup_dir
        return Checkpoints(["final"], [1.0], [ref], [state if wants_adam else None])
    models = [ModelRef("hf", job.resolve_path(c.model), job.model.dtype, job.model.attn_implementation)
              for c in spec.checkpoints]
    states = [job.resolve_path(c.optimizer) if wants_adam else None for c in spec.checkpoints]
    names = [c.name or f"ckpt{i}" for i, c in enumerate(spec.checkpoints)]
    return Checkpoints(names, spec.checkpoint_weights(), models, states)


def sketch_fingerprint(ctx: RunContext, split: str) -> str:
    return ctx.job.stage_fingerprint("run.seed", "model", "warmup", "proxy", "sketch", "store",
                                     *DataSpec.encoding_keys(split == POOL))


def markers_for(ctx: RunContext, split: str) -> ShardMarkers:
    stage = sketch_stage(split)
    return ShardMarkers(ctx.layout.completions(stage), ctx.layout.failures(stage), ctx.layout.inflight(stage))


def stored_precisions(root) -> dict[str, str]:
    """{split: precision} of every split already in the store."""
    groups = [root["pool"]] if "pool" in root else []
    if "targets" in root:
        groups += [group for _, group in root["targets"].groups()]
    return {str(g.attrs.get("split")): g.attrs["precision"] for g in groups if "precision" in g.attrs}


def create_split_store(ctx: RunContext, split: str, ref: ModelRef, modules: list[list],
                       checkpoints: Checkpoints | None = None, sketched_rows: dict | str = "all",
                       precision: str = "float32") -> SplitStore:
    """`precision` (tasks/compute.py) must be the one every split of the store was sketched in."""
    job = ctx.job
    checkpoints = checkpoints or Checkpoints(["final"], [1.0], [ref], [None])
    vectors = vectors_record(checkpoints.models[0].meta(), job.sketch)
    manifest = manifest_for(ctx, split)
    root = open_root(ctx.layout.store, job.fingerprint())
    for other, have in stored_precisions(root).items():
        require_precision(have, precision, f"the store's split {other!r}",
                          "Resume on the kind of device the run started on, or use another run directory (a "
                          "sketch.autocast of 'off' or 'bf16' resolves alike on GPU and CPU).")
    return SplitStore.create(
        ctx.layout.store,
        split,
        manifest.n_shards,
        manifest.rows_per_shard,
        sketch_dim(job.sketch, len(modules), vectors),
        {
            "sketch_fingerprint": sketch_fingerprint(ctx, split),
            "projection": projection_record(job.sketch, len(modules)),
            "sketch_dtype": job.store.sketch_dtype,
            "features": features_record(job.sketch, split == POOL),
            "checkpoints": checkpoints.record(),
            "modules": modules,
            "vectors": vectors,
            "model": ref.identity(),
            "sketched_rows": sketched_rows,
            "precision": precision,
        },
    )


def run_sketch(ctx: RunContext, splits: list[str], ref: ModelRef, plan: WorkerPlan,
               subsets: dict[str, RowSubset] | None = None) -> StageReport:
    """Sketch every row of `splits`, or only the rows of `subsets[split]` (others: metadata only)."""
    job = ctx.job
    checkpoints = plan_checkpoints(ctx, ref)
    modules = sketch_modules(checkpoints.models[0], job.sketch)
    precision = sketch_precision(job.model.dtype, job.sketch.autocast, plan.resources.gpus >= 1)
    subsets = subsets or {}
    work, inputs, only_rows, encodings = [], {}, {}, {}
    for split in splits:
        subset = subsets.get(split)
        store = create_split_store(ctx, split, ref, modules, checkpoints, subset.describe() if subset else "all",
                                   precision)
        stage = sketch_stage(split)
        if subset is not None:
            only_rows[stage] = subset.by_shard(store.rows_per_shard)
        markers = markers_for(ctx, split)
        record_group(ctx, stage, store)
        redo_lost_shards(ctx, stage, markers)
        work.append(StageWork(stage, store.n_shards, markers))
        encodings[stage] = encoding_for(ctx, split)
        inputs[stage] = SplitInputs(split, source_for(ctx, split),
                                    (ctx.layout.manifest(split), ctx.layout.manifest_info(split)),
                                    ctx.layout.quarantine_dir(split))
    task = SketchShardTask(
        name="sketch",
        resources=plan.resources,
        splits=inputs,
        sketch=sketch_spec(ctx, checkpoints.models[0]),
        models=checkpoints.models,
        adam_states=checkpoints.adam_states,
        tokenizer_dir=tokenizer_path(ctx.job),
        encodings=encodings,
        store_path=ctx.layout.store,
        only_rows=only_rows or None,
        precision=precision,
    )
    return run_sharded_stages(work, task, make_executor(plan), job.cluster.max_shard_retries,
                              show_progress=not ctx.quiet, select=ctx.shard_filter, guard=ctx.guard)
