"""Cluster profiles: where and with what resources a job runs. Not part of any fingerprint."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from iprox_ray.spec.base import Section


class SlurmSpec(Section):
    partition: str | None = None
    account: str | None = None
    nodes: int = Field(1, ge=1)
    gpus_per_node: int = Field(0, ge=0)
    cpus_per_task: int = Field(2, ge=1)
    mem_gb: int | None = Field(None, ge=1)
    time_min: int = Field(60, ge=1)
    mode: Literal["gang", "array"] = Field(
        "gang", description="gang: one job over `nodes` nodes running one Ray cluster; array: independent "
        "single-node jobs that each sketch a fixed subset of the shards, then a dependent selection job")
    array_jobs: int = Field(1, ge=1, description="array mode: number of independent jobs (fixed at the first "
                            "submission of a run directory: shard s belongs to job s % array_jobs)")
    array_parallelism: int | None = Field(None, ge=1, description="array mode: at most this many at once")
    folder: str = Field("slurm-logs", description="shared folder for submitit logs (relative: to where you submit)")
    signal_delay_s: int = Field(120, ge=0, description="USR2 this long before the time limit: checkpoint + requeue")
    ray_node_ip: str = Field("auto", description="Ray node address: auto (the node's hostname resolved), "
                             "loopback (127.0.0.(2+rank): several nodes on one machine), or a literal address")
    ray_auth: Literal["token", "disabled"] = Field(
        "token", description="RAY_AUTH_MODE of the job's Ray cluster, on SLURM and for the embedded local one; "
        "token: a fresh secret per job in a 0600 file (locally, an exported RAY_AUTH_MODE wins)")
    additional: dict[str, str | int | bool] = Field(default_factory=dict, description="extra sbatch parameters")


class ClusterSpec(Section):
    """Execution resources. `profile` names a TOML file whose keys this section overrides."""

    profile: str | None = None
    kind: Literal["local", "slurm"] = "local"
    executor: Literal["ray", "inline"] = Field(
        "ray", description="ray: actor pool; inline: in the driver process (debugging)"
    )
    ray_address: str = Field("local", description="'local' starts an embedded Ray")
    actors: int | None = Field(None, ge=1, description="CPU actors when no GPU; default: cores/threads")
    threads_per_actor: int = Field(1, ge=1, description="a Ray actor's math threads (the inline worker uses "
                                   "every core its process may run on)")
    use_gpus: Literal["auto", "yes", "no"] = "auto"
    max_shard_retries: int = Field(2, ge=0)
    slurm: SlurmSpec = Field(default_factory=SlurmSpec)
