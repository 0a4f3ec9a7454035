"""`iprox-ray plan`: counts and store size against a real (tiny) run, the JSON shape, bad inputs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch

from iprox_ray.cli.main import main
from iprox_ray.cost.counts import manifest_of, sketch_array_bytes
from iprox_ray.cost.plan import plan_job
from iprox_ray.cost.workers import list_schedule
from iprox_ray.driver.pipeline import run_job
from iprox_ray.spec import load_job
from iprox_ray.store.layout import POOL
from iprox_ray.store.sketch_store import OK, SplitStore
from iprox_ray.tasks.inputs import encoder_for

REQUIRED = ("rows", "tokens", "shards", "store_bytes", "sketch_seconds", "worker_peak_bytes", "driver_peak_bytes",
            "embed_seconds", "per_worker", "timed", "splits")


def sketch_files_bytes(store: Path) -> int:
    """Bytes of every sketch array's chunk files (what store_bytes predicts)."""
    arrays = [d for d in store.glob("**/sketch*/c") if re.fullmatch(r"sketch(_ckpt\d+)?", d.parent.name)]
    return sum(f.stat().st_size for d in arrays for f in d.rglob("*") if f.is_file())


def test_plan_matches_a_real_run(make_job, tmp_path):
    path = make_job(n_pool=90, rows_per_shard=16)  # 2 files of 45 rows: partial shards in each
    job = load_job(path)
    run_dir = tmp_path / "run"
    # The whole pool sampled: tokens are exact. --run-dir builds the proxy the run then reuses.
    plan = plan_job(job, run_dir, sample_rows=1000, batches=2)
    run_job(load_job(path), run_dir, quiet=True)
    pool = SplitStore.open(run_dir / "store.zarr", "pool")
    written = pool.read("written")
    assert plan.rows == 90
    assert plan.shards == 6 == pool.n_shards
    assert plan.tokens == int(pool.read("n_tokens")[written == OK].sum())
    assert plan.store_bytes == sketch_files_bytes(run_dir / "store.zarr")
    assert "proxy" in plan.timed and str(run_dir) in plan.timed
    assert any("plan again" in n for n in plan.notes)  # built here: its memory figures are low
    again = plan_job(job, run_dir, sample_rows=1000, batches=1)  # reuses the finished stages
    assert not any("plan again" in n for n in again.notes) and again.store_bytes == plan.store_bytes
    assert plan.per_worker.workers == 1  # inline executor
    assert plan.sketch_seconds > 0 and plan.worker_peak_bytes > 0
    assert plan.driver_peak_bytes > 0
    assert plan.driver_peak_stage in ("warm-up", "proxy construction", "scoring")
    markers = [json.loads(m.read_text()) for m in (run_dir / "completions").glob("sketch-*/*.json")]
    assert markers and all(m["cpu_seconds"] > 0 for m in markers)  # what plan's sketch_cpu_seconds predicts


