"""The sketch stage end to end on the inline executor: dense + Adam features, several checkpoints."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import zarr

from iprox_ray.corpus.batching import make_batches
from iprox_ray.corpus.shard_reader import read_shard
from iprox_ray.driver.rundir import write_config
from iprox_ray.execution.context import RunContext
from iprox_ray.execution.launchers import launcher_for
from iprox_ray.methods import method_named
from iprox_ray.models.loading import load_pretrained, save_model
from iprox_ray.models.optimizer_state import load_adam_state
from iprox_ray.sketch.factory import make_sketcher
from iprox_ray.spec import load_job
from iprox_ray.stages.proxy import run_proxy
from iprox_ray.stages.score import run_score
from iprox_ray.stages.sketch import run_sketch
from iprox_ray.stages.warmup import run_warmup
from iprox_ray.store.layout import SKETCH_BUDGET_STAGE, RunLayout
from iprox_ray.store.sketch_store import OK, SplitStore, checkpoint_array
from iprox_ray.tasks.inputs import POOL, make_encoder, manifest_for, target_split

TARGET = target_split("main")


def _run_sketch(job, run_dir):
    layout = RunLayout(run_dir)
    layout.root.mkdir(parents=True, exist_ok=True)
    write_config(job, layout)
    ctx = RunContext(job, layout, quiet=True)
    for split in (POOL, TARGET):
        manifest_for(ctx, split)
    ref = run_proxy(ctx, run_warmup(ctx))
    with launcher_for(job).workers(job) as plan:
        report = run_sketch(ctx, [TARGET, POOL], ref, plan)
    return ctx, ref, report


def _direct_rows(ctx, model, spec, state, split, shard_id=0):
    """Sketch one shard's rows directly (no stage machinery): the stage must store these."""
    encoder = make_encoder(ctx, split)
    manifest = manifest_for(ctx, split)
    source = ctx.job.data.pool if split == POOL else ctx.job.data.target
    rows = read_shard(split, manifest.shards[shard_id], source, encoder)
    sketcher = make_sketcher(copy.deepcopy(model), spec, state)
    out = np.zeros((len(rows.encoded), sketcher.dim), np.float32)
    budget = spec.token_budget  # "auto": the budget the stage chose and recorded
    budget = ctx.stage_done(SKETCH_BUDGET_STAGE)["token_budget"] if budget == "auto" else budget
    for batch in make_batches(rows.encoded, budget, spec.max_batch_rows, encoder.tokenizer.pad_token_id):
        ids, attn, train = (torch.from_numpy(a) for a in (batch.input_ids, batch.attention_mask, batch.trainable))
        out[batch.rows] = sketcher.sketch(ids, attn, train).sketch.numpy()
    return np.asarray(rows.local_rows), out


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _assert_stored(store, span, local, checkpoint, expected):
    """The stored rows are the unit rows up to float16 rounding, or for int8 (the default) up to
    half a quantisation step (the row's scale) of each entry."""
    stored = store.units(span, checkpoint)[local]
    tol = np.full((len(local), 1), 2e-3)
    if store.sketch_dtype == "int8":
        tol = tol + 0.5 * store.read(checkpoint_array("sketch_scale", checkpoint), span)[local][:, None]
    assert (np.abs(stored - _unit(expected)) <= tol).all(), np.abs(stored - _unit(expected)).max()


def test_dense_influence_distillation_features_on_pool_only(make_job, tmp_path):
    overrides = ["proxy.method=none", "sketch.kind=srht", "sketch.dim=64", "sketch.mask_fraction=0.5",
                 "sketch.optimizer=influence-distillation", r'sketch.modules=["re:.*\\.(down_proj|o_proj)$"]']
    job = load_job(make_job(n_pool=32), overrides)
    ctx, ref, report = _run_sketch(job, tmp_path / "run")
    pool = SplitStore.open(ctx.layout.store, POOL)
    target = SplitStore.open(ctx.layout.store, TARGET)
    assert pool.group.attrs["features"] == {"optimizer": "influence-distillation", "approximation": "exact"}
    assert target.group.attrs["features"] == {"optimizer": "none"}
    vectors = pool.group.attrs["vectors"]  # norm weights sketched exactly beside the 64 SRHT columns
    assert vectors["kind"] == "exact" and vectors["dim"] == sum(n for _, n in vectors["params"]) > 0
    assert pool.group.attrs["projection"]["kind"] == "srht" and pool.sketch_dim == 64 + vectors["dim"]
    model = ref.load()
    state = load_adam_state(ctx.layout.warmup_dir)
    for split, store, adam in ((POOL, pool, state), (TARGET, target, None)):
        local, expected = _direct_rows(ctx, model, job.sketch, adam, split)
        span = store.shard_rows(0)
        assert (store.read("written", span)[local] == OK).all()
        _assert_stored(store, span, local, 0, expected)
        np.testing.assert_allclose(store.read("sketch_norm", span)[local], np.linalg.norm(expected, axis=1), rtol=1e-4)
    # The Adam factor really changed the pool features (same rows sketched plain differ).
    _, plain = _direct_rows(ctx, model, job.sketch, None, POOL)
    _, adam = _direct_rows(ctx, model, job.sketch, state, POOL)
    assert np.abs(_unit(plain) - _unit(adam)).max() > 0.05


