"""The SLURM launcher: `iprox-ray submit` starts the Ray cluster on the allocation (driver/submission.py)
and the driver's workers are its actors (gang mode), or each array job sketches its shards on its
node. What SLURM adds to a run: the allocation's nodes and memory, a lock whose owner's job has
ended is stale, and the submitted jobs' states in `iprox-ray status`."""

from __future__ import annotations

import os

from iprox_ray.execution.launcher import Launcher, LockProbe, NodeResources
from iprox_ray.execution.slurm_jobs import job_states, read_submissions, slurm_owner_gone
from iprox_ray.store.layout import RunLayout

GIB = 2**30


class SlurmLauncher(Launcher):
    name = "slurm"

    def resources(self, job) -> NodeResources:
        """Gang: one Ray cluster over `nodes` nodes; array: each job one node, `array_parallelism`
        of them at once."""
        s = job.cluster.slurm
        if s.mode == "gang":
            return NodeResources(s.nodes, s.cpus_per_task * s.nodes, s.gpus_per_node * s.nodes)
        nodes = min(s.array_jobs, s.array_parallelism or s.array_jobs)
        return NodeResources(nodes, s.cpus_per_task, s.gpus_per_node, array=True)

    def node_memory(self, job) -> tuple[int, str] | None:
        s = job.cluster.slurm
        if s.mem_gb:
            return s.mem_gb * GIB, f"cluster.slurm.mem_gb = {s.mem_gb}"
        if os.environ.get("SLURM_MEM_PER_NODE", "").isdigit():
            node = int(os.environ["SLURM_MEM_PER_NODE"]) << 20
            return node, f"the SLURM allocation's memory ({node / GIB:.1f} GiB, SLURM_MEM_PER_NODE)"
        return None

    def lock_probes(self) -> tuple[LockProbe, ...]:
        return (slurm_owner_gone,)

    def status(self, layout: RunLayout) -> dict:
        records = read_submissions(layout.slurm_jobs)
        states = job_states([r["job_id"] for r in records]) if records else {}
        return {"slurm_jobs": [{**rec, "state": states.get(rec["job_id"], "unknown")} for rec in records]}

    def status_lines(self, status: dict) -> list[str]:
        if not status.get("slurm_jobs"):
            return []
        lines = ["  SLURM jobs:"]
        for job in status["slurm_jobs"]:
            role = job.get("role", "?") + (f" {job['group']}" if job.get("group") is not None else "")
            restarts = len(job.get("attempts", [])) - 1
            again = f", restarted {restarts}x" if restarts > 0 else ""
            lines.append(f"    {job['job_id']:>12}  {role:<10} {job['state']}{again}  logs: {job.get('folder', '?')}")
        return lines
