"""Pure path builders for everything a run writes. No I/O here: the layout is the contract."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

POOL = "pool"


def target_split(name: str) -> str:
    return f"targets/{name}"


@dataclass(frozen=True)
class RunLayout:
    root: Path

    # run-level files
    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def lock(self) -> Path:
        return self.root / "LOCK"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def store(self) -> Path:
        return self.root / "store.zarr"

    # inputs
    def manifest(self, split: str) -> Path:
        return self.root / "manifest" / f"{_flat(split)}.parquet"

    def manifest_info(self, split: str) -> Path:
        return self.root / "manifest" / f"{_flat(split)}.json"

    def quarantine_dir(self, split: str) -> Path:
        return self.root / "quarantine" / _flat(split)

    def quarantine_shard(self, split: str, shard_id: int) -> Path:
        return self.quarantine_dir(split) / f"{shard_id:06d}.parquet"

    @property
    def quarantine_all(self) -> Path:
        return self.root / "quarantine.parquet"

    # model artifacts
    @property
    def warmup_dir(self) -> Path:
        return self.root / "warmup"

    @property
    def proxy_dir(self) -> Path:
        return self.root / "proxy"

    # progress, as plain files you can `ls`
    def completions(self, stage: str) -> Path:
        return self.root / "completions" / stage

    def completion(self, stage: str, shard_id: int) -> Path:
        return self.completions(stage) / f"{shard_id:06d}.json"

    def failures(self, stage: str) -> Path:
        return self.root / "failures" / stage

    def inflight(self, stage: str) -> Path:
        return self.root / "inflight" / stage

    # cluster bookkeeping: submitted SLURM jobs, Ray rendezvous folders, per-group locks
    @property
    def slurm_jobs(self) -> Path:
        return self.root / "slurm" / "jobs"

    def rendezvous(self, job_id: str, attempt: int) -> Path:
        return self.root / "slurm" / "rendezvous" / f"{job_id}-{attempt}"

    @property
    def array_groups(self) -> Path:
        return self.root / "manifest" / "array-groups.json"

    def group_lock(self, group: int) -> Path:
        return self.root / "locks" / f"group-{group:04d}"

    def stage_done(self, stage: str) -> Path:
        return self.root / "stages" / f"{stage}.json"

    # outputs
    def selection_dir(self, name: str) -> Path:
        return self.root / "selections" / name

    def selection(self, name: str) -> Path:
        return self.selection_dir(name) / "selection.parquet"


def sketch_stage(split: str) -> str:
    return f"sketch-{_flat(split)}"


def _flat(split: str) -> str:
    return split.replace("/", "-")


def embed_stage(kind: str, split: str) -> str:
    return f"embed-{kind}-{_flat(split)}"
