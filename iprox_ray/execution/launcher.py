"""A launcher: where a job's workers run, and what a run it started leaves to watch.

One subclass per launcher and one line in launchers.py's table (datatrove's executor shape);
`cluster.kind` names it. A launcher hands the sharded stages their workers, says what a node
holds (for the planner and `sketch.token_budget = "auto"`), gives the run lock the evidence that
an owner it started is gone, and reads its own records for `iprox-ray status`. Under any launcher
`cluster.executor = "inline"` runs the one worker in the driver's process (a SLURM array task
does, on its node).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Callable, ClassVar, Iterator

from iprox_ray.execution.planning import WorkerPlan, plan_workers, shared_workers
from iprox_ray.store.layout import RunLayout

LockProbe = Callable[[dict], "str | None"]  # owner info -> why it is gone, or None when unsure


@dataclass(frozen=True)
class NodeResources:
    """What the workers of one job run on: `nodes` nodes with `cpus` / `gpus` in all (0 CPUs:
    the inline worker takes its process's cores); `array`: each node is an independent job."""

    nodes: int
    cpus: int
    gpus: int
    array: bool = False


class Launcher:
    name: ClassVar[str]

    def resources(self, job) -> NodeResources:  # pragma: no cover - abstract
        raise NotImplementedError

    def node_memory(self, job) -> tuple[int, str] | None:
        """A node's memory in bytes and where the figure comes from; None: this machine's."""
        return None

    @contextlib.contextmanager
    def workers(self, job) -> Iterator[WorkerPlan]:
        """The workers of the sharded stages, for the whole driver session: inline, or Ray actors
        on the Ray cluster at `cluster.ray_address` ('local' starts an embedded one)."""
        c = job.cluster
        if c.executor == "inline":
            yield plan_workers("inline", c.use_gpus, c.actors, c.threads_per_actor, 0, 0)
            return
        from iprox_ray.execution.ray_session import ray_session  # ray is imported only when used

        with ray_session(c.ray_address, auth=c.slurm.ray_auth) as found:
            with shared_workers(plan_workers("ray", c.use_gpus, c.actors, c.threads_per_actor,
                                             found.get("CPU", 0), found.get("GPU", 0))) as plan:
                yield plan

    def lock_probes(self) -> tuple[LockProbe, ...]:
        """Evidence that a lock's owner this launcher started has ended (beyond host and pid)."""
        return ()

    def status(self, layout: RunLayout) -> dict:
        """This launcher's records of a run, merged into `iprox-ray status --json`."""
        return {}

    def status_lines(self, status: dict) -> list[str]:
        """Its part of `iprox-ray status`, from what status() returned."""
        return []


def gpus_here() -> int:
    import torch  # only resource discovery: no model code in this layer

    return torch.cuda.device_count()


class LocalLauncher(Launcher):
    """This machine: an embedded Ray (or the inline worker), every core and GPU it has."""

    name = "local"

    def resources(self, job) -> NodeResources:
        inline = job.cluster.executor == "inline"
        return NodeResources(1, 0 if inline else os.cpu_count() or 1, gpus_here())
