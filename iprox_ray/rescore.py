"""One store, many targets: score a new target set against a finished run's pool.

Only the new target is sketched (store group `targets/<name>`); the pool's sketches, embeddings
and landmarks are read, never recomputed. The selection lands beside the first one, in
`selections/<name>/`. The run's config is the base; the new target may change only what does
not decide the pool's store (the target source, selection, and the scoring settings listed in
FREE_KEYS). A target name is bound to its settings (`selections/<name>/target.json`): rerunning
the same command resumes or re-prints; other settings under the same name refuse unless --force.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

from iprox_ray.pipeline import MAIN_TARGET, _diff_keys, worker_plan
from iprox_ray.spec import JobSpec
from iprox_ray.spec.base import SAFE_NAME, apply_override, fingerprint, is_safe_name
from iprox_ray.spec.job import build_job
from iprox_ray.stages.context import RunContext
from iprox_ray.stages.dedup import run_dedup
from iprox_ray.stages.embed import embed_markers, run_embed
from iprox_ray.stages.inputs import POOL, manifest_for, target_split
from iprox_ray.stages.landmarks import ARRAY as LANDMARKS
from iprox_ray.stages.model_files import (
    changed_inputs,
    check_model_files,
    input_fingerprints,
)
from iprox_ray.stages.preflight import check_inputs, check_sketched
from iprox_ray.stages.proxy import run_proxy
from iprox_ray.stages.rr_candidates import candidates_path
from iprox_ray.stages.score import (
    check_scoring,
    columns_array_path,
    pool_needs,
    score_array_path,
)
from iprox_ray.stages.sketch import run_sketch
from iprox_ray.stages.targets import embed_jobs, finish_target, target_subsets
from iprox_ray.stages.warmup import run_warmup
from iprox_ray.store.atomic import atomic_write_json, read_json, remove_tree_inside
from iprox_ray.store.embedding_store import embedding_group
from iprox_ray.store.layout import RunLayout, embed_stage, sketch_stage
from iprox_ray.store.lock import RunLock
from iprox_ray.store.sketch_store import SplitStore, open_root

FREE_KEYS = ("data.target", "selection", "scoring.method", "scoring.aggregate", "scoring.seed",
             "scoring.mid_ppl_center", "scoring.landmarks.kernel", "scoring.landmarks.ridge",
             "scoring.landmarks.bandwidth_sample", "scoring.second_order")


class RescoreError(RuntimeError):
    pass


def _without(tree: dict, dotted: tuple[str, ...]) -> dict:
    tree = copy.deepcopy(tree)
    for key in dotted:
        node, *path, last = [tree, *key.split(".")]
        for part in path:
            node = node.get(part, {})
        node.pop(last, None)
    return tree


def load_target_job(layout: RunLayout, target_paths: list[str], overrides: list[str],
                    cluster_profile: str | None = None) -> tuple[JobSpec, dict]:
    """The run's job with the new target's paths and the overrides; refuses pool-side changes."""
    if not layout.config.exists():
        raise RescoreError(f"{layout.root} is not an iprox-ray run directory (no config.json)")
    config = read_json(layout.config)
    tree = copy.deepcopy(config["spec"])
    tree["data"]["target"]["paths"] = [str(Path(p).expanduser().resolve()) for p in target_paths]
    for assignment in overrides:
        apply_override(tree, assignment)
    job = build_job(tree, Path(config["base_dir"]), f"{layout.config} with --target",
                    Path(cluster_profile) if cluster_profile else None)
    changed = _diff_keys(_without(config["science"], FREE_KEYS), _without(job.science(), FREE_KEYS))
    if changed:
        raise RescoreError(f"a new target may not change what decided the pool's store (changed: {', '.join(changed)}); "
                           f"only {', '.join(FREE_KEYS)} may differ")
    return job, config


def default_name(target_paths: list[str]) -> str:
    stem = Path(target_paths[0]).name.split(".")[0]
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stem) or "target"


def check_pool_ready(ctx: RunContext) -> None:
    """The pool must be finished and hold what the method reads; nothing is computed for it here."""
    if not ctx.stage_done(f"dedup-{POOL}"):
        raise RescoreError(f"the run in {ctx.layout.root} has not finished its pool; run `iprox-ray run` first")
    method = ctx.job.scoring.method
    needs = pool_needs(method)
    pool = SplitStore.open(ctx.layout.store, POOL, mode="r")
    sketched = pool.group.attrs.get("sketched_rows", "all")
    if needs["sketch"] == "all" and sketched != "all":
        raise RescoreError(f"{method} needs every pool row sketched; this run sketched {sketched}")
    if needs["sketch"] == "landmarks" and LANDMARKS not in open_root(ctx.layout.store):
        raise RescoreError(f"{method} needs the pool's landmarks; this run chose none")
    if needs["sketch"] == "landmarks" and sketched != "all" and sketched.get("subset") != "landmarks":
        raise RescoreError(f"{method} needs the landmarks' sketches; this run sketched {sketched}")
    for kind in needs["embed"]:
        if len(embed_markers(ctx, kind, POOL).done_ids()) < pool.n_shards:
            raise RescoreError(f"{method} needs {kind} embeddings of the whole pool; this run has not computed them")


def forget_target(layout: RunLayout, name: str) -> None:
    """Remove everything a previous scoring of target `name` wrote (never the pool's data)."""
    split = target_split(name)
    flat = split.replace("/", "-")
    for stage in [sketch_stage(split), embed_stage("rds", split)]:
        for folder in (layout.completions(stage), layout.failures(stage)):
            remove_tree_inside(layout.root, folder)
    for stage in (f"dedup-{flat}", f"preflight-{flat}", f"score-{name}", f"select-{name}"):
        layout.stage_done(stage).unlink(missing_ok=True)
    for path in (layout.manifest(split), layout.manifest_info(split)):
        path.unlink(missing_ok=True)
    remove_tree_inside(layout.root, layout.quarantine_dir(split))
    remove_tree_inside(layout.root, layout.selection_dir(name))
    root = open_root(layout.store)
    for group in (split, embedding_group("rds", split), score_array_path(name), columns_array_path(name),
                  candidates_path(name)):
        if group in root:
            del root[group]


def score_target(run_dir: Path, target_paths: list[str], name: str | None = None, overrides: list[str] | None = None,
                 force: bool = False, quiet: bool = False, break_lock: bool = False,
                 cluster_profile: str | None = None) -> dict:
    layout = RunLayout(Path(run_dir))
    name = name or default_name(target_paths)
    if not is_safe_name(name) or name == MAIN_TARGET:
        raise RescoreError(f"target name {name!r} must match {SAFE_NAME}, not be only dots and not be {MAIN_TARGET!r}")
    job, _ = load_target_job(layout, target_paths, overrides or [], cluster_profile)
    split = target_split(name)
    record = {"name": name, "paths": list(job.data.target.paths),
              "fingerprint": fingerprint({"target": job.science()["data"]["target"], "selection": job.science()["selection"],
                                          "scoring": job.science()["scoring"]})}
    with RunLock(layout.lock, force=break_lock):
        ctx = RunContext(job, layout, quiet=quiet)
        check_scoring(job)
        check_pool_ready(ctx)
        check_model_files(job)
        swapped = changed_inputs(read_json(layout.config).get("inputs", {}), input_fingerprints(job))
        if swapped:
            raise RescoreError(f"the model files changed since the pool was sketched ({'; '.join(swapped[:4])}): "
                               "a target sketched now would not match the pool; restore them")
        record_path = layout.selection_dir(name) / "target.json"
        if record_path.exists() and read_json(record_path)["fingerprint"] != record["fingerprint"]:
            if not force:
                raise RescoreError(f"target {name!r} was scored with other settings ({record_path}); "
                                   "use --force to replace it, or another --name")
            forget_target(layout, name)
        atomic_write_json(record_path, record)
        with ctx.timed("manifest"):
            manifests = {POOL: manifest_for(ctx, POOL), split: manifest_for(ctx, split)}
        with ctx.timed("preflight"):
            check_inputs(ctx, [split])
        ref = run_proxy(ctx, run_warmup(ctx))  # both finished: this only reads their markers
        with worker_plan(job) as plan:
            jobs = embed_jobs(job.scoring.method, [split])
            with ctx.timed("sketch"):
                # The target only (metadata only where the method needs no target sketch): the
                # pool is never re-sketched.
                run_sketch(ctx, [split], ref, plan, target_subsets(job.scoring.method, [split]))
            if jobs:
                with ctx.timed("embed"):
                    run_embed(ctx, jobs, ref, plan)
        check_sketched(ctx, {split: manifests[split]})
        with ctx.timed("dedup"):
            run_dedup(ctx, split, manifests[split])
        return finish_target(ctx, name, split, manifests, ref, layout.selection_dir(name) / "summary.json")

