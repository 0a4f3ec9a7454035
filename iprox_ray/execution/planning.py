"""Decide how many workers a stage gets and what each one holds, from the cluster's resources."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from dataclasses import dataclass
from typing import Iterator

from iprox_ray.execution.executors import Executor, InlineExecutor
from iprox_ray.execution.task import Resources


@dataclass(frozen=True)
class WorkerPlan:
    executor: str  # ray | inline
    num_workers: int
    resources: Resources
    # One executor for every stage under this plan (see shared_workers), not part of the plan's data.
    shared: Executor | None = dataclasses.field(default=None, compare=False, repr=False)


def plan_workers(
    executor: str,
    use_gpus: str,
    actors: int | None,
    threads_per_actor: int,
    cluster_cpus: float,
    cluster_gpus: float,
) -> WorkerPlan:
    """One actor per GPU when GPUs are used; otherwise `actors` CPU actors of `threads` threads.
    Inline: the one worker is the driver, and it uses every core it is given (`cluster_cpus`, else
    the cores this process may run on); `threads_per_actor` is a Ray actor's setting."""
    if executor == "inline":
        return WorkerPlan("inline", 1, Resources(cpus=0, gpus=0, threads=int(cluster_cpus) or usable_cores()))
    gpus = int(cluster_gpus)
    if use_gpus == "yes" and gpus == 0:
        raise RuntimeError("cluster.use_gpus = 'yes' but the Ray cluster has no GPU")
    if gpus and use_gpus != "no":
        return WorkerPlan("ray", gpus, Resources(cpus=threads_per_actor, gpus=1, threads=threads_per_actor))
    cpus = int(cluster_cpus or os.cpu_count() or 1)
    count = actors or max(1, cpus // threads_per_actor)
    # Never ask for more CPUs than exist, or extra actors would wait forever to be scheduled.
    per_actor = min(float(threads_per_actor), cpus / count)
    return WorkerPlan("ray", count, Resources(cpus=per_actor, gpus=0, threads=threads_per_actor))


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity: a SLURM task's cpus_per_task, a
    container's cpuset), not every core of the machine."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no affinity call on this platform
        return os.cpu_count() or 1


def make_executor(plan: WorkerPlan) -> Executor:
    """The plan's shared executor, else a fresh one whose workers end with its run."""
    if plan.shared is not None:
        return plan.shared
    if plan.executor == "inline":
        return InlineExecutor()
    from iprox_ray.execution.ray_pool import RayActorPoolExecutor

    return RayActorPoolExecutor(plan.num_workers)


@contextlib.contextmanager
def shared_workers(plan: WorkerPlan) -> Iterator[WorkerPlan]:
    """The plan with one Ray actor pool that every stage under it reuses: the worker processes
    start once, not once per stage. Closed (tasks torn down, actors ended) on exit."""
    if plan.executor == "inline":
        yield plan
        return
    from iprox_ray.execution.ray_pool import RayActorPoolExecutor

    pool = RayActorPoolExecutor(plan.num_workers, keep_actors=True)
    try:
        yield dataclasses.replace(plan, shared=pool)
    finally:
        pool.close()