def test_two_checkpoints_get_one_sketch_array_each(make_job, tmp_path):
    # Checkpoint 1: the demo model warmed briefly, state in an iprox-ray folder (from a first run).
    first_job = load_job(make_job(n_pool=32), ["proxy.method=none"])
    ctx0, ref0, _ = _run_sketch(first_job, tmp_path / "first")
    # Checkpoint 2: that model one AdamW step further, its optimizer saved as a torch optimizer.pt.
    model = load_pretrained(ref0.path).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ids = torch.randint(0, 100, (2, 12))
    model(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    save_model(model.eval(), tmp_path / "ckpt2")
    torch.save(opt.state_dict(), tmp_path / "ckpt2" / "optimizer.pt")
    checkpoints = (f'[{{model="{ref0.path}", optimizer="{ctx0.layout.warmup_dir}", weight=3.0, name="epoch1"}}, '
                   f'{{model="{tmp_path / "ckpt2"}", optimizer="{tmp_path / "ckpt2" / "optimizer.pt"}", weight=1.0}}]')
    job = load_job(make_job(n_pool=32), ["proxy.method=none", "sketch.optimizer=less", "sketch.adam_exact=true",
                                         f"sketch.checkpoints={checkpoints}"])
    ctx, _, _ = _run_sketch(job, tmp_path / "run")
    pool = SplitStore.open(ctx.layout.store, POOL)
    assert pool.group.attrs["checkpoints"] == [{"name": "epoch1", "weight": 0.75}, {"name": "ckpt1", "weight": 0.25}]
    assert {"sketch_ckpt1", "sketch_norm_ckpt1", "loss_ckpt1"} <= set(pool.group.array_keys())
    span = pool.shard_rows(0)
    for c, (folder, state_path) in enumerate([(ref0.path, ctx0.layout.warmup_dir),
                                              (tmp_path / "ckpt2", tmp_path / "ckpt2" / "optimizer.pt")]):
        m = load_pretrained(folder)
        local, expected = _direct_rows(ctx, m, job.sketch, load_adam_state(state_path, m), POOL)
        _assert_stored(pool, span, local, c, expected)
    assert not np.allclose(pool.read("sketch", span), pool.read("sketch_ckpt1", span))

    # LESS over both checkpoints: Σ_c η̄_c · mean over target examples of cos(pool_c, target_c).
    name = run_score(ctx, method_named("less"), TARGET, "main")
    got = zarr.open_group(ctx.layout.store, mode="r")[name][:]
    target = SplitStore.open(ctx.layout.store, TARGET)
    t_ok = np.flatnonzero(target.read("written") == OK)
    p_ok = np.flatnonzero(pool.read("written") == OK)
    expected = np.zeros(len(p_ok))
    for c, weight in enumerate([0.75, 0.25]):
        p_units = _unit(pool.gather(checkpoint_array("sketch", c), p_ok).astype(np.float64))
        t_units = _unit(target.gather(checkpoint_array("sketch", c), t_ok).astype(np.float64))
        expected += weight * (p_units @ t_units.mean(axis=0))
    np.testing.assert_allclose(got[p_ok], expected, rtol=1e-4, atol=1e-5)


def test_checkpoints_with_a_proxy_are_refused(make_job, tmp_path):
    from iprox_ray.stages.model_files import check_model_files

    job = load_job(make_job(n_pool=32), ['sketch.checkpoints=[{model="x"}]'])
    with pytest.raises(ValueError, match="proxy.method = 'none'"):  # with the settings, before any work
        check_model_files(job)
