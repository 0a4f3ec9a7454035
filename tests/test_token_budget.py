"""`sketch.token_budget = "auto"`: the config's memory model, the worker's share, the choice and its
record in a run and in `plan`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, GPT2Config

from iprox_ray.execution import worker_layout as layout_mod
from iprox_ray.execution.worker_layout import WORKER_BASE_BYTES, Layout, worker_layout, worker_memory
from iprox_ray.sketch.memory import GIB, ROUND_TO, SAFETY, ModelShape, PeakModel, bytes_per_token, choose_budget
from iprox_ray.spec import SpecError, load_job

CONFIGS = Path(__file__).resolve().parent / "fixtures" / "configs"


def fixture_config(name: str):
    return AutoConfig.for_model(**json.loads((CONFIGS / name).read_text()))


def test_shapes_from_configs_of_several_families():
    llama = ModelShape.from_config(fixture_config("llama-3-8b.json"))
    assert llama == ModelShape(layers=32, hidden=4096, intermediate=14336, heads=32, kv_dim=8 * 128, vocab=128256)
    qwen3 = ModelShape.from_config(fixture_config("qwen3-4b.json"))  # head_dim 128 != 2560 / 32
    assert qwen3.kv_dim == 8 * 128 and qwen3.layers == 36
    gpt2 = ModelShape.from_config(GPT2Config(n_embd=64, n_layer=3, n_head=4, vocab_size=500))
    assert gpt2 == ModelShape(layers=3, hidden=64, intermediate=256, heads=4, kv_dim=64, vocab=500)


def test_activation_bytes_grow_with_every_width_and_the_loss_share():
    base = ModelShape(4, 256, 1024, 4, 256, 4096)
    per = bytes_per_token(base, 128)
    for wider in (ModelShape(8, 256, 1024, 4, 256, 4096), ModelShape(4, 512, 1024, 4, 256, 4096),
                  ModelShape(4, 256, 3072, 4, 256, 4096), ModelShape(4, 256, 1024, 4, 512, 4096),
                  ModelShape(4, 256, 1024, 4, 256, 32768)):
        assert bytes_per_token(wider, 128) > per
    assert bytes_per_token(base, 128, loss_share=0.25) < per
    assert bytes_per_token(base, 512, attn="eager") > bytes_per_token(base, 128, attn="eager") > per


def test_the_largest_budget_that_fits_is_chosen():
    model = PeakModel(fixed_bytes=3 * GIB, model_bytes=2 * GIB, bytes_per_token=1 << 20, max_length=256)
    share = 16 * GIB
    choice = choose_budget(model, share, "test", max_rows=1024)
    assert choice.token_budget % ROUND_TO == 0 and choice.limit == "memory"
    assert model.peak(choice.token_budget) <= SAFETY * share < model.peak(choice.token_budget + ROUND_TO)
    assert choice.predicted_peak_bytes == model.peak(choice.token_budget)
    capped = choose_budget(model, share, "test", max_rows=4)  # 4 rows of 256 tokens is all a batch can hold
    assert capped.token_budget == 1024 and capped.limit == "rows"
    with pytest.raises(SpecError, match=r"sketch.token_budget = 'auto': one row of data.max_length = 256"):
        choose_budget(model, 4 * GIB, "test", max_rows=64)


def test_worker_share_by_executor_and_cluster(make_job, monkeypatch):
    class Free:
        available = 12 * GIB

    monkeypatch.setattr(layout_mod.psutil, "virtual_memory", lambda: Free())
    path = make_job(n_pool=16)
    inline = load_job(path)
    memory = worker_memory(inline, worker_layout(inline))
    assert memory.share_bytes == 12 * GIB and memory.base_bytes == 0  # the driver is the worker
    ray = load_job(path, ["cluster.executor=ray", "cluster.actors=3", "cluster.use_gpus=no"])
    memory = worker_memory(ray, worker_layout(ray))
    assert memory.share_bytes == 4 * GIB and memory.base_bytes == WORKER_BASE_BYTES and "3 worker(s)" in memory.source
    slurm = load_job(path, ["cluster.kind=slurm", "cluster.executor=ray", "cluster.use_gpus=no",
                            "cluster.slurm.cpus_per_task=8", "cluster.actors=4", "cluster.slurm.mem_gb=64"])
    memory = worker_memory(slurm, worker_layout(slurm))
    assert memory.share_bytes == 16 * GIB and "mem_gb = 64" in memory.source  # 4 workers on the node
    monkeypatch.setenv("SLURM_MEM_PER_NODE", "32768")
    unset = load_job(path, ["cluster.kind=slurm", "cluster.executor=ray", "cluster.use_gpus=no",
                            "cluster.slurm.cpus_per_task=8", "cluster.actors=4"])
    assert worker_memory(unset, worker_layout(unset)).share_bytes == 8 * GIB
    gpus = Layout(workers=1, nodes=1, threads=1, uses_gpu=True, per_node=1)
    if not torch.cuda.is_available():
        assert worker_memory(inline, gpus) is None  # a GPU's memory cannot be seen from here


def test_a_run_chooses_once_and_keeps_its_choice(make_job, tmp_path, tiny_model_dir, monkeypatch):
    """The choice is recorded at the first sketch and read back afterwards, whatever memory is free
    then (a resume batches its rows as the first run did)."""
    from iprox_ray.execution.context import RunContext
    from iprox_ray.store.layout import RunLayout
    from iprox_ray.tasks.model_ref import ModelRef
    from iprox_ray.tasks.sketch_budget import budget_summary, sketch_spec

    class Free:
        available = 2 * GIB

    monkeypatch.setattr(layout_mod.psutil, "virtual_memory", lambda: Free())
    job = load_job(make_job(n_pool=16), ["data.max_length=4096", "sketch.max_batch_rows=4096"])
    assert job.sketch.token_budget == "auto"
    ctx = RunContext(job, RunLayout(tmp_path / "run"), quiet=True)
    ref = ModelRef("hf", tiny_model_dir)
    first = sketch_spec(ctx, ref).token_budget
    assert isinstance(first, int) and 4096 <= first < 4096 * 4096 and first % ROUND_TO == 0
    Free.available = 64 * GIB
    assert sketch_spec(ctx, ref).token_budget == first
    record = json.loads(ctx.layout.stage_done("sketch-budget").read_text())
    assert record["token_budget"] == first and record["limit"] == "memory"
    assert budget_summary(ctx)["sketch_token_budget"]["tokens"] == first
    fixed = RunContext(load_job(make_job(n_pool=16), ["sketch.token_budget=512"]), RunLayout(tmp_path / "r2"))
    assert sketch_spec(fixed, ref).token_budget == 512 and not fixed.layout.stage_done("sketch-budget").exists()


def test_an_inline_run_records_and_reports_its_budget(make_job, tmp_path, capsys):
    from iprox_ray.driver.pipeline import run_job

    run_dir = tmp_path / "run"
    summary = run_job(load_job(make_job(n_pool=32), ["proxy.method=none"]), run_dir)
    record = json.loads((run_dir / "stages" / "sketch-budget.json").read_text())
    assert summary["sketch_token_budget"] == {"tokens": record["token_budget"], "auto": True,
                                              **{k: record[k] for k in ("predicted_peak_bytes", "share_bytes",
                                                                        "source", "limit")}}
    assert f"sketch token budget: {record['token_budget']} (auto)" in capsys.readouterr().out
    saved = json.loads((run_dir / "summary.json").read_text())
    assert saved["sketch_token_budget"]["tokens"] == record["token_budget"]


def test_plan_prints_the_budget_a_run_would_choose(make_job, tmp_path):
    from iprox_ray.cost.plan import plan_job
    from iprox_ray.cost.result import format_plan

    job = load_job(make_job(n_pool=16))
    plan = plan_job(job, sample_rows=8, batches=1)
    assert plan.token_budget_auto["token_budget"] == plan.token_budget > 0
    assert any(n.startswith("sketch.token_budget = auto:") for n in plan.notes)
    assert f"{plan.token_budget:,} tokens a batch (auto)" in format_plan(plan)
    assert plan.worker_peak_modelled_bytes > 0
    recorded = tmp_path / "run" / "stages" / "sketch-budget.json"  # a run directory that chose already
    recorded.parent.mkdir(parents=True)
    recorded.write_text(json.dumps({"auto": True, "token_budget": 768}))
    again = plan_job(job, tmp_path / "run", sample_rows=8, batches=1)
    assert again.token_budget == 768 and any("recorded at its first sketch" in n for n in again.notes)


def test_a_share_too_small_for_one_row_is_a_clear_error(make_job, tmp_path, capsys):
    from iprox_ray.cli.main import main

    path = make_job(n_pool=16)
    small = ["--set", "cluster.kind=slurm", "--set", "cluster.slurm.mem_gb=1", "--set", "proxy.method=none",
             "--set", "warmup.enabled=false", "--run-dir", str(tmp_path / "run")]
    assert main(["run", str(path), *small]) == 2
    err = capsys.readouterr().err.strip()  # after the stage's progress lines: one error line, no traceback
    last = err.splitlines()[-1]
    assert last.startswith("error: sketch.token_budget = 'auto': one row of data.max_length = 192 tokens needs")
    assert "cluster.slurm.mem_gb = 1" in last and "Traceback" not in err


def test_an_undecided_auto_proxy_is_budgeted_as_its_target(make_job, tmp_path, tiny_model_dir):
    """proxy.method = "auto" chooses at the proxy's fidelity check, before the verdict that may
    sketch the target instead: the models counted are the target's (the proxy is never read)."""
    from iprox_ray.execution.context import RunContext
    from iprox_ray.models.loading import load_config, meta_model
    from iprox_ray.store.layout import RunLayout
    from iprox_ray.tasks.model_ref import ModelRef
    from iprox_ray.tasks.sketch_budget import sketch_spec

    job = load_job(make_job(n_pool=16), [f"model.path='{tiny_model_dir}'", "proxy.method='auto'"])
    ctx = RunContext(job, RunLayout(tmp_path / "run"), quiet=True)
    sketch_spec(ctx, ModelRef("proxy", tmp_path / "no-proxy-here"))
    record = json.loads(ctx.layout.stage_done("sketch-budget").read_text())
    target = sum(p.numel() for p in meta_model(load_config(tiny_model_dir)).parameters())
    assert record["model_bytes"] == target * 4 * (1 if job.sketch.optimizer == "none" else 3)
