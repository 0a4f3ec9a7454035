"""proxy.method = 'auto': the fidelity verdict decides which model sketches, once per run."""

from __future__ import annotations

import json

import pytest

from iprox_ray.driver.pipeline import run_job
from iprox_ray.spec import load_job

pytestmark = pytest.mark.slow

CHECK = ['proxy.method="auto"', "fidelity.pool_rows=32", "fidelity.exact_rows=8", "fidelity.target_rows=6"]


@pytest.mark.parametrize("pays", [True, False])
def test_auto_sketches_with_the_proxy_only_when_the_verdict_says_it_pays(make_job, tmp_path, pays):
    thresholds = (["fidelity.pays_speedup=0.01", "fidelity.pays_fidelity_share=0.01"] if pays
                  else ["fidelity.pays_speedup=1000"])
    job = load_job(make_job(k=8), CHECK + thresholds)
    summary = run_job(job, tmp_path / "run", quiet=True)
    choice = summary["proxy_choice"]
    assert choice["uses_proxy"] is pays and choice["candidate"]["method"] == "ipsvd"
    assert ("the proxy pays" in choice["verdict"]) is pays and choice["flop_bound_speedup"] > 1
    assert choice["exact"]["rows"] == 8
    pool = json.loads((tmp_path / "run" / "store.zarr" / "pool" / "zarr.json").read_text())["attributes"]
    assert pool["model"]["kind"] == ("proxy" if pays else "hf")
    record = json.loads((tmp_path / "run" / "stages" / "proxy-choice.json").read_text())
    assert record["uses_proxy"] is pays


def test_the_choice_is_made_once_and_a_resume_keeps_it(make_job, tmp_path, monkeypatch):
    job = load_job(make_job(k=8), CHECK + ["fidelity.pays_speedup=0.01", "fidelity.pays_fidelity_share=0.01"])
    first = run_job(job, tmp_path / "run", quiet=True)
    import iprox_ray.diagnostics.proxy_verdict as choice

    def never(*args, **kwargs):
        raise AssertionError("the fidelity check ran again on a resume")

    monkeypatch.setattr(choice, "fidelity_report", never)
    (tmp_path / "run" / "stages" / "select-main.json").unlink()  # make the resume do some work
    again = run_job(job, tmp_path / "run", quiet=True)
    assert again["proxy_choice"] == first["proxy_choice"] and again["selected"] == first["selected"]

