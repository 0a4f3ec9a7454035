"""Cluster profiles: where and with what resources a job runs. Not part of any fingerprint."""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator

from iprox_ray.spec.base import Section

SBATCH_KEY = r"^[A-Za-z][A-Za-z0-9_-]*$"  # an sbatch option name: submitit writes keys unquoted
HOST = r"^[A-Za-z0-9.:_-]+$"  # an address or host name (reaches `ray start --node-ip-address=`)


def _one_line(value: str) -> str:
    """Text that reaches a generated job script or a command line: a newline (or any control
    character) would end the `#SBATCH` line and run the rest as shell commands."""
    bad = [c for c in value if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")]
    if bad:
        raise ValueError(f"{value!r} holds a control character ({bad[0]!r}); it would reach the SLURM job script")
    return value


ScriptText = Annotated[str, AfterValidator(_one_line)]


class SlurmSpec(Section):
    partition: ScriptText | None = None
    account: ScriptText | None = None
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
    folder: ScriptText = Field("slurm-logs",
                               description="shared folder for submitit logs (relative: to where you submit)")
    signal_delay_s: int = Field(120, ge=0, description="USR2 this long before the time limit: checkpoint + requeue")
    ray_node_ip: Annotated[str, Field(pattern=HOST)] = Field(
        "auto", description="Ray node address: auto (the node's hostname resolved), "
                            "loopback (127.0.0.(2+rank): several nodes on one machine), or a literal address")
    ray_auth: Literal["token", "disabled"] = Field(
        "token", description="RAY_AUTH_MODE of the job's Ray cluster, on SLURM and for the embedded local one; "
        "token: a fresh secret per job in a 0600 file (locally, an exported RAY_AUTH_MODE wins)")
    additional: dict[str, str | int | bool] = Field(default_factory=dict, description="extra sbatch parameters")

    @field_validator("additional")
    @classmethod
    def _sbatch_lines(cls, value: dict) -> dict:
        for key, item in value.items():
            if not re.fullmatch(SBATCH_KEY, key):
                raise ValueError(f"key {key!r} is not an sbatch option name (it must match {SBATCH_KEY}): submitit "
                                 "writes it into the job script unquoted")
            if isinstance(item, str):
                _one_line(item)
        return value


class ClusterSpec(Section):
    """Execution resources. `profile` names a TOML file whose keys this section overrides."""

    profile: str | None = None
    # The launcher (iprox_ray/execution/launchers.py: local, slurm, or one registered there), checked
    # when the job is loaded (the spec sits below the launchers and does not import them).
    kind: str = Field("local", description="the launcher: local (this machine) or slurm")
    executor: Literal["ray", "inline"] = Field(
        "ray", description="ray: actor pool; inline: in the driver process (debugging)"
    )
    ray_address: ScriptText = Field("local", description="'local' starts an embedded Ray")
    actors: int | None = Field(None, ge=1, description="CPU actors when no GPU; default: cores/threads")
    threads_per_actor: int = Field(1, ge=1, description="a Ray actor's math threads (the inline worker uses "
                                   "every core its process may run on)")
    use_gpus: Literal["auto", "yes", "no"] = "auto"
    max_shard_retries: int = Field(2, ge=0)
    slurm: SlurmSpec = Field(default_factory=SlurmSpec)
