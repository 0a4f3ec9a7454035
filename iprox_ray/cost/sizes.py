"""A sketch's width and a store row's bytes, from a model's module tree: a loaded model, or the
meta-device model built from its config alone (no weights: any model size plans on a laptop).

The width comes from the sketch factory's own functions (`sketched_modules`, `vectors_record`,
`sketch_dim`), the ones stages/sketch.py sizes the store with, so whatever the sketch settings
are, the plan's width is the store's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

from iprox_ray.models.loading import meta_model
from iprox_ray.sketch.factory import sketch_dim, sketched_modules, vectors_record
from iprox_ray.sketch.kinds import kind_for
from iprox_ray.spec import JobSpec, SketchSpec, StoreSpec
from iprox_ray.store.quantize import row_bytes


@dataclass(frozen=True)
class SketchSizes:
    parameters: int
    modules: int  # linears sketched
    matrix_block: int  # the linears' columns before any re-projection (Kronecker: modules x k_out x k_in)
    vector_block: int  # the norm-weight / bias columns (exact or projected)
    width: int  # columns of a stored row
    dtype: str  # the store's element type (`store.sketch_dtype`)
    row_bytes: int  # a row in the store: the sketch, its float32 norm and, for int8, its float32 scale

    def to_dict(self) -> dict:
        return asdict(self)


def store_dtype(job: JobSpec | None = None) -> str:
    """The element type the job's sketch store writes rows in (the store's default without a job)."""
    return (job.store if job is not None else StoreSpec()).sketch_dtype


def sketch_sizes(model: nn.Module, spec: SketchSpec, dtype: str) -> SketchSizes:
    """Sizes of the sketch `spec` takes of `model` (meta-device or loaded)."""
    linears = sketched_modules(model, spec)
    vectors = vectors_record(model, spec)
    width = sketch_dim(spec, len(linears), vectors)
    matrix = kind_for(spec).matrix_dim(spec, len(linears))
    return SketchSizes(sum(p.numel() for p in model.parameters()), len(linears), matrix, int(vectors["dim"]),
                       width, dtype, row_bytes(width, dtype))


def config_sizes(config, spec: SketchSpec, dtype: str) -> SketchSizes:
    """The same from a transformers config alone (meta device: nothing allocated)."""
    return sketch_sizes(meta_model(config), spec, dtype)
