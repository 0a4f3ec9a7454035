"""The one extension point of the execution layer: a task that processes shards by id.

Resources are declared as data on the task; the executor reads them, the task never launches
anything. Lifecycle (NeMo Curator style): setup() once per worker, process(shard) many times,
teardown() once. A task must be picklable and its process() idempotent: a shard may be retried,
or processed twice by duplicate workers, and must produce the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class Resources:
    cpus: float = 1.0
    gpus: float = 0.0
    threads: int = 1  # math-library threads inside one worker

    def thread_env(self) -> dict[str, str]:
        n = str(self.threads)
        return {"OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "NUMBA_NUM_THREADS": n}


@dataclass(frozen=True, order=True)
class ShardRef:
    """One unit of work: shard `shard` of the stage named `stage` (e.g. sketch-pool)."""

    stage: str
    shard: int


@runtime_checkable
class ShardTask(Protocol):
    name: str
    resources: Resources

    def setup(self) -> None: ...

    def process(self, ref: ShardRef) -> dict[str, Any]: ...

    def teardown(self) -> None: ...


class ShardFailed(RuntimeError):
    """Raised by an executor when shards kept failing after their retries."""

    def __init__(self, failures: dict[ShardRef, str]):
        ref, error = next(iter(failures.items()))
        super().__init__(f"{len(failures)} shard(s) failed; {ref.stage} shard {ref.shard}: {error}")
        self.failures = failures


class WorkersLostError(RuntimeError):
    """More workers died (killed, out of memory, a crashed node) than the executor allows."""
