"""IProX proxies: published sizes, stage-2 alignment, artifacts, baselines."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, GPT2Config, LlamaConfig

from iprox_ray.models.loading import count_parameters, meta_model
from iprox_ray.proxy.align import alignment_loss, factor_parameters, layer_pairs
from iprox_ray.proxy.artifact import load_proxy, save_proxy
from iprox_ray.proxy.baselines import extract_layers, find_decoder_layers, layers_to_keep
from iprox_ray.proxy.compress import apply_plan, compress, plan_ranks
from iprox_ray.proxy.stage2 import Stage2Settings, train_factors
from iprox_ray.spec.patterns import DEFAULT_LINEAR_PATTERNS

CONFIGS = Path(__file__).parent / "fixtures" / "configs"


@pytest.mark.parametrize("config,rho,billions", [
    ("qwen3-4b.json", 0.7, 1.55),
    ("qwen3-4b.json", 0.3, 3.11),
    ("llama-3.2-3b.json", 0.3, 2.51),
])
def test_rank_rule_reproduces_the_published_proxy_sizes(config, rho, billions):
    model = meta_model(AutoConfig.from_pretrained(str(CONFIGS / config)))
    plans = plan_ranks(model, DEFAULT_LINEAR_PATTERNS, rho, 128)
    apply_plan(model, plans)
    # Tied embeddings are one tensor: count unique parameters.
    assert count_parameters(model) / 1e9 == pytest.approx(billions, abs=0.005)


def _tiny(seed=0):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=150, hidden_size=48, intermediate_size=96, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2)
    return AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa").eval()


def _batches(n=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(0, 150, (3, 16), generator=g)
        attn = torch.ones_like(ids)
        attn[1, 11:] = 0
        trainable = attn.bool().clone()
        trainable[:, :5] = False
        out.append((ids, attn, trainable))
    return out


def _svd_proxy(target):
    proxy = copy.deepcopy(target)
    plans = plan_ranks(proxy, DEFAULT_LINEAR_PATTERNS, 0.6, 4)
    compress(proxy, plans, "svd")
    return proxy, plans


@pytest.mark.parametrize("objective", ["factors", "product", "kl"])
def test_stage2_lowers_alignment_loss_and_changes_only_factors(objective):
    target = _tiny()
    proxy, _ = _svd_proxy(target)
    batches = _batches()
    pairs = layer_pairs(target, proxy)
    before_state = {k: v.clone() for k, v in proxy.state_dict().items()}
    target_state = {k: v.clone() for k, v in target.state_dict().items()}

    def mean_ga():  # the term the objective optimises: L_GA, or L_KL for "kl"
        term = 2 if objective == "kl" else 1
        return sum(alignment_loss(target, proxy, pairs, b, 0.0, 2.0, objective)[term].item()
                   for b in batches) / len(batches)

    start = mean_ga()
    settings = Stage2Settings(objective=objective, lr=2e-3, lambda_kl=0.1, schedule="constant", warmup=0,
                              eval_every=100)
    report = train_factors(target, proxy, [batches] * 6, batches[:1], settings)
    assert report.steps == 24
    assert mean_ga() < 0.8 * start
    changed = {k for k, v in proxy.state_dict().items() if not torch.equal(v, before_state[k])}
    assert changed and all(k.endswith((".A.weight", ".B.weight")) for k in changed)
    assert all(torch.equal(v, target_state[k]) for k, v in target.state_dict().items())


@pytest.mark.parametrize("objective", ["factors", "product"])
def test_alignment_gradient_flows_through_the_mapped_targets(objective):
    """A and B inside G_t·Bᵀ and Aᵀ·G_t are not detached (docs/methods.md §2); the product's
    gradient reaches both factors through δ' and h'. The autograd gradient must match a central
    difference of the loss: a detached mapped target drops a term (~25 % of this directional
    derivative), a finite non-zero gradient alone would not notice."""
    target = _tiny().double()
    proxy, _ = _svd_proxy(target)
    pairs = layer_pairs(target, proxy)
    batch = _batches(1)[0]
    params = factor_parameters(proxy)
    total, _, _ = alignment_loss(target, proxy, pairs, batch, 0.0, 2.0, objective)
    grads = torch.autograd.grad(total, params)
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)
    g = torch.Generator().manual_seed(3)
    direction = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params]
    norm = torch.sqrt(sum((d**2).sum() for d in direction))
    direction = [d / norm for d in direction]
    predicted = sum((gr * d).sum() for gr, d in zip(grads, direction)).item()
    eps, values = 1e-2, []
    for sign in (1, -1):
        with torch.no_grad():
            for p, d in zip(params, direction):
                p.add_(sign * eps * d)
        values.append(alignment_loss(target, proxy, pairs, batch, 0.0, 2.0, objective)[0].item())
        with torch.no_grad():
            for p, d in zip(params, direction):
                p.sub_(sign * eps * d)
    assert predicted == pytest.approx((values[0] - values[1]) / (2 * eps), rel=0.02)


def test_product_gap_is_zero_when_the_proxy_is_the_target():
    """A full-rank factorisation computes the target's function: its product gradient is G_t."""
    target = _tiny()
    proxy = copy.deepcopy(target)
    from iprox_ray.models.lowrank import LowRankLinear
    from iprox_ray.models.patterns import select_modules
    from iprox_ray.proxy.compress import replace_module

    for name, m in select_modules(proxy, DEFAULT_LINEAR_PATTERNS):
        replace_module(proxy, name,
                       LowRankLinear.from_factors(m.weight.detach().clone(), torch.eye(m.in_features), None))
    pairs = layer_pairs(target, proxy)
    _, gap, _ = alignment_loss(target, proxy, pairs, _batches(1)[0], 0.0, 2.0, "product")
    assert gap.item() == pytest.approx(0.0, abs=1e-5)


