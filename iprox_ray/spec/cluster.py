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
    mode: Literal["gang", "array"] = "gang"
    array_jobs: int = Field(1, ge=1, description="array mode: number of independent jobs")
    folder: str = Field("slurm-logs", description="shared folder for submitit logs")
    additional: dict[str, str | int | bool] = Field(default_factory=dict)


class ClusterSpec(Section):
    """Execution resources. `profile` names a TOML file whose keys this section overrides."""

    profile: str | None = None
    kind: Literal["local", "slurm"] = "local"
    executor: Literal["ray", "inline"] = Field(
        "ray", description="ray: actor pool; inline: in the driver process (debugging)"
    )
    ray_address: str = Field("local", description="'local' starts an embedded Ray")
    actors: int | None = Field(None, ge=1, description="CPU actors when no GPU; default: cores/threads")
    threads_per_actor: int = Field(1, ge=1)
    use_gpus: Literal["auto", "yes", "no"] = "auto"
    max_shard_retries: int = Field(2, ge=0)
    slurm: SlurmSpec = Field(default_factory=SlurmSpec)
