"""What a sketch kind is: every way one kind differs from another, as methods of one object.

The store's records, the sketch width the cost plan sizes, the memory model's per-kind buffers,
the report's shape text and the settings check all ask the job's kind (kinds.py finds it by
`sketch.kind`) instead of testing the kind's name, so adding a kind is its class and one line in
kinds.py's table. A kind is stateless: everything it needs comes from the SketchSpec it is given.

This module imports no sketcher (the implementations import it), so the table and the check stay
cheap and the import graph has no cycle: kinds.py -> (by name) kronecker.py / dense.py -> kind.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

    from iprox_ray.sketch.adam import AdamFeatures
    from iprox_ray.sketch.capture import HookSketcher
    from iprox_ray.spec.sketch import SketchSpec


class SketchKind:
    """One sketch kind; subclasses set `name` (the `sketch.kind` value it is registered under)."""

    name: str = ""

    def make(self, model: nn.Module, spec: SketchSpec, adam: AdamFeatures | None, vectors,
             expand_lowrank: bool) -> HookSketcher:
        """The sketcher (hooks on `model`); `vectors` builds the vector block or is None."""
        raise NotImplementedError

    def matrix_dim(self, spec: SketchSpec, n_modules: int) -> int:
        """Columns of the linears' block before any re-projection."""
        raise NotImplementedError

    def reproject_dim(self, spec: SketchSpec, n_modules: int) -> int:
        """Width of a re-projection of the linears' block, 0 for none (the default: a kind that
        projects to its width directly has nothing to re-project)."""
        return 0

    def projection_record(self, spec: SketchSpec, n_modules: int) -> dict:
        """The store's `projection` attribute: enough to regenerate every projection."""
        raise NotImplementedError

    def module_record(self, spec: SketchSpec, name: str, d_out: int, d_in: int) -> list:
        """One entry of the store's `modules` attribute."""
        raise NotImplementedError

    def exact_adam(self, spec: SketchSpec) -> bool:
        """Whether Adam-aware features apply the transform exactly (else an approximation); the
        default: a kind that builds per-sample gradients anyway is always exact."""
        return True

    def held_floats(self, spec: SketchSpec, modules: list[tuple[str, int, int]]) -> tuple[int, int]:
        """(floats a token, floats a batch) the sketcher holds beyond the model's activations, for
        the memory model (sketch/memory.py); `modules` are the sketched (name, d_out, d_in)."""
        raise NotImplementedError

    def validate(self, spec: SketchSpec) -> None:
        """Refuse (SpecError) settings this kind cannot take; called once, when a job is loaded."""

    def describe(self, settings: dict) -> str:
        """The short shape text after the kind's name in the report and the cost plan, from the
        sketch settings as a dict (a stored spec's `sketch` table, or SketchSpec.model_dump())."""
        return f"dim {settings.get('dim')}"
