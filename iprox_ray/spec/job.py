"""The job spec tree: one typed config drives the CLI, the TOML files and the Python API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, PrivateAttr, ValidationError

from iprox_ray.spec.base import (
    SafeName,
    Section,
    SpecError,
    apply_override,
    fingerprint,
    format_validation_error,
    read_toml,
)
from iprox_ray.spec.cluster import ClusterSpec
from iprox_ray.spec.data import DataSpec, ModelSpec
from iprox_ray.spec.output import OutputSpec
from iprox_ray.spec.proxy import FidelitySpec, ProxySpec
from iprox_ray.spec.scoring import ScoringSpec
from iprox_ray.spec.selection import SelectionSpec
from iprox_ray.spec.sketch import SketchSpec
from iprox_ray.spec.store import StoreSpec
from iprox_ray.spec.warmup import WarmupSpec

# Sections that change no computed number: excluded from every fingerprint.
EXECUTION_SECTIONS = ("cluster", "output", "fidelity")


class RunSpec(Section):
    name: SafeName = Field("run")
    dir: str | None = Field(None, description="run directory; default runs/<name>")
    seed: int = 0


class JobSpec(Section):
    run: RunSpec = Field(default_factory=RunSpec)
    model: ModelSpec
    data: DataSpec
    warmup: WarmupSpec = Field(default_factory=WarmupSpec)
    proxy: ProxySpec = Field(default_factory=ProxySpec)
    fidelity: FidelitySpec = Field(default_factory=FidelitySpec)
    sketch: SketchSpec = Field(default_factory=SketchSpec)
    store: StoreSpec = Field(default_factory=StoreSpec)
    scoring: ScoringSpec = Field(default_factory=ScoringSpec)
    selection: SelectionSpec = Field(default_factory=SelectionSpec)
    output: OutputSpec = Field(default_factory=OutputSpec)
    cluster: ClusterSpec = Field(default_factory=ClusterSpec)

    # Relative paths in the spec are relative to the job file; not part of the fingerprint.
    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)

    @property
    def base_dir(self) -> Path:
        return self._base_dir

    def resolve_path(self, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else (self._base_dir / path)

    def run_dir(self) -> Path:
        return Path(self.run.dir).expanduser() if self.run.dir else Path("runs") / self.run.name

    def science(self) -> dict[str, Any]:
        """Everything that can change a computed number (the fingerprinted part)."""
        tree = self.model_dump(mode="json", exclude=set(EXECUTION_SECTIONS))
        tree["run"].pop("dir", None)
        tree["run"].pop("name", None)
        return tree

    def fingerprint(self) -> str:
        return fingerprint(self.science())

    def stage_fingerprint(self, *sections: str) -> str:
        """Fingerprint of the named sections only (e.g. what a pool sketch depends on)."""
        tree = self.science()
        return fingerprint({name: _dig(tree, name) for name in sections})


def _dig(tree: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        tree = tree[part]
    return tree


def load_cluster_profile(path: Path) -> dict[str, Any]:
    tree = read_toml(path)
    return tree.get("cluster", tree)


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def build_job(
    tree: dict[str, Any], base_dir: Path, source: str, cluster_profile: Path | None = None,
    cluster_overrides: list[str] | None = None,
) -> JobSpec:
    tree = dict(tree)
    cluster = dict(tree.get("cluster", {}))
    profile_ref = str(cluster_profile) if cluster_profile else cluster.get("profile")
    if profile_ref:
        profile_path = Path(profile_ref)
        if not profile_path.is_absolute():
            profile_path = (Path.cwd() if cluster_profile else base_dir) / profile_path
        inline = {} if cluster_profile else cluster
        cluster = {**_merge(load_cluster_profile(profile_path), inline), "profile": str(profile_path)}
    # --set cluster.* applies on top of whichever profile was chosen (also one given by --cluster)
    holder = {"cluster": cluster}
    for assignment in cluster_overrides or []:
        apply_override(holder, assignment)
    tree["cluster"] = holder["cluster"]
    try:
        job = JobSpec.model_validate(tree)
    except ValidationError as err:
        raise SpecError(format_validation_error(err, source)) from None
    job._base_dir = base_dir
    return job


def load_job(
    path: str | Path, overrides: list[str] | None = None, cluster_profile: str | Path | None = None
) -> JobSpec:
    """Load and validate a job TOML; `overrides` are `key.path=value` strings applied first."""
    path = Path(path).resolve()
    tree = read_toml(path)
    overrides = overrides or []
    cluster_overrides = [a for a in overrides if a.strip().startswith("cluster.")]
    for assignment in overrides:
        if assignment not in cluster_overrides:
            apply_override(tree, assignment)
    profile = Path(cluster_profile) if cluster_profile else None
    return build_job(tree, path.parent, str(path), profile, cluster_overrides)
