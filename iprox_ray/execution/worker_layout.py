"""Where a job's workers run and what each may hold: how many workers the executor starts (by
planning.plan_workers' own rule), how many share a node, and one worker's share of its node's
memory (what `sketch.token_budget = "auto"` fits its batches into)."""

from __future__ import annotations

from dataclasses import dataclass

import psutil

from iprox_ray.execution.launchers import launcher_for
from iprox_ray.execution.planning import plan_workers
from iprox_ray.spec import JobSpec, SpecError

GIB = 2**30
# A Ray actor before its model: the imports measured by cost.measure.fresh_worker (350 MiB here)
# plus Ray's core worker, the tokenizer and a shard's rows.
WORKER_BASE_BYTES = 640 << 20


@dataclass(frozen=True)
class Layout:
    workers: int
    nodes: int
    threads: int
    uses_gpu: bool
    per_node: int  # workers sharing one node's cores (what a timing on this machine competes with)


def worker_layout(job: JobSpec) -> Layout:
    """The workers the executor would start, by the same rule (planning.plan_workers).

    The nodes, cores and GPUs come from the job's launcher (local: this machine's, what the
    embedded Ray sees; SLURM: the allocation's)."""
    c = job.cluster
    found = launcher_for(job).resources(job)
    nodes, cpus, gpus = found.nodes, found.cpus, found.gpus
    try:
        plan = plan_workers(c.executor, c.use_gpus, c.actors, c.threads_per_actor, cpus, gpus)
    except RuntimeError as exc:
        raise SpecError(str(exc)) from exc
    array = found.array
    workers = plan.num_workers * (nodes if array else 1)
    per_node = plan.num_workers if array else -(-plan.num_workers // nodes)
    return Layout(workers, nodes, plan.resources.threads, bool(plan.resources.gpus), per_node)


@dataclass(frozen=True)
class WorkerMemory:
    """What one sketch worker may use, and where the figure comes from."""

    share_bytes: int
    device: str  # cpu | cuda
    source: str  # e.g. "cluster.slurm.mem_gb = 64 over 4 worker(s) per node"
    base_bytes: int  # the worker's own interpreter, counted inside the share


def worker_memory(job: JobSpec, layout: Layout) -> WorkerMemory | None:
    """One worker's share of a node's memory (the launcher's figure: on SLURM `cluster.slurm.mem_gb`
    or the allocation's; else this machine's available memory), split over the node's workers; one GPU's
    memory for GPU workers. None where it cannot be known here (GPU workers, no GPU visible)."""
    c = job.cluster
    if layout.uses_gpu:
        import torch

        if not torch.cuda.is_available():
            return None
        total = torch.cuda.get_device_properties(0).total_memory  # one actor per GPU
        return WorkerMemory(total, "cuda", f"one GPU's memory ({total / GIB:.1f} GiB)", 0)
    per_node = max(1, layout.per_node)
    given = launcher_for(job).node_memory(job)
    if given is not None:
        node, source = given
    else:
        node = psutil.virtual_memory().available
        source = f"this machine's available memory ({node / GIB:.1f} GiB)"
        if c.executor == "inline":  # the inline worker is this process: its interpreter is already resident
            return WorkerMemory(node, "cpu", f"{source}, one inline worker", 0)
    # A node's total holds each worker's interpreter (the inline worker's is the driver's, alike).
    return WorkerMemory(node // per_node, "cpu", f"{source} over {per_node} worker(s) per node", WORKER_BASE_BYTES)
