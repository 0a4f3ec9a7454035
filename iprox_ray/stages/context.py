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
from iprox_ray.store.atomic import atomic_write_json, read_json
from iprox_ray.store.layout import RunLayout


@dataclass
class RunContext:
    job: JobSpec
    layout: RunLayout
    quiet: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    shard_filter: Callable[[ShardRef], bool] | None = None  # a run part (array job) owns only some shards

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
        if missing:
            print(f"{stage}: its output {missing[0]} is missing; redoing the stage", file=sys.stderr, flush=True)
            return None
        return info

    def mark_stage_done(self, stage: str, info: dict, outputs: tuple[Path, ...] = ()) -> None:
        """`outputs`: files or folders the stage wrote inside the run directory."""
        kept = [str(Path(p).resolve().relative_to(self.layout.root.resolve())) for p in outputs]
        atomic_write_json(self.layout.stage_done(stage),
                          {**info, "stage": stage, "finished_at": time.time(), "outputs": kept})
