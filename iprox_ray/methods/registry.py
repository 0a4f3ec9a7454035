"""The scoring methods by name. Adding one: a module with a `ScoringMethod` subclass, and its line here.

Modules are imported on first use. The spec stores the name as a string and does not import this
table (it sits below the methods); `check_job` refuses unknown names and settings a method cannot
take, once, when a job is loaded.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from iprox_ray.registry import Registry, UnknownName
from iprox_ray.spec import SpecError

if TYPE_CHECKING:
    from iprox_ray.methods.base import ScoringMethod

METHODS: Registry[type[ScoringMethod]] = Registry("scoring method", {
    "less": "iprox_ray.methods.less:Less",
    "influence-distillation": "iprox_ray.methods.influence_distillation:InfluenceDistillation",
    "tracin": "iprox_ray.methods.tracin:TracIn",
    "rds+": "iprox_ray.methods.rds_plus:RdsPlus",
    "random": "iprox_ray.methods.random_baseline:RandomBaseline",
    "mid-ppl": "iprox_ray.methods.mid_ppl:MidPpl",
})
METHOD_NAMES = METHODS.names


def method_named(name: str) -> ScoringMethod:
    try:
        METHODS.check(name)  # before the cache: a name removed from the table is refused again
    except UnknownName as err:
        raise SpecError(f"scoring.method: {err}") from None
    return _instance(name, METHODS.targets()[name])


@cache
def _instance(name: str, target: str) -> ScoringMethod:
    method = METHODS.load(name)()
    assert method.name == name, f"{target} declares name {method.name!r}"
    return method


def method_for(job) -> ScoringMethod:
    """The method a job scores with."""
    return method_named(job.scoring.method)


def check_job(job) -> ScoringMethod:
    """Refuse, before any work, a job whose method is unknown or cannot take its settings."""
    method = method_for(job)
    if job.scoring.second_order.enabled and (not method.second_order or job.selection.strategy == "round-robin"):
        able = " or ".join(repr(n) for n in METHOD_NAMES if method_named(n).second_order)
        raise SpecError(f"scoring.second_order needs scoring.method = {able} and one aggregated "
                        "score (selection.strategy 'topk' or 'weights')")
    method.validate(job)
    return method
