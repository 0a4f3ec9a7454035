"""The sketch kinds by name (kind.py says what one is). Adding one: its `SketchKind` subclass and
its line here; a job names it in `sketch.kind`.

Modules are imported on first use, so this table costs nothing to import. The spec stores the
name as a string and does not import this table (it sits below the sketch package); `check_sketch`
refuses an unknown name and settings the kind cannot take, once, when a job is loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from iprox_ray.registry import Registry
from iprox_ray.sketch.kind import SketchKind  # the base alone: it imports no sketcher
from iprox_ray.spec import SpecError

if TYPE_CHECKING:
    from iprox_ray.spec.sketch import SketchSpec

SKETCH_KINDS: Registry[type[SketchKind]] = Registry("sketch kind", {
    "kronecker": "iprox_ray.sketch.kronecker:KroneckerKind",
    "srht": "iprox_ray.sketch.dense:SrhtKind",
    "rademacher": "iprox_ray.sketch.dense:RademacherKind",
})


def kind_named(name: str) -> SketchKind:
    if name not in SKETCH_KINDS:
        raise SpecError(f"sketch.kind: unknown sketch kind {name!r} (known: {', '.join(SKETCH_KINDS.names)})")
    kind = SKETCH_KINDS.load(name)()  # stateless: a fresh one each time keeps add/remove simple
    assert kind.name == name, f"{SKETCH_KINDS.targets()[name]} declares name {kind.name!r}"
    return kind


def kind_for(spec: SketchSpec) -> SketchKind:
    """The kind a sketch spec names."""
    return kind_named(spec.kind)


def check_sketch(spec: SketchSpec) -> SketchKind:
    """Refuse, before any work, an unknown kind or settings the kind cannot take."""
    kind = kind_for(spec)
    kind.validate(spec)
    return kind


def describe_settings(settings: dict) -> str:
    """The "<kind> <shape>" text of sketch settings as a dict (a stored spec's `sketch` table). A
    run written with a kind this install does not have still reads: the generic dense text."""
    name = settings.get("kind", "?")
    if name in SKETCH_KINDS:
        return f"{name} {kind_named(name).describe(settings)}"
    return f"{name} {SketchKind().describe(settings)}"
