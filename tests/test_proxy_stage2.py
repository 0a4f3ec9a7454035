"""Balanced low-rank factors and the stage-2 loop (schedule, held-out early stopping)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from iprox_ray.corpus.encode import Encoded
from iprox_ray.models.lowrank import LowRankLinear
from iprox_ray.proxy.align import layer_pairs
from iprox_ray.proxy.artifact import MANIFEST, load_proxy, save_proxy
from iprox_ray.proxy.build import alignment_split
from iprox_ray.proxy.compress import compress, compress_global, plan_ranks
from iprox_ray.proxy.ipsvd import balance_factors
from iprox_ray.proxy.stage2 import Stage2Settings, heldout_objective, lr_factor, train_factors
from iprox_ray.spec import ProxySpec
from iprox_ray.spec.patterns import DEFAULT_LINEAR_PATTERNS


def _tiny(seed=0):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=150, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2)
    return AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa").eval()


def _batches(n, seed):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(0, 150, (4, 14), generator=g)
        attn = torch.ones_like(ids)
        trainable = attn.bool().clone()
        trainable[:, :4] = False
        out.append((ids, attn, trainable))
    return out


def _whitened_scale_moments(model):
    """Probe moments with a real model's scales: inputs ~1, output gradients ~1e-4 (C_δ ~ 1e-8),
    so IPSVD's A carries 1/sqrt(C_δ) and B the rest: ‖A‖/‖B‖ ~ 1e4, as measured on SmolLM2."""
    g = torch.Generator().manual_seed(7)
    cache = {}

    def moments(name):
        if name not in cache:
            module = model.get_submodule(name)
            d_out, d_in = module.weight.shape
            h = torch.randn(d_in, 4 * d_in, generator=g, dtype=torch.float64)
            d = torch.randn(d_out, 4 * d_out, generator=g, dtype=torch.float64) * 1e-4
            cache[name] = (h @ h.T / h.shape[1], d @ d.T / d.shape[1])
        return cache[name]

    return moments


def _lowrank(model):
    return [m for m in model.modules() if isinstance(m, LowRankLinear)]


def _assert_balanced(model):
    modules = _lowrank(model)
    assert modules
    for m in modules:
        na, nb = m.A.weight.double().norm(dim=0), m.B.weight.double().norm(dim=1)
        torch.testing.assert_close(na, nb, rtol=1e-5, atol=0)


def test_balancing_keeps_the_product_and_equalises_each_component():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(20, 6, generator=g, dtype=torch.float64) * torch.logspace(2, 5, 6, dtype=torch.float64)
    b = torch.randn(6, 11, generator=g, dtype=torch.float64) * torch.logspace(-4, -2, 6, dtype=torch.float64)[:, None]
    a2, b2 = balance_factors(a, b)
    torch.testing.assert_close(a2 @ b2, a @ b, rtol=1e-13, atol=0)
    torch.testing.assert_close(a2.norm(dim=0), b2.norm(dim=1), rtol=1e-13, atol=0)
    a32, b32 = balance_factors(a.float(), b.float())  # float32 factors: the product up to rounding
    torch.testing.assert_close(a32 @ b32, (a @ b).float(), rtol=1e-5, atol=1e-6 * float((a @ b).abs().max()))


@pytest.mark.parametrize("method", ["ipsvd", "ipsvd-global", "svd", "random"])
def test_every_construction_builds_balanced_factors(method):
    target = _tiny()
    proxy = copy.deepcopy(target)
    plans = plan_ranks(proxy, DEFAULT_LINEAR_PATTERNS, 0.6, 4)
    moments = _whitened_scale_moments(target)
    if method == "ipsvd-global":
        compress_global(proxy, plans, moments, 0.6, 4, relative_ridge=True)
    else:
        compress(proxy, plans, method, moments, relative_ridge=True)
    _assert_balanced(proxy)


def test_a_proxy_saved_with_unbalanced_factors_is_balanced_on_load(tmp_path):
    target = _tiny()
    proxy = copy.deepcopy(target)
    plans = plan_ranks(proxy, DEFAULT_LINEAR_PATTERNS, 0.6, 4)
    compress(proxy, plans, "svd")
    with torch.no_grad():  # the old form: IPSVD's whitening scales left in the factors
        for m in _lowrank(proxy):
            m.A.weight.mul_(1e3)
            m.B.weight.div_(1e3)
    save_proxy(proxy, tmp_path / "p", plans, {"method": "ipsvd"})
    manifest = json.loads((tmp_path / "p" / MANIFEST).read_text())
    del manifest["factor_form"]  # as written before factors were balanced
    (tmp_path / "p" / MANIFEST).write_text(json.dumps(manifest))
    loaded = load_proxy(tmp_path / "p")
    _assert_balanced(loaded)
    for old, new in zip(_lowrank(proxy), _lowrank(loaded)):
        torch.testing.assert_close(new.dense_weight(), old.dense_weight(), rtol=1e-5, atol=1e-7)