def test_plan_json_on_the_command_line(make_job, tmp_path, capsys):
    path = make_job(n_pool=40, rows_per_shard=16)
    out = tmp_path / "plan.json"
    assert main(["plan", str(path), "--json", "--sample-rows", "16", "--batches", "1", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert all(k in printed for k in REQUIRED)
    assert printed == json.loads(out.read_text())
    assert printed["rows"] == 40 and printed["shards"] == 4  # 2 files of 20 rows, 16 per shard
    assert printed["splits"][1]["sampled_rows"] == 16
    assert "in place of the ipsvd proxy" in printed["timed"]  # no run dir: the target was timed, and said so
    assert any("--run-dir" in n for n in printed["notes"])
    assert not (tmp_path / "runs").exists()  # nothing written without --run-dir


def test_plan_table_and_embedding_pass(make_job, capsys):
    path = make_job(n_pool=32, rows_per_shard=16, extra="[scoring]\nmethod = 'rds+'\n")
    assert main(["plan", str(path), "--sample-rows", "8", "--batches", "1"]) == 0
    text = capsys.readouterr().out
    assert "store" in text and "embed" in text and "driver peak" in text
    plan = plan_job(load_job(path), sample_rows=8, batches=1)
    assert plan.embed_timing is not None and plan.embed_seconds > 0
    assert plan.store_bytes == 0  # rds+ scores embeddings: no split is sketched


def test_bad_inputs_give_clear_errors(make_job, tmp_path, capsys):
    assert main(["plan", str(tmp_path / "missing.toml")]) == 2
    assert "missing.toml" in capsys.readouterr().err
    path = make_job(n_pool=20)
    assert main(["plan", str(path), "--sample-rows", "0"]) == 2
    assert "--sample-rows" in capsys.readouterr().err
    assert main(["plan", str(path), "--set", "data.pool.paths=['nowhere/*.parquet']"]) == 1
    assert "nowhere" in capsys.readouterr().err
    if not torch.cuda.is_available():
        bad = ["--set", "cluster.executor=ray", "--set", "cluster.use_gpus=yes"]
        assert main(["plan", str(path), *bad]) == 2
        assert "no GPU" in capsys.readouterr().err


def test_store_bytes_formula_and_scheduling(make_job):
    job = load_job(make_job(n_pool=40, rows_per_shard=16))
    manifest = manifest_of(job, POOL, job.data.pool, encoder_for(job, POOL))
    assert sketch_array_bytes(manifest, 64, 0.0, "float16") == 0
    full = sketch_array_bytes(manifest, 64, 1.0, "float16")
    assert 0 < sketch_array_bytes(manifest, 64, 0.1, "float16") < full
    assert list_schedule([3.0, 1.0, 1.0, 1.0], 2) == (3.0, 3)  # the free worker takes the next shard
    assert list_schedule(list(np.ones(5)), 1) == (5.0, 5)


def test_threads_beyond_this_machine_are_capped_and_said(make_job):
    import os

    # A Ray actor's threads (the inline worker takes the cores its process is given instead).
    job = load_job(make_job(n_pool=16),
                   ["cluster.executor=ray", "cluster.use_gpus=no", "cluster.threads_per_actor=4096"])
    plan = plan_job(job, sample_rows=8, batches=1)
    assert plan.sketch_timing.threads == min(4096, os.cpu_count())
    assert plan.per_worker.threads_per_worker == 4096
    assert any("timed with" in n for n in plan.notes)


def test_a_nodes_cpu_workers_are_timed_together(make_job):
    """Two 1-thread CPU actors share a node: the timed worker runs beside a sibling process doing
    the same batches, and the plan says so (the run's workers compete for the same cores)."""
    import os

    job = load_job(make_job(n_pool=16, extra="[scoring]\nmethod = 'rds+'\n"),
                   ["cluster.executor=ray", "cluster.actors=2", "cluster.use_gpus=no"])
    plan = plan_job(job, sample_rows=8, batches=1)
    together = min(2, os.cpu_count())
    assert plan.sketch_timing.concurrent_workers == together == plan.embed_timing.concurrent_workers
    assert plan.sketch_timing.alone_seconds_per_padded_token > 0
    assert ("beside 1 other worker" in plan.timed) == (together == 2)
    alone = plan_job(load_job(make_job(n_pool=16)), sample_rows=8, batches=1)  # inline: one worker
    assert alone.sketch_timing.concurrent_workers == 1 and "beside" not in alone.timed


def test_a_sibling_that_fails_is_a_clear_error():
    import functools

    import pytest

    from iprox_ray.cost.contention import busy_siblings

    with pytest.raises(RuntimeError, match="exited with code 1 before it was ready"):
        with busy_siblings(1, functools.partial(int, "not a loader"), [], 1):
            pass


def test_auto_shards_and_round_robin_candidates(make_job):
    """rows_per_shard = "auto" is sized from the sample, and the driver's round-robin memory is the
    C × k candidates (not a rows × C matrix)."""
    from iprox_ray.cost.workers import driver_peak
    from iprox_ray.influence.column_topk import candidate_bytes

    job = load_job(make_job(n_pool=40), ["data.pool.rows_per_shard='auto'", "selection.strategy='round-robin'",
                                         "selection.round_robin_memory_gib=1e-7"])
    plan = plan_job(job, sample_rows=8, batches=1)
    manifest = manifest_of(job, POOL, job.data.pool, encoder_for(job, POOL))
    assert manifest.rows_per_shard % 64 == 0 and plan.shards == manifest.n_shards and plan.driver_peak_bytes > 0
    assert any(n.startswith("the run would stop at preflight: round-robin over") for n in plan.notes)
    topk = load_job(make_job(n_pool=40))
    args = (0, 0, False, 0.0, 10**8, 4096, 1000, 64, 1)
    rr = topk.model_copy(update={"selection": topk.selection.model_copy(update={"strategy": "round-robin"})})
    extra = driver_peak(rr, *args)[0] - driver_peak(topk, *args)[0]
    assert extra == candidate_bytes(1000, topk.selection.size_for(10**8))


def test_warmup_step_is_measured_in_a_fresh_process(make_job):
    """The driver's warm-up peak is one real AdamW step: at least weights, gradients and both
    moments resident; a model that cannot load is a clear error, not a silent zero."""
    import functools

    import pytest

    from iprox_ray.cost.counts import sample_split
    from iprox_ray.cost.driver_steps import warmup_step_bytes
    from iprox_ray.cost.target_model import target_bytes, target_loader
    from iprox_ray.cost.workers import parameter_bytes

    job = load_job(make_job(n_pool=24))
    encoder = encoder_for(job, POOL)
    sample = sample_split(POOL, manifest_of(job, POOL, job.data.pool, encoder), job.data.pool, encoder, 24, 0)
    pad = encoder.tokenizer.pad_token_id
    grown = warmup_step_bytes(job, target_loader(job), sample.encoded, pad)
    assert grown >= 4 * parameter_bytes(target_loader(job)()) == 4 * target_bytes(job)
    with pytest.raises(RuntimeError, match="warm-up step measurement failed: FileNotFoundError"):
        warmup_step_bytes(job, functools.partial(open, "/nowhere/model"), sample.encoded, pad)


def test_a_warmup_too_big_for_this_machine_is_modelled_and_said(make_job, monkeypatch):
    from iprox_ray.cost import driver_steps
    from iprox_ray.cost import plan as plan_module

    class Tiny:
        available = 1024

    monkeypatch.setattr(driver_steps.psutil, "virtual_memory", lambda: Tiny())
    monkeypatch.setattr(plan_module, "config_only_reason", lambda job: None)  # the sketch still timed
    plan = plan_job(load_job(make_job(n_pool=16), ["sketch.token_budget=4096"]), sample_rows=8, batches=1)
    assert plan.sizes_from == "model"
    assert any("warm-up step was modelled, not measured" in n for n in plan.notes)
    assert plan.driver_peak_bytes > 0


def test_siblings_that_do_not_fit_or_fail_leave_the_timing_alone_and_say_so(make_job, monkeypatch):
    import contextlib
    import os

    from iprox_ray.cost import contention
    from iprox_ray.cost import plan as plan_module

    if os.cpu_count() < 2:
        return  # one core: no sibling is ever started
    job = load_job(make_job(n_pool=16), ["cluster.executor=ray", "cluster.actors=2", "cluster.use_gpus=no",
                                         "sketch.token_budget=4096"])

    class Tiny:
        available = 1024

    with monkeypatch.context() as m:
        m.setattr(contention.psutil, "virtual_memory", lambda: Tiny())
        m.setattr(plan_module, "config_only_reason", lambda job: None)  # the model is still timed here
        plan = plan_job(job, sample_rows=8, batches=1)
    assert plan.sketch_timing.concurrent_workers == 1
    assert any("0 of 1 sibling worker(s) fit" in n for n in plan.notes)

    @contextlib.contextmanager
    def failing(*args):
        raise RuntimeError("a sibling timing process exited with code 1 before it was ready")
        yield

    monkeypatch.setattr(contention, "busy_siblings", failing)
    plan = plan_job(job, sample_rows=8, batches=1)
    assert plan.sketch_timing.concurrent_workers == 1 and "beside" not in plan.timed
    assert any(n.startswith("timed alone: a sibling timing process exited") for n in plan.notes)
