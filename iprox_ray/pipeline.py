"""The pipeline: warm-up → proxy → (embed → landmarks) → sketch target/pool → dedup → score →
select → outputs.

Every stage is idempotent (markers under the run directory), so rerunning the same command after a
crash resumes where it stopped and produces the same bytes.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from iprox_ray.execution.slurm_jobs import slurm_owner_gone
from iprox_ray.execution.task import ShardRef
from iprox_ray.spec import JobSpec
from iprox_ray.methods import method_for
from iprox_ray.run import Run, worker_plan
from iprox_ray.spec.base import diff_keys
from iprox_ray.stages.context import RunContext
from iprox_ray.stages.fidelity import fidelity_report, format_report
from iprox_ray.stages.fidelity_landmarks import (
    format_landmark_section,
    landmark_section,
)
from iprox_ray.stages.inputs import POOL, manifest_for, target_split
from iprox_ray.stages.model_files import (
    changed_inputs,
    check_model_files,
    input_fingerprints,
)
from iprox_ray.stages.model_ref import ModelRef
from iprox_ray.stages.proxy import checked_model, run_proxy
from iprox_ray.stages.warmup import run_warmup
from iprox_ray.store.atomic import atomic_write_json, read_json
from iprox_ray.store.layout import RunLayout
from iprox_ray.store.lock import RunLock, RunLockedError, describe_owner
from iprox_ray.store.sketch_store import SCHEMA_VERSION

MAIN_TARGET = "main"


class RunMismatchError(RuntimeError):
    pass


def check_run_dir(job: JobSpec, layout: RunLayout, force_new: bool, inputs: dict | None = None) -> None:
    """Refuse a run directory made by another config, other model files or an older on-disk
    schema, or move it aside with force_new. `inputs`: this job's file fingerprints (input_fingerprints)."""
    if not layout.config.exists():
        return
    old = read_json(layout.config)
    version = old.get("schema_version", 1)
    swapped = changed_inputs(old.get("inputs", {}), inputs) if inputs is not None and version == SCHEMA_VERSION else []
    if old.get("fingerprint") == job.fingerprint() and not swapped and version == SCHEMA_VERSION:
        return
    if not force_new:
        if version != SCHEMA_VERSION:
            raise RunMismatchError(
                f"run directory {layout.root} was written by another iprox-ray version (on-disk schema {version}, "
                f"this build writes {SCHEMA_VERSION}); use another run directory, or --force-new to move it aside")
        if swapped:
            raise RunMismatchError(
                f"the model files changed since run directory {layout.root} was started ({'; '.join(swapped[:4])}); "
                "resuming would mix two models in one store: restore the files, or use --force-new to start anew")
        changed = diff_keys(old.get("science", {}), job.science())
        raise RunMismatchError(
            f"run directory {layout.root} holds a run with config fingerprint {old.get('fingerprint')}, "
            f"this job has {job.fingerprint()} (changed: {', '.join(changed) or 'unknown'}); "
            "use another run directory, or --force-new to move the old run aside"
        )
    # Move everything but our lock aside, so the directory stays locked throughout.
    aside = _aside_dir(layout.root)
    for entry in layout.root.iterdir():
        if entry != layout.lock:
            shutil.move(str(entry), str(aside / entry.name))
    print(f"moved the previous run to {aside}")


def _aside_dir(root: Path) -> Path:
    """A new folder beside the run directory for the replaced run (a second --force-new within the
    same second gets its own)."""
    stamp = f"{root.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}"
    for n in range(1, 1000):
        aside = root.with_name(stamp if n == 1 else f"{stamp}-{n}")
        try:
            aside.mkdir()
            return aside
        except FileExistsError:
            continue
    raise RunMismatchError(f"cannot find a free name beside {root} to move the previous run to")


def write_config(job: JobSpec, layout: RunLayout, inputs: dict | None = None) -> None:
    atomic_write_json(layout.config, {
        "schema_version": SCHEMA_VERSION,
        "fingerprint": job.fingerprint(),
        "inputs": inputs or {},
        "science": job.science(),
        "spec": job.model_dump(mode="json"),
        "base_dir": str(job.base_dir),
    })


