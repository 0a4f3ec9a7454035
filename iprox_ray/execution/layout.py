"""Where a job's workers run: how many workers the executor starts (by planning.plan_workers' own
rule) and how many share a node."""

from __future__ import annotations

import os
from dataclasses import dataclass

from iprox_ray.execution.planning import plan_workers
from iprox_ray.spec import JobSpec, SpecError

# A Ray actor before its model: the imports measured by cost.measure.fresh_worker (350 MiB here)
# plus Ray's core worker, the tokenizer and a shard's rows.
WORKER_BASE_BYTES = 640 << 20


def _gpus_here() -> int:
    import torch  # only resource discovery: no model code in this layer

    return torch.cuda.device_count()


@dataclass(frozen=True)
class Layout:
    workers: int
    nodes: int
    threads: int
    uses_gpu: bool
    per_node: int  # workers sharing one node's cores (what a timing on this machine competes with)


def worker_layout(job: JobSpec) -> Layout:
    """The workers the executor would start, by the same rule (planning.plan_workers).

    Local: this machine's cores and GPUs (what the embedded Ray sees). SLURM gang: the Ray cluster
    spans `nodes` nodes; array: each job is one node, `array_parallelism` of them at once."""
    c = job.cluster
    if c.kind == "local":  # the embedded Ray sees every core; the inline worker its process's (0: those)
        nodes, cpus, gpus = 1, 0 if c.executor == "inline" else os.cpu_count() or 1, _gpus_here()
    else:
        s = c.slurm
        nodes = s.nodes if s.mode == "gang" else min(s.array_jobs, s.array_parallelism or s.array_jobs)
        cpus, gpus = s.cpus_per_task, s.gpus_per_node
        if s.mode == "gang":
            cpus, gpus = cpus * nodes, gpus * nodes
    try:
        plan = plan_workers(c.executor, c.use_gpus, c.actors, c.threads_per_actor, cpus, gpus)
    except RuntimeError as exc:
        raise SpecError(str(exc)) from exc
    array = c.kind == "slurm" and c.slurm.mode == "array"
    workers = plan.num_workers * (nodes if array else 1)
    per_node = plan.num_workers if array else -(-plan.num_workers // nodes)
    return Layout(workers, nodes, plan.resources.threads, bool(plan.resources.gpus), per_node)
