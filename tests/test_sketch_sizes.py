"""Sketch sizes from a model's config alone: `plan` without the weights, and the README's table."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoConfig

from iprox_ray.cli.main import main
from iprox_ray.cost.plan import plan_job
from iprox_ray.cost.sizes import config_sizes, store_dtype
from iprox_ray.spec import SketchSpec, load_job

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "tests" / "fixtures" / "configs"
SIZES_BEGIN = "<!-- sketch-sizes:"


def readme_rows() -> list[dict]:
    """The README table's rows: shape, fixture, width, bytes a row."""
    text = (REPO / "README.md").read_text()
    section = text[text.index(SIZES_BEGIN): text.index("<!-- /sketch-sizes -->")]
    rows = []
    for line in section.splitlines():
        fixture = re.search(r"`tests/fixtures/configs/([^`]+)`", line)
        if fixture:
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows.append({"shape": cells[0], "fixture": fixture.group(1), "width": int(cells[7].replace(",", "")),
                         "row_bytes": int(cells[8].replace(",", ""))})
    return rows


def weightless_model(tmp_path: Path, fixture: str) -> Path:
    folder = tmp_path / fixture.removesuffix(".json")
    folder.mkdir()
    (folder / "config.json").write_text((CONFIGS / fixture).read_text())
    return folder


def fixture_config(name: str):
    return AutoConfig.for_model(**json.loads((CONFIGS / name).read_text()))


