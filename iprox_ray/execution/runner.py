"""Run sharded stages idempotently: skip shards with a completion marker, mark the rest.

Several stages can share one worker pool (e.g. sketching the target and the pool with the same
model replicas), so workers are set up once.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

from tqdm import tqdm

from iprox_ray.execution.executors import Callbacks, Executor
from iprox_ray.execution.task import ShardFailed, ShardRef, ShardTask
from iprox_ray.store.markers import ShardMarkers


@dataclass(frozen=True)
class StageWork:
    stage: str
    n_shards: int
    markers: ShardMarkers


@dataclass
class StageReport:
    shards_total: int
    shards_skipped: int
    shards_run: int = 0
    rows: int = 0
    seconds: float = 0.0
    failures: dict[ShardRef, str] = field(default_factory=dict)


def run_sharded_stages(
    work: list[StageWork],
    task: ShardTask,
    executor: Executor,
    max_retries: int = 2,
    show_progress: bool = True,
    select: Callable[[ShardRef], bool] | None = None,
    guard: Callable[[str], None] | None = None,
) -> StageReport:
    """`select` restricts the run to some shards (an array job owns a fixed subset); `guard(what)`
    raises when the caller may no longer write (e.g. its run lock was taken over)."""
    markers = {w.stage: w.markers for w in work}
    todo = []
    for w in work:
        done = w.markers.done_ids()
        mine = [ShardRef(w.stage, s) for s in range(w.n_shards) if select is None or select(ShardRef(w.stage, s))]
        todo += [ref for ref in mine if ref.shard not in done]
    total = sum(w.n_shards for w in work)
    report = StageReport(total, total - len(todo))
    if not todo:
        return report
    if select is None:  # a whole-run driver owns every in-flight record; an array job only its own
        for w in work:
            w.markers.clear_all_started()
    else:
        for ref in todo:
            markers[ref.stage].clear_started(ref.shard)
    start = time.perf_counter()
    label = "+".join(w.stage for w in work)
    bar = tqdm(total=total, initial=report.shards_skipped, desc=label, unit="shard",
               disable=not show_progress, file=sys.stderr, dynamic_ncols=True)

    driver = {"host": socket.gethostname(), "pid": os.getpid(), "slurm_job_id": os.environ.get("SLURM_JOB_ID")}

    def on_start(ref: ShardRef, info: dict) -> None:
        markers[ref.stage].mark_started(ref.shard, {**info, "driver": driver})

    def on_result(ref: ShardRef, stats: dict) -> None:
        if guard is not None:
            guard(f"mark {ref.stage} shard {ref.shard} done")
        markers[ref.stage].mark_done(ref.shard, stats)
        markers[ref.stage].clear_started(ref.shard)
        report.shards_run += 1
        report.rows += int(stats.get("rows", 0))
        bar.update(1)
        bar.set_postfix(rows_per_s=f"{report.rows / max(time.perf_counter() - start, 1e-9):.0f}")

    def on_failure(ref: ShardRef, error: str, attempt: int, final: bool) -> None:
        markers[ref.stage].record_failure(ref.shard, error, attempt, final)
        markers[ref.stage].clear_started(ref.shard)
        last = error.strip().splitlines()[-1] if error.strip() else ""
        tqdm.write(f"[{ref.stage}] shard {ref.shard} failed (attempt {attempt}"
                   f"{', giving up' if final else ''}): {last}", file=sys.stderr)

    try:
        report.failures = executor.run(task, todo, Callbacks(on_result, on_failure, on_start), max_retries)
    finally:
        bar.close()
    report.seconds = time.perf_counter() - start
    if report.failures:
        raise ShardFailed(report.failures)
    return report
