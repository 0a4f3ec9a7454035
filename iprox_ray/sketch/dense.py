"""Dense-projected per-sample gradients of a small parameter set (LoRA, masked down_proj, ...).

Per-sample weight gradients G_b = Σ_t δ_{b,t} x_{b,t}ᵀ come from the same hooks as the Kronecker
path (one batched backward; a batched matmul per module), so they are exact; element-wise
Adam features apply exactly here. Each module's vec(G) (optionally a fixed random subset of its
entries, `mask_fraction`) is projected by its own block of a dense random projection and the
blocks are summed: the sketch is P·vec(all selected gradients) with P never materialised.

Why hooks rather than torch.func vmap(grad): the hooks need one batched forward+backward with
SDPA, while vmap(grad) re-runs the model per sample under vmap and needs eager attention; see
bench/RESULTS.md for the measured difference.
"""

from __future__ import annotations

import torch
from torch import nn

from iprox_ray.sketch.adam import AdamFeatures
from iprox_ray.sketch.capture import HookSketcher
from iprox_ray.sketch.dense_projection import DenseProjector
from iprox_ray.sketch.kind import SketchKind
from iprox_ray.sketch.projection import derive_seed
from iprox_ray.spec import SpecError


def kept_elements(d: int, fraction: float) -> int:
    return d if fraction >= 1.0 else max(1, round(fraction * d))


def element_mask(seed: int, name: str, d: int, fraction: float) -> torch.Tensor | None:
    """Sorted indices of the kept entries of module `name`'s flattened weight (None: all)."""
    if fraction >= 1.0:
        return None
    keep = kept_elements(d, fraction)
    gen = torch.Generator(device="cpu").manual_seed(derive_seed(seed, name, "mask"))
    return torch.randperm(d, generator=gen)[:keep].sort().values


class DenseSketcher(HookSketcher):
    def __init__(
        self,
        model: nn.Module,
        patterns: list[str],
        dim: int,
        seed: int,
        kind: str = "srht",
        mask_fraction: float = 1.0,
        adam: AdamFeatures | None = None,
        autocast: str = "auto",
        vectors=None,
        cache_bytes: int = 256 << 20,
        expand_lowrank: bool = False,
    ):
        super().__init__(model, patterns, autocast, vectors, expand_lowrank)
        self._dim = dim
        self.adam = adam
        self.projector = DenseProjector(seed, dim, kind, cache_bytes)
        self.masks: dict[str, torch.Tensor | None] = {}
        self.n_elements: dict[str, int] = {}
        for name, _ in self.modules:
            d_out, d_in = self.dims[name]
            mask = element_mask(seed, name, d_out * d_in, mask_fraction)
            self.masks[name] = None if mask is None else mask.to(self.device)
            self.n_elements[name] = d_out * d_in if mask is None else len(mask)

    @property
    def matrix_dim(self) -> int:
        return self._dim

    def _capture(self, name: str, x: torch.Tensor):
        return x

    def per_sample_gradient(self, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """[B, d_out, d_in] = Σ_t δ_t x_tᵀ per sample, padding masked."""
        return torch.bmm(grad.float().transpose(1, 2), self.masked(x.float()))

    def features(self, name: str, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """[B, n_elements] flattened (Adam-transformed, masked) per-sample gradient of module `name`."""
        g = self.per_sample_gradient(x, grad)
        if self.adam is not None:
            g = self.adam.exact(name, g)
        flat = g.flatten(1)
        mask = self.masks[name]
        return flat if mask is None else flat[:, mask]

    def _accumulate(self, name: str, kept, grad: torch.Tensor, rows: torch.Tensor) -> None:
        rows += self.projector.project(name, self.features(name, kept, grad))


class DenseKind(SketchKind):
    """A dense projection of the exact per-sample gradients to `dim` columns; the subclasses name
    the projection (dense_projection.py: both have E[PᵀP] = I, they differ in cost)."""

    projection = ""  # DenseProjector's kind; apart from the kind's name, so another kind may reuse one

    def make(self, model, spec, adam, vectors, expand_lowrank):
        return DenseSketcher(model, spec.modules, spec.dim, spec.seed, self.projection, spec.mask_fraction,
                             adam=adam, autocast=spec.autocast, vectors=vectors, expand_lowrank=expand_lowrank)

    def matrix_dim(self, spec, n_modules):
        return spec.dim

    def projection_record(self, spec, n_modules):
        return {"kind": self.name, "seed": spec.seed, "dim": spec.dim, "mask_fraction": spec.mask_fraction}

    def module_record(self, spec, name, d_out, d_in):
        return [name, d_out, d_in, kept_elements(d_out * d_in, spec.mask_fraction)]

    def held_floats(self, spec, modules):
        # One module's per-sample gradients at a time, for every row of a batch, and the SRHT's
        # padded copy of them: twice the largest module's kept entries a row.
        largest = max((self.module_record(spec, *m)[3] for m in modules), default=0)
        return 0, 2 * largest * spec.max_batch_rows

    def validate(self, spec):
        # The default re-projection is the Kronecker kind's; only one asked for is refused here.
        if spec.reproject_dim and "reproject_dim" in spec.model_fields_set:
            raise SpecError("sketch.reproject_dim applies to kind = 'kronecker' "
                            "(a dense kind projects to `dim` directly)")


class SrhtKind(DenseKind):
    name = projection = "srht"


class RademacherKind(DenseKind):
    name = projection = "rademacher"