def test_stage2_on_whitened_scale_factors_lowers_its_own_objective():
    """The defect on the real model: IPSVD factors with whitened scales, AdamW at a normal learning
    rate. Built by the product (balanced), stage 2 lowers its objective on training and held-out
    rows; with the factors as IPSVD leaves them, the same run raises it (shown by unbalancing)."""
    target = _tiny()
    proxy = copy.deepcopy(target)
    compress(proxy, plan_ranks(proxy, DEFAULT_LINEAR_PATTERNS, 0.6, 4), "ipsvd", _whitened_scale_moments(target),
             relative_ridge=True)
    unbalanced = copy.deepcopy(proxy)
    with torch.no_grad():
        for m in _lowrank(unbalanced):
            s = (m.A.weight.norm(dim=0) * 1e2)  # ‖a‖/‖b‖ = 1e4 per component, as IPSVD built them
            m.A.weight.mul_(torch.sqrt(s))
            m.B.weight.div_(torch.sqrt(s)[:, None])
    train, held = _batches(6, seed=1), _batches(2, seed=2)
    settings = Stage2Settings(objective="kl", lr=3e-3, schedule="constant", warmup=0, eval_every=1000, patience=1)

    def objective(model):
        return heldout_objective(target, model, layer_pairs(target, model), train + held, settings)["total"]

    before = objective(proxy)
    report = train_factors(target, proxy, [train] * 4, held, settings)
    assert report.best_step == report.steps == 24
    assert objective(proxy) < 0.7 * before
    free = Stage2Settings(**{**settings.__dict__, "patience": 10**6})
    start_unbalanced = objective(unbalanced)
    torch.testing.assert_close(torch.tensor(start_unbalanced), torch.tensor(before), rtol=1e-4, atol=0)
    for batches in [train] * 4:  # the same steps on the unbalanced factors, without the held-out guard
        train_factors(target, unbalanced, [batches], held[:1], free)
    assert objective(unbalanced) > objective(proxy)


def test_stage2_never_returns_a_proxy_worse_than_stage1_on_the_heldout_rows():
    target = _tiny()
    proxy = copy.deepcopy(target)
    compress(proxy, plan_ranks(proxy, DEFAULT_LINEAR_PATTERNS, 0.6, 4), "svd")
    stage1 = {k: v.clone() for k, v in proxy.state_dict().items()}
    held = _batches(2, seed=2)
    settings = Stage2Settings(objective="kl", lr=5.0, schedule="constant", warmup=0, eval_every=2, patience=2)
    report = train_factors(target, proxy, [_batches(8, seed=1)] * 2, held, settings)
    assert report.best_step == 0 and report.stopped_early and report.steps == 4
    assert all(torch.equal(v, stage1[k]) for k, v in proxy.state_dict().items())
    assert [h["step"] for h in report.heldout] == [0, 2, 4]
    assert all(h["total"] > report.heldout[0]["total"] for h in report.heldout[1:])


def test_learning_rate_schedule():
    assert [lr_factor(s, 10, 0.2, "constant") for s in range(4)] == [0.5, 1.0, 1.0, 1.0]
    cosine = [lr_factor(s, 10, 0.2, "cosine") for s in range(10)]
    assert cosine[1] == 1.0 and cosine[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(x >= y for x, y in zip(cosine[1:], cosine[2:]))
    assert lr_factor(5, 10, 0.0, "linear") == pytest.approx(0.4)


def test_alignment_split_holds_out_rows_and_can_prefer_rows_with_more_trainable_tokens():
    rows = [Encoded(np.arange(20), np.arange(20) < n) for n in range(1, 21)]
    spec = ProxySpec(align_rows=10, align_row_choice="most-trainable", align_holdout_fraction=0.2, align_batch_size=2)
    train, held = alignment_split(rows, spec, seed=0)
    counts = sorted(int(r.trainable.sum()) for r in train + held)
    assert counts == list(range(11, 21)) and len(held) == 2 and len(train) == 8
    again = alignment_split(rows, spec, seed=0)
    assert [id(r) for r in again[1]] == [id(r) for r in held]
    train_r, held_r = alignment_split(rows, ProxySpec(align_holdout_fraction=0.25), seed=1)
    assert len(held_r) == 5 and not {id(r) for r in train_r} & {id(r) for r in held_r}
