import pytest

from iprox_ray.spec import SpecError, load_job


def test_demo_job_loads_with_cluster_profile():
    from conftest import REPO

    job = load_job(REPO / "jobs" / "demo.toml")
    assert job.cluster.executor == "ray"
    assert job.cluster.profile.endswith("cluster/local.toml")
    assert len(job.fingerprint()) == 16


def test_unknown_key_is_rejected_with_its_path(make_job):
    with pytest.raises(SpecError, match=r"sketch\.proj_inn: unknown key"):
        load_job(make_job(), ["sketch.proj_inn=3"])


def test_bad_value_names_path_and_reason(make_job):
    with pytest.raises(SpecError) as err:
        load_job(make_job(), ["sketch.proj_in=0", "proxy.rho=1.5", 'model.init="maybe"'])
    text = str(err.value)
    assert "sketch.proj_in: Input should be greater than or equal to 1" in text
    assert "proxy.rho: Input should be less than 1" in text
    assert "model.init: Input should be 'pretrained' or 'random'" in text


def test_k_wins_over_fraction(make_job):
    job = load_job(make_job(k=7), ["selection.fraction=0.5"])
    assert job.selection.size_for(100) == 7
    from iprox_ray.spec import SelectionSpec

    assert SelectionSpec(fraction=0.1).size_for(95) == 10


def test_fingerprint_ignores_execution_settings_only(make_job):
    path = make_job()
    base = load_job(path).fingerprint()
    assert load_job(path, ["cluster.actors=7", "output.plot=false", 'run.dir="elsewhere"']).fingerprint() == base
    assert load_job(path, ["sketch.seed=1"]).fingerprint() != base
    assert load_job(path, ["selection.k=11"]).fingerprint() != base


def test_stage_fingerprint_depends_only_on_named_sections(make_job):
    path = make_job()
    a = load_job(path)
    b = load_job(path, ["selection.k=11"])
    assert a.stage_fingerprint("sketch", "proxy") == b.stage_fingerprint("sketch", "proxy")
    assert a.stage_fingerprint("selection") != b.stage_fingerprint("selection")


def test_relative_paths_resolve_against_the_job_file(make_job, tmp_path, monkeypatch):
    path = make_job()
    monkeypatch.chdir("/")
    job = load_job(path)
    assert job.resolve_path("data/x.parquet") == tmp_path / "data" / "x.parquet"


def test_missing_file_and_bad_toml_are_clear(tmp_path):
    with pytest.raises(SpecError, match="not found"):
        load_job(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\npath=1")
    with pytest.raises(SpecError, match="not valid TOML"):
        load_job(bad)


@pytest.mark.parametrize("name", ["..", ".", "a/b", ""])
def test_run_name_is_one_safe_path_component(make_job, name):
    with pytest.raises(SpecError, match=r"run\.name"):
        load_job(make_job(), [f'run.name="{name}"'])
    assert load_job(make_job(), ['run.name="v1.2_x-y"']).run.name == "v1.2_x-y"


def test_the_default_reprojection_stays_out_of_a_dense_kind_but_an_explicit_one_is_refused():
    from iprox_ray.sketch.kinds import check_sketch
    from iprox_ray.spec import SketchSpec

    assert SketchSpec(kind="srht").reproject_dim == 8192  # the Kronecker default, unused by a dense kind
    check_sketch(SketchSpec(kind="srht"))
    # The kind checks its settings when the job is loaded (sketch/kinds.py; the spec holds the name).
    with pytest.raises(SpecError, match="reproject_dim applies to kind = 'kronecker'"):
        check_sketch(SketchSpec(kind="srht", reproject_dim=4096))
