"""The scoring-method registry: every name loads, the spec accepts exactly those names, and what
each method asks of the pool is what the stages used to hard-code per name."""

from __future__ import annotations

import typing

import pytest

from iprox_ray.methods import METHOD_NAMES, method_named
from iprox_ray.spec.selection import MethodName, ScoringSpec


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_every_registered_method_loads_under_its_name(name):
    method = method_named(name)
    assert method.name == name and method.needs.pool_sketch in ("all", "landmarks", "none")


def test_the_spec_accepts_exactly_the_registered_names():
    assert typing.get_args(MethodName) == METHOD_NAMES
    with pytest.raises(ValueError):
        ScoringSpec(method="not-a-method")


def test_needs_and_embedding_passes():
    splits = ["pool", "targets/main"]
    assert method_named("rds+").embed_jobs(splits) == [("rds", "pool"), ("rds", "targets/main")]
    assert method_named("influence-distillation").embed_jobs(splits) == [("jvp", "pool")]
    assert all(method_named(n).embed_jobs(splits) == [] for n in ("less", "tracin", "random", "mid-ppl"))
    assert {n for n in METHOD_NAMES if method_named(n).needs.target_sketch} == {"less", "tracin", "influence-distillation"}
    assert {n for n in METHOD_NAMES if method_named(n).single_score} == {"random", "mid-ppl"}
    assert ScoringSpec(method="less").resolved_aggregate() == "subtask-max"
    assert ScoringSpec(method="rds+").resolved_aggregate() == "mean"
