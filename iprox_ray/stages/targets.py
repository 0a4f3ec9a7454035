"""Method-dependent glue shared by `iprox-ray run` and `iprox-ray score`: what the pool needs
before sketching (embeddings, landmarks), and the per-target tail (score → select → outputs).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from iprox_ray.corpus.manifest import Manifest
from iprox_ray.execution.planning import WorkerPlan
from iprox_ray.stages.context import RunContext
from iprox_ray.stages.embed import run_embed
from iprox_ray.stages.landmark_fidelity import landmark_fidelity
from iprox_ray.stages.inputs import POOL
from iprox_ray.stages.landmarks import run_landmarks
from iprox_ray.stages.model_ref import ModelRef
from iprox_ray.stages.report import build_summary, format_summary, score_histogram
from iprox_ray.stages.score import check_scoring, pool_needs, run_score
from iprox_ray.stages.select import run_select
from iprox_ray.stages.sketch import RowSubset
from iprox_ray.stages.subset import write_subset
from iprox_ray.store.sketch_store import open_root


NO_ROWS = RowSubset("none", np.empty(0, np.int64), "none")


def embed_jobs(method: str, splits: list[str]) -> list[tuple[str, str]]:
    """(kind, split) embedding passes a method needs: the pool's, and the targets' for rds+."""
    kinds = pool_needs(method)["embed"]
    return [(kind, split) for kind in kinds for split in splits if split == POOL or kind == "rds"]


def target_subsets(method: str, target_splits: list[str]) -> dict[str, RowSubset]:
    """Targets a method scores without their sketches (rds+, random, mid-ppl): metadata only."""
    return {} if pool_needs(method)["target_sketch"] else {split: NO_ROWS for split in target_splits}


def prepare_pool(ctx: RunContext, ref: ModelRef, plan: WorkerPlan, target_splits: list[str]) -> dict[str, RowSubset]:
    """Run the embedding passes and choose landmarks; returns the sketch subsets of the pool and
    targets where a split is not sketched whole."""
    check_scoring(ctx.job)
    method = ctx.job.scoring.method
    jobs = embed_jobs(method, [POOL, *target_splits])
    if jobs:
        with ctx.timed("embed"):
            run_embed(ctx, jobs, ref, plan)
    subsets = target_subsets(method, target_splits)
    sketch = pool_needs(method)["sketch"]
    if sketch == "landmarks":
        with ctx.timed("landmarks"):
            landmarks = run_landmarks(ctx)
        if ctx.job.scoring.landmarks.sketch == "landmarks":
            subsets[POOL] = landmarks
    if sketch == "none":
        subsets[POOL] = NO_ROWS
    return subsets


def finish_target(ctx: RunContext, name: str, split: str, manifests: dict[str, Manifest], ref: ModelRef,
                  summary_path: Path | None = None) -> dict:
    """Score, select, write the subset and the plot, and summarise one target."""
    with ctx.timed("score"):
        scores_name = run_score(ctx, split, name, ref=ref)
    with ctx.timed("select"):
        info = run_select(ctx, scores_name, manifests[POOL], name)
    with ctx.timed("outputs"):
        out_dir = ctx.layout.selection_dir(name)
        selection = pq.read_table(info["selection"])
        if ctx.job.output.subset:
            write_subset(selection, manifests[POOL], out_dir)
        if ctx.job.output.plot:
            score_histogram(ctx, scores_name, info["cutoff"], out_dir / "scores.png", selection=selection)
    extra = {}
    if ctx.job.scoring.method == "influence-distillation":
        extra["landmark_holdout"] = open_root(ctx.layout.store)[scores_name].attrs.get("holdout")
        if ctx.job.scoring.landmarks.sketch == "all":
            extra["landmark_fidelity"] = landmark_fidelity(ctx, split, scores_name)
    summary = build_summary(ctx, name, info, manifests, summary_path, extra)
    print(format_summary(summary))
    return summary