@dataclass(frozen=True)
class RunPart:
    """A slice of a run (SLURM array mode): sketch only the shards `owns` accepts, then stop.

    A part with a `group` takes that group's own lock, so the groups of one array run side by
    side; a part without one (the array's prepare step) takes the run's lock like a whole run
    and does the driver-side work every group needs (warm-up, proxy, fidelity, embeddings,
    landmarks).
    """

    label: str
    owns: Callable[[ShardRef], bool]
    group: int | None = None


@contextlib.contextmanager
def locked_run(layout: RunLayout, break_lock: bool = False, group: int | None = None) -> Iterator[RunLock]:
    """The locks every writer of a run directory takes: its LOCK, with no array group sketching
    there; or, for an array group, that group's own lock with LOCK free (the groups of one array
    run side by side). `run`, `score` and `verify --repair` all come through here."""
    lock_path = layout.group_lock(group) if group is not None else layout.lock
    with RunLock(lock_path, force=break_lock, probes=(slurm_owner_gone,)) as lock:
        if group is not None:
            _refuse_if_held(RunLock(layout.lock, probes=(slurm_owner_gone,)))
        else:  # a whole run waits for the array tasks sketching in this directory
            for group_lock in layout.group_locks():
                _refuse_if_held(RunLock(group_lock, probes=(slurm_owner_gone,)))
        yield lock


@contextlib.contextmanager
def open_run(job: JobSpec, run_dir: Path | None = None, force_new: bool = False, quiet: bool = False,
             break_lock: bool = False, part: RunPart | None = None) -> Iterator[RunContext]:
    """Lock the run directory, check (or record) its config, and hand out the run's context."""
    layout = RunLayout(Path(run_dir) if run_dir else job.run_dir())
    layout.root.mkdir(parents=True, exist_ok=True)
    with locked_run(layout, break_lock, part.group if part is not None else None) as lock:
        check_model_files(job)
        inputs = input_fingerprints(job, layout.file_hashes)
        check_run_dir(job, layout, force_new, inputs)
        write_config(job, layout, inputs)
        ctx = RunContext(job, layout, quiet=quiet, lock=lock)
        ctx.shard_filter = part.owns if part else None
        yield ctx


def _refuse_if_held(lock: RunLock) -> None:
    owner = lock.owner()
    if owner is not None and not lock.is_stale(owner):
        raise RunLockedError(f"run directory {lock.path.parent} is in use by another run ({describe_owner(owner)})")


def run_job(job: JobSpec, run_dir: Path | None = None, force_new: bool = False, quiet: bool = False,
            break_lock: bool = False, part: RunPart | None = None) -> dict:
    with open_run(job, run_dir, force_new, quiet, break_lock, part) as ctx:
        return _run_stages(ctx, part)


def build_models(ctx: RunContext) -> tuple[Path, ModelRef]:
    """Manifests, warm-up and proxy: everything before the first sharded stage."""
    run = Run(ctx)
    splits = [POOL, target_split(MAIN_TARGET)]
    run.manifests(splits)
    run.preflight(splits)
    with ctx.timed("warmup"):
        warmed = run_warmup(ctx)
    with ctx.timed("proxy"):
        ref = run_proxy(ctx, warmed)
    return warmed, ref


def check_fidelity(ctx: RunContext, warmed: Path, ref: ModelRef) -> dict | None:
    """Proxy vs target (when there is a proxy) and, for Influence Distillation, landmark propagation."""
    proxy = checked_model(ctx, ref)  # under 'auto': the candidate (its report is the one that chose)
    same = proxy.kind == "hf" and proxy.path == warmed
    landmarks = method_for(ctx.job).uses_landmarks
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


def _run_stages(ctx: RunContext, part: RunPart | None = None) -> dict:
    run = Run(ctx)
    target = target_split(MAIN_TARGET)
    warmed, ref = build_models(ctx)
    manifests = {split: manifest_for(ctx, split) for split in (POOL, target)}  # frozen by build_models
    if ctx.job.fidelity.enabled and (part is None or part.group is None):  # once per run, before the sketching
        check_fidelity(ctx, warmed, ref)
    with worker_plan(ctx.job) as plan:
        ctx.say(f"sketching with {plan.num_workers} {plan.executor} worker(s), {plan.resources}")
        report = run.sketch(ref, plan, [target, POOL])
    if part is not None:  # a run part stops after its own shards
        return {"part": True, "shards_run": report.shards_run, "rows": report.rows, "timings": ctx.timings}
    run.dedup(manifests)
    return run.finish_target(MAIN_TARGET, target, manifests, ref)
