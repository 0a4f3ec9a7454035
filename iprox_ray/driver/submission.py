"""`iprox-ray submit`: run a job on SLURM through submitit, in gang or array mode.

Gang mode: one job over N nodes. Node 0 starts the Ray head and runs the driver; the other nodes
join as Ray workers (`ray start --block`) until the driver is done. Array mode: a prepare job
(manifests, warm-up, proxy, store layout), then independent single-node jobs that each sketch the
shards they own (shard s belongs to job s % G, G fixed at the first submission and kept in the
run directory), then an `afterok` selection job that scores and selects.

Every job body is a submitit Checkpointable: on preemption or time-out (USR2) submitit requeues
it, and the rerun resumes from the completion markers; in-flight shards are redone, finished ones
never. The same holds after `scontrol requeue`, and after a cancelled job is submitted again.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import submitit
from submitit.helpers import Checkpointable

from iprox_ray.driver.pipeline import run_job
from iprox_ray.driver.rundir import RunPart, check_lock_free, check_run_dir
from iprox_ray.execution.ray_cluster import (
    RayNode,
    auth_env,
    finish,
    node_ip,
    run_worker,
    short_temp_dir,
    start_head,
    wait_for_nodes,
)
from iprox_ray.execution.slurm_jobs import (
    ACTIVE_STATES,
    job_states,
    read_submissions,
    record_attempt,
    record_submission,
)
from iprox_ray.execution.task import ShardRef
from iprox_ray.spec import JobSpec
from iprox_ray.spec.cluster import SlurmSpec
from iprox_ray.stages.model_files import check_model_files, input_fingerprints
from iprox_ray.store.atomic import atomic_write_json, read_json
from iprox_ray.store.layout import RunLayout
from iprox_ray.store.lock import RunLock


class SubmitError(RuntimeError):
    pass


@dataclass
class _JobBody(Checkpointable):
    job: JobSpec
    run_dir: str
    force_new: bool = False
    quiet: bool = False

    @property
    def layout(self) -> RunLayout:
        return RunLayout(Path(self.run_dir))

    def _run(self, job: JobSpec, part: RunPart | None = None) -> dict:
        return run_job(job, Path(self.run_dir), force_new=self.force_new, quiet=self.quiet, part=part)


class GangRun(_JobBody):
    """One job over all nodes: node 0 = Ray head + driver, the rest Ray workers."""

    def __call__(self) -> dict | int:
        env = submitit.JobEnvironment()
        slurm = self.job.cluster.slurm
        attempt = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
        node = RayNode(
            rank=env.global_rank,
            num_nodes=env.num_nodes,
            rendezvous=self.layout.rendezvous(env.job_id, attempt),
            node_ip=node_ip(slurm.ray_node_ip, env.global_rank),
            num_cpus=int(os.environ.get("SLURM_CPUS_ON_NODE") or slurm.cpus_per_task),
            num_gpus=slurm.gpus_per_node,
            auth=slurm.ray_auth,
            temp_dir=short_temp_dir(env.job_id, attempt, env.global_rank),
        )
        if node.rank != 0:
            return run_worker(node)
        record_attempt(self.layout.slurm_jobs)
        daemon, address = start_head(node)
        os.environ.update(auth_env(node))
        status = "failed"
        import ray

        try:
            ray.init(address=address, log_to_driver=True, configure_logging=False)
            wait_for_nodes(node.num_nodes)
            summary = self._run(self.job)  # the pipeline finds Ray initialised and uses it
            status = "ok"
            return summary
        finally:
            if ray.is_initialized():
                ray.shutdown()
            finish(node, daemon, status)


def owns(groups: int, group: int):
    """Shard ownership in array mode: a pure function of (shard id, number of groups)."""

    def owner(ref: ShardRef) -> bool:
        return ref.shard % groups == group

    return owner


def _nothing(ref: ShardRef) -> bool:
    return False


class ArrayPrepare(_JobBody):
    """Manifests, warm-up, proxy and the store's arrays, once, before the array starts."""

    def __call__(self, groups: int) -> dict:
        record_attempt(self.layout.slurm_jobs)
        inline = self.job.cluster.model_copy(update={"executor": "inline"})  # no shard runs here
        result = self._run(self.job.model_copy(update={"cluster": inline}), RunPart("prepare", _nothing))
        if not self.layout.array_groups.exists():
            atomic_write_json(self.layout.array_groups, {"groups": groups, "rule": "shard % groups"})
        return result


class ArrayGroup(_JobBody):
    """One array task: sketch the shards this group owns, on this node's own Ray."""

    def __call__(self, group: int) -> dict:
        record_attempt(self.layout.slurm_jobs)
        groups = int(read_json(self.layout.array_groups)["groups"])
        return self._run(self.job, RunPart(f"group {group}", owns(groups, group), group=group))


class SelectRun(_JobBody):
    """After the array: the whole pipeline again; finished stages and shards are skipped."""

    def __call__(self) -> dict:
        record_attempt(self.layout.slurm_jobs)
        return self._run(self.job)


