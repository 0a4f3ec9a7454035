"""One entry point from a SketchSpec to a sketcher, and what the store records about it; what
differs between sketch kinds is the kind's (kinds.py), asked here through `kind_for(spec)`."""

from __future__ import annotations

from torch import nn

from iprox_ray.models.optimizer_state import AdamState
from iprox_ray.models.patterns import select_modules
from iprox_ray.sketch.adam import AdamFeatures
from iprox_ray.sketch.capture import REPROJECT_NAME, HookSketcher  # noqa: F401  (the re-projection's name)
from iprox_ray.sketch.kinds import kind_for
from iprox_ray.sketch.vectors import VectorBlock, vector_params, vector_record
from iprox_ray.spec.sketch import SketchSpec


def make_sketcher(model: nn.Module, spec: SketchSpec, adam_state: AdamState | None = None) -> HookSketcher:
    """The sketcher the spec describes; `adam_state` given means Adam-aware (train) features."""
    adam = None
    if adam_state is not None:
        if spec.optimizer == "none":
            raise ValueError("an Adam state was given but sketch.optimizer = 'none'")
        adam = AdamFeatures(adam_state, sketched_modules(model, spec), spec.optimizer)
    expand = spec.lowrank == "factors"
    vectors = None
    if spec.vectors or spec.biases:
        def vectors(m, linears):
            return VectorBlock(m, spec.vectors, linears, spec.biases, spec.vector_dim, spec.seed, adam)
    return kind_for(spec).make(model, spec, adam, vectors, expand)


def sketched_modules(model: nn.Module, spec: SketchSpec) -> list[tuple[str, nn.Module]]:
    """The linears the spec sketches, in column order (a proxy's A·B as one, unless 'factors')."""
    return select_modules(model, spec.modules, expand_lowrank=spec.lowrank == "factors")


def vectors_record(model: nn.Module, spec: SketchSpec) -> dict:
    """The store's `vectors` attribute (works on a meta-device model: sizes only)."""
    linears = sketched_modules(model, spec)
    return vector_record(vector_params(model, spec.vectors, linears, spec.biases), spec.vector_dim, spec.seed)


def reproject_dim(spec: SketchSpec, n_modules: int) -> int:
    """The re-projection's width, 0 for none."""
    return kind_for(spec).reproject_dim(spec, n_modules)


def sketch_dim(spec: SketchSpec, n_modules: int, vectors: dict) -> int:
    kind = kind_for(spec)
    return (kind.reproject_dim(spec, n_modules) or kind.matrix_dim(spec, n_modules)) + vectors["dim"]


def projection_record(spec: SketchSpec, n_modules: int) -> dict:
    """The store's `projection` attribute: enough to regenerate every projection."""
    return kind_for(spec).projection_record(spec, n_modules)


def module_record(spec: SketchSpec, name: str, d_out: int, d_in: int) -> list:
    """One entry of the store's `modules` attribute."""
    return kind_for(spec).module_record(spec, name, d_out, d_in)


def features_record(spec: SketchSpec, split_is_pool: bool) -> dict:
    """The store's `features` attribute: plain gradients, or which Adam transform (pool only)."""
    if spec.optimizer == "none" or not split_is_pool:
        return {"optimizer": "none"}
    exact = kind_for(spec).exact_adam(spec)
    return {"optimizer": spec.optimizer, "approximation": "exact" if exact else "rank1-factored"}
