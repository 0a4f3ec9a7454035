"""The scoring methods by name. Adding one: a module with a `ScoringMethod` subclass, and its line here.

Modules are imported on first use, so the spec can take the names from here without importing
the stages (which import the spec).
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from iprox_ray.methods.base import ScoringMethod

_REGISTRY = {  # name -> "module:class"
    "less": "iprox_ray.methods.less:Less",
    "influence-distillation": "iprox_ray.methods.influence_distillation:InfluenceDistillation",
    "tracin": "iprox_ray.methods.tracin:TracIn",
    "rds+": "iprox_ray.methods.rds_plus:RdsPlus",
    "random": "iprox_ray.methods.random_baseline:RandomBaseline",
    "mid-ppl": "iprox_ray.methods.mid_ppl:MidPpl",
}
METHOD_NAMES = tuple(_REGISTRY)


@cache
def method_named(name: str) -> "ScoringMethod":
    if name not in _REGISTRY:
        raise ValueError(f"unknown scoring method {name!r} (known: {', '.join(METHOD_NAMES)})")
    module, cls = _REGISTRY[name].split(":")
    method = getattr(importlib.import_module(module), cls)()
    assert method.name == name, f"{_REGISTRY[name]} declares name {method.name!r}"
    return method


def method_for(job) -> "ScoringMethod":
    """The method a job scores with."""
    return method_named(job.scoring.method)
