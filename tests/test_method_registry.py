"""The scoring-method registry: every name loads, the spec accepts exactly those names, and what
each method asks of the pool is what the stages used to hard-code per name."""

from __future__ import annotations

import pytest

from iprox_ray.methods import METHOD_NAMES, check_job, method_for, method_named
from iprox_ray.spec import SpecError, load_job
from iprox_ray.spec.scoring import ScoringSpec


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_every_registered_method_loads_under_its_name(name):
    method = method_named(name)
    assert method.name == name and method.needs.pool_sketch in ("all", "landmarks", "none")


def test_a_job_is_accepted_with_exactly_the_registered_names(make_job):
    for name in METHOD_NAMES:
        assert method_for(load_job(make_job(), [f'scoring.method="{name}"'])).name == name
    job = load_job(make_job(), ['scoring.method="not-a-method"'])  # the spec stores the name ...
    with pytest.raises(SpecError, match="unknown scoring method 'not-a-method'"):
        check_job(job)  # ... and the registry refuses it


def test_needs_and_embedding_passes():
    splits = ["pool", "targets/main"]
    assert method_named("rds+").embed_jobs(splits) == [("rds", "pool"), ("rds", "targets/main")]
    assert method_named("influence-distillation").embed_jobs(splits) == [("jvp", "pool")]
    assert all(method_named(n).embed_jobs(splits) == [] for n in ("less", "tracin", "random", "mid-ppl"))
    assert ({n for n in METHOD_NAMES if method_named(n).needs.target_sketch}
            == {"less", "tracin", "influence-distillation"})
    assert {n for n in METHOD_NAMES if method_named(n).single_score} == {"random", "mid-ppl"}
    assert method_named("less").aggregate_for(ScoringSpec(method="less")) == "subtask-max"
    assert method_named("rds+").aggregate_for(ScoringSpec(method="rds+")) == "mean"
    assert method_named("less").aggregate_for(ScoringSpec(method="less", aggregate="mean")) == "mean"