def test_readme_table_is_what_plan_computes(make_job, tmp_path):
    """Each README row against `plan` on that config with no weights (sizes from the meta device);
    the script that writes the table agrees with the README too (neither can go stale)."""
    rows = readme_rows()
    assert [r["shape"] for r in rows] == ["SmolLM2-135M", "Llama-3.2-1B", "Llama-3.2-3B", "Llama-3-8B", "Qwen2.5-7B"]
    path = make_job(n_pool=16)
    default = SketchSpec()  # the test job's own [sketch] section is smaller
    sketch = [f"sketch.proj_in={default.proj_in}", f"sketch.proj_out={default.proj_out}"]
    for row in rows:
        model = weightless_model(tmp_path, row["fixture"])
        job = load_job(path, [f"model.path='{model}'", "model.init='pretrained'", "proxy.method='none'", *sketch])
        assert job.sketch.model_dump(exclude={"token_budget"}) == default.model_dump(exclude={"token_budget"})
        plan = plan_job(job, sample_rows=8, batches=1)
        assert plan.sizes_from == "config", row["shape"]
        assert (plan.sketch_sizes["width"], plan.sketch_sizes["row_bytes"]) == (row["width"], row["row_bytes"])
    script = subprocess.run([sys.executable, "-m", "bench.scale.sketch_sizes", "--check"], cwd=REPO,
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert script.returncode == 0, script.stderr


def width_growth_violations(spec: SketchSpec) -> list[str]:
    """Pairs of the README's shapes (by parameters) where the width grew more than the Kronecker
    block did (by more than 0 where the block shrank)."""
    sizes = [(config_sizes(fixture_config(r["fixture"]), spec, store_dtype()), r["shape"]) for r in readme_rows()]
    sizes.sort(key=lambda pair: pair[0].parameters)
    bad = []
    for i, (small, a) in enumerate(sizes):
        for large, b in sizes[i + 1:]:
            if large.width - small.width > max(0, large.matrix_block - small.matrix_block):
                bad.append(f"{a} -> {b}: width +{large.width - small.width:,}, Kronecker "
                           f"{large.matrix_block - small.matrix_block:+,}")
    return bad


def test_a_fixed_vector_block_grows_with_the_kronecker_part_only():
    """What the default must satisfy (below), shown on settings that do: a fixed-width vector
    block, with and without re-projecting the Kronecker block."""
    assert width_growth_violations(SketchSpec(vector_dim=4096)) == []
    assert width_growth_violations(SketchSpec(vector_dim=4096, reproject_dim=16384)) == []
    assert width_growth_violations(SketchSpec(vector_dim=0))  # exact norm weights grow with depth x width


def test_default_width_grows_no_faster_than_its_kronecker_part():
    """The default re-projects the Kronecker block and projects the vector block to fixed widths:
    the same width on every shape of the README's table."""
    assert width_growth_violations(SketchSpec()) == []
    widths = {config_sizes(fixture_config(r["fixture"]), SketchSpec(), store_dtype()).width for r in readme_rows()}
    assert widths == {SketchSpec().reproject_dim + SketchSpec().vector_dim}


def test_config_plan_says_so_and_times_nothing(make_job, tmp_path, capsys):
    model = weightless_model(tmp_path, "llama-3-8b.json")
    path = make_job(n_pool=24)
    args = ["plan", str(path), "--set", f"model.path='{model}'", "--set", "model.init='pretrained'",
            "--sample-rows", "8", "--json"]
    assert main(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["sizes_from"] == "config" and printed["sketch_seconds"] is None
    assert printed["sketch_timing"] is None and printed["timed"].startswith("nothing: the weights of")
    assert any("config alone (meta device)" in n for n in printed["notes"])
    assert printed["store_bytes"] > 0 and printed["worker_peak_bytes"] > 30 * 2**30  # 8 B fp32 weights alone
    assert main(args[:-1]) == 0
    table = capsys.readouterr().out
    assert "not timed" in table and f"{printed['sketch_sizes']['width']:,} columns" in table and "meta device" in table


def test_a_model_too_large_for_this_machine_is_sized_from_its_config(make_job, monkeypatch):
    """Same job: the config-only plan (weights 'too large' for a machine with 1 KiB free) gives the
    measured plan's width and store bytes, which test_plan checks against a real run's store."""
    from iprox_ray.cost import timed

    job = load_job(make_job(n_pool=24), ["sketch.token_budget=4096"])
    measured = plan_job(job, sample_rows=8, batches=1)

    class Tiny:
        available = 1024

    monkeypatch.setattr(timed.psutil, "virtual_memory", lambda: Tiny())
    sized = plan_job(job, sample_rows=8, batches=1)
    assert measured.sizes_from == "model" and sized.sizes_from == "config"
    assert any("would not fit beside a timing" in n for n in sized.notes)
    assert sized.sketch_sizes == measured.sketch_sizes and sized.store_bytes == measured.store_bytes
    assert sized.sketch_seconds is None and sized.worker_peak_bytes == sized.worker_peak_modelled_bytes > 0


@pytest.mark.parametrize("dtype", ["float16", "int8"])
def test_store_bytes_follow_the_store_dtype(make_job, tmp_path, dtype):
    """The formula against a real store of that dtype, at a width where the dtype also changes the
    chunking (float16 chunks of 8 rows, int8 of 16: a chunk stays under 4 MiB)."""
    import numpy as np
    from test_plan import sketch_files_bytes

    from iprox_ray.cost.counts import manifest_of, sketch_array_bytes
    from iprox_ray.store.sketch_store import SplitStore
    from iprox_ray.tasks.inputs import POOL, encoder_for

    job = load_job(make_job(n_pool=40, rows_per_shard=16))
    manifest = manifest_of(job, POOL, job.data.pool, encoder_for(job, POOL))
    dim = 200_000
    store = SplitStore.create(tmp_path / "s.zarr", POOL, manifest.n_shards, manifest.rows_per_shard, dim,
                              {"sketch_dtype": dtype})
    rng = np.random.default_rng(0)
    for shard in manifest.shards:
        n = shard.n_rows
        units = rng.standard_normal((n, dim)).astype(np.float32)
        rows = {"sample_id": np.asarray([f"r{shard.shard_id}-{i}" for i in range(n)], dtype=object),
                "domain": np.full(n, "", dtype=object), "subtask": np.full(n, "", dtype=object),
                "n_tokens": np.ones(n, np.int32), "loss": np.ones(n, np.float32),
                "sketch_norm": np.ones(n, np.float32), "written": np.ones(n, np.uint8)}
        store.write_shard(shard.shard_id, units / np.linalg.norm(units, axis=1, keepdims=True), rows)
    assert sketch_array_bytes(manifest, dim, 1.0, dtype) == sketch_files_bytes(tmp_path / "s.zarr")


def test_plan_sizes_rows_in_the_store_dtype(make_job):
    """`store.sketch_dtype = "int8"`: a row is the width in bytes plus its norm and scale, and the
    store about half the float16 one."""
    path = make_job(n_pool=24)
    half = load_job(path, ["store.sketch_dtype='float16'", "sketch.token_budget=4096"])
    int8 = load_job(path, ["store.sketch_dtype='int8'", "sketch.token_budget=4096"])
    sizes = {job.store.sketch_dtype: plan_job(job, sample_rows=8, batches=1) for job in (half, int8)}
    width = sizes["int8"].sketch_sizes["width"]
    assert sizes["int8"].sketch_sizes["dtype"] == "int8" and sizes["int8"].sketch_sizes["row_bytes"] == width + 8
    assert sizes["float16"].sketch_sizes["row_bytes"] == 2 * width + 4
    assert 0.45 < sizes["int8"].store_bytes / sizes["float16"].store_bytes < 0.55
