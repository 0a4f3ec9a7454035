"""Driver side of the embed stage: create each (kind, split) embedding array, fan shards out.

jvp embeddings serve Influence Distillation's landmark propagation, rds embeddings RDS+ scoring.
Like the sketch stage it is idempotent per shard (completion markers) and resumable.
"""

from __future__ import annotations

from iprox_ray.execution.context import RunContext
from iprox_ray.execution.planning import WorkerPlan, make_executor
from iprox_ray.execution.runner import StageReport, StageWork, run_sharded_stages
from iprox_ray.sketch.embedding_kinds import embedding_kind
from iprox_ray.spec import DataSpec
from iprox_ray.stages.intact import record_group, redo_lost_shards
from iprox_ray.store.embedding_store import EmbeddingStore
from iprox_ray.store.layout import embed_stage
from iprox_ray.store.markers import ShardMarkers
from iprox_ray.store.sketch_store import open_root
from iprox_ray.tasks.embed_task import EmbedInputs, EmbedShardTask
from iprox_ray.tasks.inputs import POOL, encoding_for, manifest_for, source_for, tokenizer_path
from iprox_ray.tasks.model_ref import ModelRef


def embedding_settings(ctx: RunContext, kind: str) -> dict:
    return embedding_kind(kind).settings(ctx.job.scoring.embed)


def embedding_fingerprint(ctx: RunContext, kind: str, split: str) -> str:
    sections = ["run.seed", "model", "warmup", "proxy", *DataSpec.encoding_keys(split == POOL)]
    return ctx.job.stage_fingerprint(*sections, *embedding_kind(kind).fingerprint_keys())


def embedding_dim(ctx: RunContext, kind: str, ref: ModelRef) -> int:
    return embedding_kind(kind).dim(ctx.job.scoring.embed, ref.meta)


def embed_markers(ctx: RunContext, kind: str, split: str) -> ShardMarkers:
    stage = embed_stage(kind, split)
    return ShardMarkers(ctx.layout.completions(stage), ctx.layout.failures(stage))


def run_embed(ctx: RunContext, wanted: list[tuple[str, str]], ref: ModelRef, plan: WorkerPlan) -> StageReport | None:
    """Embed every row of each (kind, split) in `wanted`; one worker pool serves them all."""
    if not wanted:
        return None
    job = ctx.job
    open_root(ctx.layout.store, job.fingerprint())
    work, inputs, encodings = [], {}, {}
    for kind, split in wanted:
        manifest = manifest_for(ctx, split)
        attrs = {"fingerprint": embedding_fingerprint(ctx, kind, split), "settings": embedding_settings(ctx, kind),
                 "model": ref.identity()}
        store = EmbeddingStore.create(ctx.layout.store, kind, split, manifest.n_shards, manifest.rows_per_shard,
                                      embedding_dim(ctx, kind, ref), attrs)
        stage = embed_stage(kind, split)
        markers = embed_markers(ctx, kind, split)
        record_group(ctx, stage, store)
        redo_lost_shards(ctx, stage, markers)
        work.append(StageWork(stage, store.n_shards, markers))
        encodings[stage] = encoding_for(ctx, split)
        inputs[stage] = EmbedInputs(split, kind, source_for(ctx, split),
                                    (ctx.layout.manifest(split), ctx.layout.manifest_info(split)))
    task = EmbedShardTask(
        name="embed",
        resources=plan.resources,
        splits=inputs,
        embed=job.scoring.embed,
        model=ref,
        tokenizer_dir=tokenizer_path(ctx.job),
        encodings=encodings,
        store_path=ctx.layout.store,
    )
    return run_sharded_stages(work, task, make_executor(plan), job.cluster.max_shard_retries,
                              show_progress=not ctx.quiet, guard=ctx.guard)
