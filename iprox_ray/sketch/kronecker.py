"""Per-sample gradient sketches through one batched backward, never materialising gradients.

For a linear layer with inputs x_t and output gradients δ_t, a sample's weight gradient is
G = Σ_t δ_t x_tᵀ, so its Kronecker-projected sketch is P_out G P_inᵀ = Σ_t (P_out δ_t)(P_in x_t)ᵀ.
Forward hooks project x_t, tensor hooks on the outputs project δ_t (see capture.py for what
keeps the backward activation-only). Module m fills columns [offset_m, offset_m + k_out·k_in),
row-major over (k_out, k_in).

Adam-aware features (adam.py): `adam_exact=False` folds the rank-1 factored approximation into
the projections (no extra cost); `adam_exact=True` materialises each module's per-sample gradient
([B, d_out, d_in], transient) and applies the element-wise transform exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from iprox_ray.models.patterns import select_modules
from iprox_ray.sketch.adam import AdamFeatures
from iprox_ray.sketch.capture import HookSketcher, SketchOutput
from iprox_ray.sketch.dense_projection import DenseProjector
from iprox_ray.sketch.kind import SketchKind
from iprox_ray.sketch.projection import projection_matrix

__all__ = ["KroneckerKind", "KroneckerSketcher", "ModuleSketch", "SketchOutput"]


@dataclass(frozen=True)
class ModuleSketch:
    name: str
    d_out: int
    d_in: int
    k_out: int
    k_in: int

    @property
    def dim(self) -> int:
        return self.k_out * self.k_in


class KroneckerSketcher(HookSketcher):
    """Owns hooks on a model; `sketch(batch)` returns one row per sample."""

    def __init__(
        self,
        model: nn.Module,
        patterns: list[str],
        k_in: int,
        k_out: int,
        seed: int,
        kind: str = "gaussian",
        adam: AdamFeatures | None = None,
        adam_exact: bool = False,
        autocast: str = "auto",
        vectors=None,
        expand_lowrank: bool = False,
        reproject=None,
    ):
        super().__init__(model, patterns, autocast, vectors, expand_lowrank, reproject)
        self.adam, self.adam_exact = adam, adam_exact
        self.layout: list[ModuleSketch] = []
        self._p_in: dict[str, torch.Tensor] = {}
        self._p_out: dict[str, torch.Tensor] = {}
        self._span: dict[str, slice] = {}
        self.rank1_errors: dict[str, float] = {}
        constants = []
        offset = 0
        for name, _ in self.modules:
            d_out, d_in = self.dims[name]
            sketch = ModuleSketch(name, d_out, d_in, k_out, k_in)
            self.layout.append(sketch)
            self._span[name] = slice(offset, offset + sketch.dim)
            offset += sketch.dim
            p_in = projection_matrix(seed, name, "in", k_in, d_in, kind).to(self.device)
            p_out = projection_matrix(seed, name, "out", k_out, d_out, kind).to(self.device)
            if adam is not None and not adam_exact:
                f = adam.factored(name)
                self.rank1_errors[name] = f.rank1_error
                if f.constant is not None:
                    constants.append((self._span[name], (p_out @ f.constant @ p_in.T).flatten()))
                p_out, p_in = p_out * f.row, p_in * f.col  # diag(r) G diag(c) folded in
            self._p_in[name], self._p_out[name] = p_in, p_out
        self._dim = offset
        self._constant = None
        if constants:
            self._constant = torch.zeros(offset, device=self.device)
            for span, value in constants:
                self._constant[span] = value

    @property
    def matrix_dim(self) -> int:
        return self._dim

    def _materialise(self) -> bool:
        return self.adam is not None and self.adam_exact

    def _capture(self, name: str, x: torch.Tensor):
        if self._materialise():
            return x
        # Project first, mask after: the mask is per token, so this is exact and k_in-wide.
        return self.masked(x.float() @ self._p_in[name].T)

    def _accumulate(self, name: str, kept, grad: torch.Tensor, rows: torch.Tensor) -> None:
        span = self._span[name]
        if self._materialise():
            per_sample = torch.bmm(grad.float().transpose(1, 2), self.masked(kept.float()))  # [B, o, i]
            features = self.adam.exact(name, per_sample)
            rows[:, span] += (self._p_out[name] @ features @ self._p_in[name].T).flatten(1)
            return
        g_proj = grad.float() @ self._p_out[name].T  # [B, T, k_out]
        rows[:, span] += torch.bmm(g_proj.transpose(1, 2), kept).flatten(1)

    def _finish(self, rows: torch.Tensor) -> torch.Tensor:
        return rows if self._constant is None else rows + self._constant


class KroneckerKind(SketchKind):
    """`sketch.kind = "kronecker"`: P_out ⊗ P_in per module (proj_out x proj_in columns each), the
    linears' block optionally re-projected by one SRHT to `reproject_dim` columns."""

    name = "kronecker"

    def make(self, model, spec, adam, vectors, expand_lowrank):
        k = self.reproject_dim(spec, len(select_modules(model, spec.modules, expand_lowrank)))
        reproject = DenseProjector(spec.seed, k, "srht") if k else None
        return KroneckerSketcher(model, spec.modules, spec.proj_in, spec.proj_out, spec.seed, spec.projection,
                                 adam=adam, adam_exact=spec.adam_exact, autocast=spec.autocast, vectors=vectors,
                                 expand_lowrank=expand_lowrank, reproject=reproject)

    def matrix_dim(self, spec, n_modules):
        return n_modules * spec.proj_in * spec.proj_out

    def reproject_dim(self, spec, n_modules):
        # As for the vector block, a block already no wider than `sketch.reproject_dim` (a small
        # model) is kept as it is rather than projected up.
        return spec.reproject_dim if 0 < spec.reproject_dim < self.matrix_dim(spec, n_modules) else 0

    def projection_record(self, spec, n_modules):
        return {"kind": self.name, "distribution": spec.projection, "seed": spec.seed,
                "proj_in": spec.proj_in, "proj_out": spec.proj_out,
                "reproject_dim": self.reproject_dim(spec, n_modules)}

    def module_record(self, spec, name, d_out, d_in):
        return [name, d_out, d_in, spec.proj_out, spec.proj_in]

    def exact_adam(self, spec):
        return spec.adam_exact  # else the rank-1 factored transform folded into the projections

    def held_floats(self, spec, modules):
        return len(modules) * spec.proj_in, 0  # each module's projected input, k_in a token

    def describe(self, settings):
        return f"{settings.get('proj_out')}x{settings.get('proj_in')}"
