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

from iprox_ray.driver.run import Run, forget_target
from iprox_ray.driver.rundir import attach_run
from iprox_ray.execution.launchers import launcher_for
from iprox_ray.spec import JobSpec
from iprox_ray.spec.base import SAFE_NAME, apply_override, diff_keys, fingerprint, is_safe_name
from iprox_ray.spec.job import build_job
from iprox_ray.stages.embed import embed_markers
from iprox_ray.stages.intact import require_intact
from iprox_ray.stages.model_files import (
    changed_inputs,
    check_model_files,
    input_fingerprints,
)
from iprox_ray.stages.proxy import run_proxy
from iprox_ray.stages.sketch import markers_for
from iprox_ray.stages.warmup import run_warmup
from iprox_ray.store.atomic import atomic_write_json, read_json
from iprox_ray.store.layout import LANDMARKS, MAIN_TARGET, RunLayout, dedup_stage, embed_stage, sketch_stage
from iprox_ray.store.sketch_store import SplitStore, open_root
from iprox_ray.tasks.inputs import POOL, target_split

FREE_KEYS = ("data.target", "data.format.target", "selection", "scoring.method", "scoring.aggregate", "scoring.seed",
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
    changed = diff_keys(_without(config["science"], FREE_KEYS), _without(job.science(), FREE_KEYS))
    if changed:
        raise RescoreError("a new target may not change what decided the pool's store "
                           f"(changed: {', '.join(changed)}); "
                           f"only {', '.join(FREE_KEYS)} may differ")
    return job, config


def default_name(target_paths: list[str]) -> str:
    stem = Path(target_paths[0]).name.split(".")[0]
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stem) or "target"


def check_pool_ready(run: Run) -> None:
    """The pool must be finished and hold what the method reads; nothing is computed for it here."""
    ctx, method = run.ctx, run.method
    if not ctx.stage_done(dedup_stage(POOL)):
        raise RescoreError(f"the run in {ctx.layout.root} has not finished its pool; run `iprox-ray run` first")
    needs = method.needs
    require_intact(ctx, sketch_stage(POOL), markers_for(ctx, POOL))  # a lost chunk would read as padding
    for kind in needs.embeddings:
        require_intact(ctx, embed_stage(kind, POOL), embed_markers(ctx, kind, POOL))
    pool = SplitStore.open(ctx.layout.store, POOL, mode="r")
    sketched = pool.group.attrs.get("sketched_rows", "all")
    if needs.pool_sketch == "all" and sketched != "all":
        raise RescoreError(f"{method.name} needs every pool row sketched; this run sketched {sketched}")
    if needs.pool_sketch == "landmarks" and LANDMARKS not in open_root(ctx.layout.store):
        raise RescoreError(f"{method.name} needs the pool's landmarks; this run chose none")
    if needs.pool_sketch == "landmarks" and sketched != "all" and sketched.get("subset") != "landmarks":
        raise RescoreError(f"{method.name} needs the landmarks' sketches; this run sketched {sketched}")
    for kind in needs.embeddings:
        if len(embed_markers(ctx, kind, POOL).done_ids()) < pool.n_shards:
            raise RescoreError(f"{method.name} needs {kind} embeddings of the whole pool; "
                               "this run has not computed them")


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
              "fingerprint": fingerprint({"target": job.science()["data"]["target"],
                                          "selection": job.science()["selection"],
                                          "scoring": job.science()["scoring"]})}
    with attach_run(job, layout, quiet, break_lock) as ctx:
        run = Run(ctx)
        check_pool_ready(run)
        check_model_files(job)
        swapped = changed_inputs(read_json(layout.config).get("inputs", {}),
                                 input_fingerprints(job, layout.file_hashes))
        if swapped:
            raise RescoreError(f"the model files changed since the pool was sketched ({'; '.join(swapped[:4])}): "
                               "a target sketched now would not match the pool; restore them")
        record_path = layout.target_record(name)
        if record_path.exists() and read_json(record_path)["fingerprint"] != record["fingerprint"]:
            if not force:
                raise RescoreError(f"target {name!r} was scored with other settings ({record_path}); "
                                   "use --force to replace it, or another --name")
            forget_target(layout, name)
        atomic_write_json(record_path, record)
        manifests = run.manifests([POOL, split])
        run.preflight([split])
        ref = run_proxy(ctx, run_warmup(ctx))  # both finished: this only reads their markers
        with launcher_for(job).workers(job) as plan:
            run.sketch(ref, plan, [split])  # the target only: the pool is never re-sketched
        run.dedup({split: manifests[split]})
        return run.finish_target(name, split, manifests, ref, layout.target_summary(name))
