"""The steps `iprox-ray run` (driver/pipeline.py) and `iprox-ray score` (driver/rescore.py) share, on one open run.

`Run` wraps a locked run directory's context and its scoring method: the embed → landmarks →
sketch order, dedup, the per-target tail (score → select → outputs → summary) and the removal of
what a target wrote. Both commands call these, so a target is prepared the same way in both.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from iprox_ray.corpus.manifest import Manifest
from iprox_ray.execution.context import RunContext
from iprox_ray.execution.launchers import launcher_for
from iprox_ray.execution.planning import WorkerPlan
from iprox_ray.execution.runner import StageReport
from iprox_ray.methods import METHOD_NAMES, check_job, method_named
from iprox_ray.methods.base import ScoringMethod
from iprox_ray.sketch.kinds import check_sketch
from iprox_ray.stages.dedup import run_dedup
from iprox_ray.stages.embed import run_embed
from iprox_ray.stages.landmarks import run_landmarks
from iprox_ray.stages.preflight import check_inputs, check_round_robin_early, check_sketched
from iprox_ray.stages.report import build_summary, format_summary, score_histogram
from iprox_ray.stages.score import run_score
from iprox_ray.stages.select import run_select
from iprox_ray.stages.sketch import RowSubset, run_sketch
from iprox_ray.stages.subset import write_subset
from iprox_ray.store.atomic import remove_tree_inside
from iprox_ray.store.layout import (
    POOL,
    RunLayout,
    embedding_group,
    split_stages,
    target_arrays,
    target_split,
    target_stages,
)
from iprox_ray.store.sketch_store import open_root
from iprox_ray.tasks.inputs import manifest_for
from iprox_ray.tasks.model_ref import ModelRef
from iprox_ray.tasks.sketch_budget import budget_summary

NO_ROWS = RowSubset("none", np.empty(0, np.int64), "none")


def check_names(job) -> ScoringMethod:
    """What the spec stores as plain names, checked against their registries (the spec sits below
    them): the launcher, the sketch kind and the scoring method, with their settings. Once, when a
    job is loaded."""
    launcher_for(job)
    check_sketch(job.sketch)
    return check_job(job)


def target_embedding_kinds() -> tuple[str, ...]:
    """Every embedding kind some method computes for a target (a rescored target may change method)."""
    return tuple(dict.fromkeys(k for name in METHOD_NAMES for k in method_named(name).needs.target_embeddings))


def forget_target(layout: RunLayout, name: str) -> None:
    """Remove everything a previous scoring of target `name` wrote (never the pool's data)."""
    split = target_split(name)
    kinds = target_embedding_kinds()
    for stage in (*split_stages(split, kinds), *target_stages(name)):
        for folder in (layout.completions(stage), layout.failures(stage), layout.inflight(stage)):
            remove_tree_inside(layout.root, folder)
        layout.stage_done(stage).unlink(missing_ok=True)
        layout.group_record(stage).unlink(missing_ok=True)
    for path in (layout.manifest(split), layout.manifest_info(split)):
        path.unlink(missing_ok=True)
    remove_tree_inside(layout.root, layout.quarantine_dir(split))
    remove_tree_inside(layout.root, layout.windows_dir(split))
    remove_tree_inside(layout.root, layout.selection_dir(name))
    root = open_root(layout.store)
    for group in (split, *(embedding_group(kind, split) for kind in kinds), *target_arrays(name)):
        if group in root:
            del root[group]


class Run:
    """A locked run directory's context and its scoring method."""

    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        self.method = check_names(ctx.job)  # refused before any work

    def manifests(self, splits: list[str]) -> dict[str, Manifest]:
        with self.ctx.timed("manifest"):
            return {split: manifest_for(self.ctx, split) for split in splits}

    def preflight(self, splits: list[str]) -> None:
        with self.ctx.timed("preflight"):  # a split with no usable row stops here, not in a later stage
            check_inputs(self.ctx, splits)
            if self.ctx.job.selection.strategy == "round-robin" and not self.method.single_score:
                check_round_robin_early(self.ctx, splits)

    def sketch(self, ref: ModelRef, plan: WorkerPlan, splits: list[str]) -> StageReport:
        """Embeddings, then landmarks (when the pool is among `splits`), then the gradient sketches
        of the rows the method reads (metadata only for the others)."""
        ctx, method = self.ctx, self.method
        jobs = method.embed_jobs(sorted(splits, key=lambda split: split != POOL))  # the pool's first
        if jobs:
            with ctx.timed("embed"):
                run_embed(ctx, jobs, ref, plan)
        subsets = {} if method.needs.target_sketch else {split: NO_ROWS for split in splits if split != POOL}
        if POOL in splits and method.uses_landmarks:
            with ctx.timed("landmarks"):
                landmarks = run_landmarks(ctx)
            if ctx.job.scoring.landmarks.sketch == "landmarks":
                subsets[POOL] = landmarks
        if POOL in splits and method.needs.pool_sketch == "none":
            subsets[POOL] = NO_ROWS
        with ctx.timed("sketch"):
            return run_sketch(ctx, splits, ref, plan, subsets)

    def dedup(self, manifests: dict[str, Manifest]) -> None:
        """After the sketch stage: refuse a split left with no usable row, then mark duplicates."""
        check_sketched(self.ctx, manifests)
        with self.ctx.timed("dedup"):
            for split, manifest in manifests.items():
                run_dedup(self.ctx, split, manifest)

    def finish_target(self, name: str, split: str, manifests: dict[str, Manifest], ref: ModelRef,
                      summary_path: Path | None = None) -> dict:
        """Score, select, write the subset and the plot, and summarise one target."""
        ctx = self.ctx
        with ctx.timed("score"):
            scores_name = run_score(ctx, self.method, split, name, ref=ref)
        with ctx.timed("select"):
            info = run_select(ctx, scores_name, manifests[POOL], name)
        with ctx.timed("outputs"):
            ctx.guard(f"write the outputs of target {name!r}")
            # Only the columns each output reads: the selection may hold millions of rows.
            if ctx.job.output.subset:
                write_subset(Path(info["selection"]), manifests[POOL], ctx.layout.subset(name))
            if ctx.job.output.plot:
                picked = pq.read_table(info["selection"], columns=["score", "weight"])
                score_histogram(ctx, scores_name, info["cutoff"], ctx.layout.score_plot(name), selection=picked)
        extra = {**self.method.summary_extra(ctx, split, scores_name), **budget_summary(ctx)}
        summary = build_summary(ctx, name, info, manifests, summary_path, extra)
        print(format_summary(summary))
        write_run_report(ctx)
        return summary


def write_run_report(ctx: RunContext) -> None:
    """RUN_DIR/report.html, every target in it. The selection is written by now, so a report that
    fails says so in one line and leaves the run's result alone."""
    from iprox_ray.report import write_report

    try:
        with ctx.timed("report"):
            path = write_report(ctx.layout.root)
    except Exception as exc:  # noqa: BLE001 - a report bug must not fail a finished selection
        print(f"warning: the HTML report could not be written ({type(exc).__name__}: {exc}); "
              f"`iprox-ray report {ctx.layout.root}` tries again", flush=True)
        return
    print(f"report: {path} ({ctx.timings['report']:.1f}s)", flush=True)
