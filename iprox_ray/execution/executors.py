"""Executors run a ShardTask over shard ids and report each outcome through callbacks."""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Callable, Protocol

from iprox_ray.execution.task import ShardRef, ShardTask

OnResult = Callable[[ShardRef, dict], None]
OnFailure = Callable[[ShardRef, str, int, bool], None]  # shard, error, attempt, final
OnStart = Callable[[ShardRef, dict], None]  # shard, {attempt, worker}


@dataclass
class Callbacks:
    on_result: OnResult
    on_failure: OnFailure
    on_start: OnStart | None = None

    def started(self, ref: ShardRef, attempt: int, worker: int) -> None:
        if self.on_start is not None:
            self.on_start(ref, {"attempt": attempt, "worker": worker})


class Executor(Protocol):
    def run(self, task: ShardTask, refs: list[ShardRef], callbacks: Callbacks, max_retries: int) -> dict[ShardRef, str]:
        """Process every shard; returns {shard: last error} for shards that failed for good."""


def short_error(exc: BaseException) -> str:
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return text[-2000:]


class InlineExecutor:
    """Runs the task in the driver process, one shard after another (debugging, tiny jobs)."""

    def run(self, task: ShardTask, refs: list[ShardRef], callbacks: Callbacks, max_retries: int) -> dict[ShardRef, str]:
        # No thread env vars here: numba/OpenMP read them once per process, and this is the
        # driver's process. The task's setup() sets torch's thread count itself.
        failed: dict[ShardRef, str] = {}
        task.setup()
        try:
            for shard in refs:
                for attempt in range(1, max_retries + 2):
                    callbacks.started(shard, attempt, 0)
                    try:
                        stats = task.process(shard)
                    except Exception as exc:  # a shard failure must not stop the others
                        final = attempt > max_retries
                        callbacks.on_failure(shard, short_error(exc), attempt, final)
                        if final:
                            failed[shard] = short_error(exc)
                        continue
                    callbacks.on_result(shard, stats)
                    break
        finally:
            task.teardown()
        return failed