def test_kl_term_is_zero_for_identical_models_and_positive_otherwise():
    from iprox_ray.proxy.align import kl_loss

    logits = torch.randn(2, 6, 150)
    trainable = torch.ones(2, 6, dtype=torch.bool)
    assert kl_loss(logits, logits, trainable, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    assert kl_loss(logits, logits + torch.randn_like(logits), trainable, 2.0).item() > 0


def test_saved_proxy_loads_bitwise_and_computes_the_same(tmp_path):
    target = _tiny()
    proxy, plans = _svd_proxy(target)
    train_factors(target, proxy, [_batches(2)], _batches(1, seed=5), Stage2Settings(lr=1e-3))
    save_proxy(proxy, tmp_path / "p", plans, {"method": "svd"})
    loaded = load_proxy(tmp_path / "p")
    for (k, v), (k2, v2) in zip(proxy.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    ids, attn, _ = _batches(1)[0]
    with torch.no_grad():
        assert torch.equal(proxy(input_ids=ids, attention_mask=attn).logits,
                           loaded(input_ids=ids, attention_mask=attn).logits)
    manifest = json.loads((tmp_path / "p" / "proxy.json").read_text())
    assert [layer["rank"] for layer in manifest["layers"]] == [p.rank for p in plans]


def test_layers_to_keep_takes_the_first_of_every_block():
    assert layers_to_keep(28, 0.3) == [0, 2, 4, 6, 8, 10, 12, 14] + list(range(16, 28))  # 20 = round(0.7·28) blocks
    assert layers_to_keep(4, 0.5) == [0, 2]
    assert layers_to_keep(3, 0.9) == [0]


@pytest.mark.parametrize("make_config", [
    lambda: LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                        num_attention_heads=4, num_key_value_heads=2),
    lambda: GPT2Config(vocab_size=100, n_embd=32, n_layer=4, n_head=4, n_positions=64),
])
def test_layer_extraction_builds_a_working_shallower_model(tmp_path, make_config):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(make_config()).eval()
    original = dict(model.state_dict())
    name, layers = find_decoder_layers(model)
    extract_layers(model, [0, 2])
    assert model.config.num_hidden_layers == 2 and len(model.get_submodule(name)) == 2
    kept = model.get_submodule(name)[1]
    assert all(torch.equal(v, original[f"{name}.2.{k}"]) for k, v in kept.state_dict().items())
    ids = torch.randint(0, 100, (2, 9))
    logits = model(input_ids=ids).logits
    assert logits.shape == (2, 9, 100) and torch.isfinite(logits).all()
    save_proxy(model, tmp_path / "le", [], {"method": "layer_extraction", "kept_layers": [0, 2]})
    loaded = load_proxy(tmp_path / "le", attn="eager")
    assert torch.allclose(loaded(input_ids=ids).logits, logits, atol=1e-6)


def test_gpt2_conv1d_layers_are_factored_and_aligned():
    torch.manual_seed(0)
    target = AutoModelForCausalLM.from_config(
        GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=64)).eval()
    proxy = copy.deepcopy(target)
    plans = plan_ranks(proxy, ["re:.*\\.(c_attn|c_proj|c_fc)$"], 0.5, 4)
    compress(proxy, plans, "svd")
    assert sum(1 for p in plans if p.rank) == len(plans) == 8
    ids = torch.randint(0, 100, (2, 10))
    batch = (ids, torch.ones_like(ids), torch.ones_like(ids, dtype=torch.bool))
    report = train_factors(target, proxy, [[batch] * 3], [batch], Stage2Settings(objective="factors", lr=1e-3))
    assert report.steps == 3 and all(torch.isfinite(torch.tensor(s["ga"])) for s in report.history)


def test_off_the_shelf_proxy_must_read_the_targets_tokens(make_job, tmp_path):
    from transformers import LlamaConfig

    from iprox_ray.driver.pipeline import build_models
    from iprox_ray.driver.run import Run
    from iprox_ray.driver.rundir import open_run
    from iprox_ray.spec import load_job

    small = tmp_path / "small"
    LlamaConfig(vocab_size=4096, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                num_attention_heads=4, num_key_value_heads=2).save_pretrained(small)
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(small)).save_pretrained(small)
    job = load_job(make_job(), ['proxy.method="model"', f'proxy.model_path="{small}"'])
    with open_run(job, tmp_path / "run", quiet=True) as ctx:
        _, ref = build_models(Run(ctx))
    assert ref.kind == "hf" and ref.path == small
    LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                num_attention_heads=4, num_key_value_heads=2).save_pretrained(small)
    with pytest.raises(ValueError, match="vocab 100"):
        with open_run(job, tmp_path / "run2", quiet=True) as ctx:
            build_models(Run(ctx))


def test_model_path_goes_with_method_model(make_job):
    from iprox_ray.spec import SpecError, load_job

    with pytest.raises(SpecError, match="model_path is required"):
        load_job(make_job(), ['proxy.method="model"'])