def _executor(slurm: SlurmSpec, folder: Path, name: str, nodes: int, extra: dict | None = None):
    ex = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
    params = {
        "nodes": nodes,
        "tasks_per_node": 1,
        "cpus_per_task": slurm.cpus_per_task,
        "timeout_min": slurm.time_min,
        "slurm_signal_delay_s": slurm.signal_delay_s,
        "name": name,
        "slurm_additional_parameters": {**slurm.additional, **(extra or {})},
    }
    if slurm.gpus_per_node:
        params["gpus_per_node"] = slurm.gpus_per_node
    if slurm.mem_gb:
        params["mem_gb"] = slurm.mem_gb
    if slurm.partition:
        params["slurm_partition"] = slurm.partition
    if slurm.account:
        params["slurm_account"] = slurm.account
    if slurm.array_parallelism:
        params["slurm_array_parallelism"] = slurm.array_parallelism
    ex.update_parameters(**params)
    return ex


def check_can_submit(job: JobSpec, layout: RunLayout, force_new: bool, break_lock: bool) -> None:
    """Refuse early, on the login node, what the job would refuse later on the cluster."""
    check_model_files(job)
    if not force_new:
        check_run_dir(job, layout, force_new=False, inputs=input_fingerprints(job, layout.file_hashes))
    if not break_lock:
        check_lock_free(layout)
    ids = [r["job_id"] for r in read_submissions(layout.slurm_jobs)]
    active = {j: s for j, s in job_states(ids).items() if s in ACTIVE_STATES}
    if active and not break_lock:
        listed = ", ".join(f"{j} ({s})" for j, s in active.items())
        raise SubmitError(f"run directory {layout.root} already has SLURM job(s) {listed}; "
                          "wait for them, scancel them, or pass --break-lock")


def submit(job: JobSpec, run_dir: Path | None = None, force_new: bool = False, break_lock: bool = False,
           quiet: bool = False) -> list:
    """Submit the job; returns the submitit jobs, the one whose result is the summary last."""
    slurm = job.cluster.slurm
    layout = RunLayout((Path(run_dir) if run_dir else job.run_dir()).resolve())
    check_can_submit(job, layout, force_new, break_lock)
    layout.root.mkdir(parents=True, exist_ok=True)
    if break_lock:  # once, now: a job that stored it would steal a live lock on every requeue
        for path in [layout.lock, *layout.group_locks()]:
            RunLock(path, report=lambda m: None if quiet else print(m)).break_now()
    folder = Path(slurm.folder).expanduser().resolve() / "%j"
    body = dict(job=job, run_dir=str(layout.root), force_new=force_new, quiet=quiet)
    name = f"iprox-{job.run.name}"
    log = {"folder": str(folder.parent), "run_dir": str(layout.root)}
    if slurm.mode == "gang":
        sub = _executor(slurm, folder, name, slurm.nodes).submit(GangRun(**body))
        record_submission(layout.slurm_jobs, sub.job_id, {**log, "role": "gang", "nodes": slurm.nodes})
        return [sub]
    groups = int(read_json(layout.array_groups)["groups"]) if layout.array_groups.exists() else slurm.array_jobs
    prep = _executor(slurm, folder, f"{name}-prepare", 1).submit(ArrayPrepare(**body), groups)
    record_submission(layout.slurm_jobs, prep.job_id, {**log, "role": "prepare"})
    body["force_new"] = False  # only the prepare step may move an old run aside
    array = _executor(slurm, folder, f"{name}-sketch", 1, {"dependency": f"afterok:{prep.job_id}"}).map_array(
        ArrayGroup(**body), list(range(groups)))
    for task, sub in enumerate(array):
        record_submission(layout.slurm_jobs, sub.job_id, {**log, "role": "array", "group": task, "groups": groups})
    array_id = array[0].job_id.split("_")[0]
    select = _executor(slurm, folder, f"{name}-select", 1, {"dependency": f"afterok:{array_id}"}).submit(
        SelectRun(**body))
    record_submission(layout.slurm_jobs, select.job_id, {**log, "role": "select"})
    return [prep, *array, select]


def wait(jobs: list, poll_s: float = 2.0) -> dict:
    """Block until the last job ends; if one fails, cancel the ones that wait on it and raise."""
    for i, sub in enumerate(jobs):
        try:
            # Ask SLURM every few seconds (submitit alone backs off to minutes between checks).
            while not sub.done(force_check=True):
                time.sleep(poll_s)
            result = sub.results()[0]  # task 0 (the driver) answers for a multi-node job
        except Exception as exc:
            for later in jobs[i + 1:]:
                subprocess.run(["scancel", later.job_id], capture_output=True)
            raise SubmitError(f"SLURM job {sub.job_id} failed (logs: {sub.paths.stderr}):\n{str(exc)[-3000:]}") from exc
    return result


def describe(jobs: list) -> str:
    lines = [f"submitted {len(jobs)} SLURM job(s):"]
    for sub in jobs:
        lines.append(f"  {sub.job_id}  logs: {sub.paths.stdout.parent}")
    return "\n".join(lines)


__all__ = ["submit", "wait", "describe", "SubmitError", "GangRun", "ArrayPrepare", "ArrayGroup", "SelectRun"]
