"""One entry point from a SketchSpec to a sketcher, and what the store records about it."""

from __future__ import annotations

from torch import nn

from iprox_ray.models.optimizer_state import AdamState
from iprox_ray.models.patterns import select_modules
from iprox_ray.sketch.adam import AdamFeatures
from iprox_ray.sketch.capture import REPROJECT_NAME, HookSketcher  # noqa: F401  (the re-projection's name)
from iprox_ray.sketch.dense_projection import DenseProjector
from iprox_ray.sketch.dense import DenseSketcher, kept_elements
from iprox_ray.sketch.kronecker import KroneckerSketcher
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
    if spec.kind == "kronecker":
        k = reproject_dim(spec, len(sketched_modules(model, spec)))
        reproject = DenseProjector(spec.seed, k, "srht") if k else None
        return KroneckerSketcher(model, spec.modules, spec.proj_in, spec.proj_out, spec.seed, spec.projection,
                                 adam=adam, adam_exact=spec.adam_exact, autocast=spec.autocast, vectors=vectors,
                                 expand_lowrank=expand, reproject=reproject)
    return DenseSketcher(model, spec.modules, spec.dim, spec.seed, spec.kind, spec.mask_fraction,
                         adam=adam, autocast=spec.autocast, vectors=vectors, expand_lowrank=expand)


def sketched_modules(model: nn.Module, spec: SketchSpec) -> list[tuple[str, nn.Module]]:
    """The linears the spec sketches, in column order (a proxy's A·B as one, unless 'factors')."""
    return select_modules(model, spec.modules, expand_lowrank=spec.lowrank == "factors")


def vectors_record(model: nn.Module, spec: SketchSpec) -> dict:
    """The store's `vectors` attribute (works on a meta-device model: sizes only)."""
    linears = sketched_modules(model, spec)
    return vector_record(vector_params(model, spec.vectors, linears, spec.biases), spec.vector_dim, spec.seed)


def reproject_dim(spec: SketchSpec, n_modules: int) -> int:
    """The re-projection's width, 0 for none: as for the vector block, a block already no wider
    than `sketch.reproject_dim` (a small model) is kept as it is rather than projected up."""
    matrix = n_modules * spec.proj_in * spec.proj_out
    return spec.reproject_dim if spec.kind == "kronecker" and 0 < spec.reproject_dim < matrix else 0


def sketch_dim(spec: SketchSpec, n_modules: int, vectors: dict) -> int:
    matrix = n_modules * spec.proj_in * spec.proj_out if spec.kind == "kronecker" else spec.dim
    return (reproject_dim(spec, n_modules) or matrix) + vectors["dim"]


def projection_record(spec: SketchSpec, n_modules: int) -> dict:
    """The store's `projection` attribute: enough to regenerate every projection."""
    if spec.kind == "kronecker":
        return {"kind": "kronecker", "distribution": spec.projection, "seed": spec.seed,
                "proj_in": spec.proj_in, "proj_out": spec.proj_out,
                "reproject_dim": reproject_dim(spec, n_modules)}
    return {"kind": spec.kind, "seed": spec.seed, "dim": spec.dim, "mask_fraction": spec.mask_fraction}


def module_record(spec: SketchSpec, name: str, d_out: int, d_in: int) -> list:
    """One entry of the store's `modules` attribute."""
    if spec.kind == "kronecker":
        return [name, d_out, d_in, spec.proj_out, spec.proj_in]
    return [name, d_out, d_in, kept_elements(d_out * d_in, spec.mask_fraction)]


def features_record(spec: SketchSpec, split_is_pool: bool) -> dict:
    """The store's `features` attribute: plain gradients, or which Adam transform (pool only)."""
    if spec.optimizer == "none" or not split_is_pool:
        return {"optimizer": "none"}
    exact = spec.kind != "kronecker" or spec.adam_exact
    return {"optimizer": spec.optimizer, "approximation": "exact" if exact else "rank1-factored"}
