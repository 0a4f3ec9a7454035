"""What every pipeline stage sees: the job, the run layout, timings, and a printer."""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from iprox_ray.execution.task import ShardRef
from iprox_ray.spec import JobSpec
from iprox_ray.store import driver_arrays
from iprox_ray.store.atomic import atomic_write_json, read_json
from iprox_ray.store.layout import RunLayout
from iprox_ray.store.lock import RunLock, RunLockedError, describe_owner


@dataclass
class RunContext:
    job: JobSpec
    layout: RunLayout
    quiet: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    shard_filter: Callable[[ShardRef], bool] | None = None  # a run part (array job) owns only some shards
    lock: RunLock | None = None  # the lock this run holds (None: the caller holds no lock, e.g. a benchmark)

    def guard(self, what: str) -> None:
        """Stop before a write that replaces or deletes data unless this run still holds its lock
        (a --break-lock elsewhere hands the directory to another run: two writers would mix)."""
        if self.lock is not None and not self.lock.still_held():
            owner = self.lock.owner()
            now = f"now held by {describe_owner(owner)}" if owner else "released by someone else"
            raise RunLockedError(f"the lock of {self.layout.root} was taken over while this run held it ({now}); "
                                 f"stopping before it would {what}")

    def say(self, message: str) -> None:
        if not self.quiet:
            print(message, file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - start

    # driver-side stage markers: a finished stage is not redone while the outputs it recorded exist
    def stage_done(self, stage: str) -> dict | None:
        path = self.layout.stage_done(stage)
        if not path.exists():
            return None
        info = read_json(path)
        missing = [p for p in info.get("outputs", []) if not (self.layout.root / p).exists()]
        lost = driver_arrays.lost_chunk(self.layout.store, info.get("arrays", {})) if not missing else None
        if missing or lost:
            print(f"{stage}: its output {missing[0] if missing else lost} is missing; redoing the stage",
                  file=sys.stderr, flush=True)
            return None
        return info

    def mark_stage_done(self, stage: str, info: dict, outputs: tuple[Path, ...] = ()) -> None:
        """`outputs`: files or folders the stage wrote inside the run directory."""
        self.guard(f"mark stage {stage} done")
        kept = [str(Path(p).resolve().relative_to(self.layout.root.resolve())) for p in outputs]
        atomic_write_json(self.layout.stage_done(stage),
                          {**info, "stage": stage, "finished_at": time.time(), "outputs": kept})
