"""Typed job spec: TOML in, validated tree and fingerprints out."""

from iprox_ray.spec.base import SpecError, fingerprint
from iprox_ray.spec.cluster import ClusterSpec, SlurmSpec
from iprox_ray.spec.data import DataSpec, ModelSpec, SourceSpec
from iprox_ray.spec.job import JobSpec, RunSpec, build_job, load_job
from iprox_ray.spec.output import OutputSpec
from iprox_ray.spec.proxy import FidelitySpec, ProxySpec
from iprox_ray.spec.scoring import ScoringSpec
from iprox_ray.spec.selection import SelectionSpec
from iprox_ray.spec.sketch import SketchSpec
from iprox_ray.spec.store import StoreSpec
from iprox_ray.spec.warmup import WarmupSpec

__all__ = [
    "ClusterSpec", "DataSpec", "FidelitySpec", "JobSpec", "ModelSpec", "OutputSpec", "ProxySpec", "RunSpec",
    "ScoringSpec", "SelectionSpec", "SketchSpec", "SlurmSpec", "SourceSpec", "SpecError", "StoreSpec",
    "WarmupSpec", "build_job", "fingerprint", "load_job",
]
