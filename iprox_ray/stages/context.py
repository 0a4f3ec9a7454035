"""What every pipeline stage sees: the job, the run layout, timings, and a printer."""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass, field
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
    ray_resources: dict | None = None  # set while an executor session is open
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

    # driver-side stage markers: a stage that finished is never redone
    def stage_done(self, stage: str) -> dict | None:
        path = self.layout.stage_done(stage)
        return read_json(path) if path.exists() else None

    def mark_stage_done(self, stage: str, info: dict) -> None:
        atomic_write_json(self.layout.stage_done(stage), {**info, "stage": stage, "finished_at": time.time()})
