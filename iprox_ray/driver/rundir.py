"""Open a run directory, once, for every command that writes in it: lock it, check that it holds
this job's run (or move an older one aside), record the config, hand out the run's context.

`iprox-ray run` and its SLURM parts (driver/pipeline.py), `iprox-ray score` (driver/rescore.py),
`iprox-ray verify --repair` and `iprox-ray submit`'s early check all come through here.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from iprox_ray.execution.context import RunContext
from iprox_ray.execution.launchers import lock_probes
from iprox_ray.execution.task import ShardRef
from iprox_ray.spec import JobSpec
from iprox_ray.spec.base import diff_keys
from iprox_ray.stages.model_files import changed_inputs, check_model_files, input_fingerprints
from iprox_ray.store.atomic import atomic_write_json, read_json
from iprox_ray.store.layout import RunLayout
from iprox_ray.store.lock import RunLock, RunLockedError, describe_owner
from iprox_ray.store.sketch_store import SCHEMA_VERSION


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
    with RunLock(lock_path, force=break_lock, probes=lock_probes()) as lock:
        if group is not None:
            _refuse_if_held(RunLock(layout.lock, probes=lock_probes()))
        else:  # a whole run waits for the array tasks sketching in this directory
            for group_lock in layout.group_locks():
                _refuse_if_held(RunLock(group_lock, probes=lock_probes()))
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


@contextlib.contextmanager
def attach_run(job: JobSpec, layout: RunLayout, quiet: bool = False, break_lock: bool = False) -> Iterator[RunContext]:
    """Lock an existing run directory without rewriting its config (a new target scored against it:
    the caller checks what may differ)."""
    with locked_run(layout, break_lock) as lock:
        yield RunContext(job, layout, quiet=quiet, lock=lock)


def check_lock_free(layout: RunLayout) -> None:
    """Refuse a run directory another live run holds (checked before work is handed elsewhere,
    e.g. to SLURM, where the job would only find out later)."""
    lock = RunLock(layout.lock, probes=lock_probes())
    owner = lock.owner()
    if owner is not None and not lock.is_stale(owner):
        raise RunLockedError(f"run directory {layout.root} is in use by another run ({describe_owner(owner)}); "
                             "if you are sure that run is dead, rerun with --break-lock")
