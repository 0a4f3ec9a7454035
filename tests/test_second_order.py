"""The second-order pieces against explicit references: weighted gradient, HVP, projection."""

import json

import numpy as np
import torch

from iprox_ray.influence.second_order import kron_project, target_hvp, weighted_gradient
from iprox_ray.models.loading import load_config, random_init
from iprox_ray.models.loss import per_sample_loss
from iprox_ray.sketch.kronecker import KroneckerSketcher

from conftest import ASSETS

MODULE = "model.layers.0.self_attn.q_proj"
NAME = f"{MODULE}.weight"


def _tiny(tmp_path):
    config = json.loads((ASSETS / "model" / "config.json").read_text())
    config.update(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                  num_key_value_heads=1, head_dim=8, vocab_size=64)
    (tmp_path / "config.json").write_text(json.dumps(config))
    return random_init(load_config(tmp_path), seed=2, attn="eager").double()


def _batch(lengths, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(3, 64, (n,), generator=gen)
        mask[i, :n] = 1
    trainable = mask.bool().clone()
    trainable[:, 0] = False
    return ids, mask, trainable


def _loss_of(model, weight, ids, mask, trainable):
    module = model.get_submodule(MODULE)
    old = module.weight
    del module.weight
    module.weight = weight
    try:
        return per_sample_loss(model(input_ids=ids, attention_mask=mask).logits, ids, trainable)
    finally:
        module.weight = old


def test_weighted_gradient_is_the_weighted_sum_of_per_sample_gradients(tmp_path):
    model = _tiny(tmp_path)
    ids, mask, trainable = _batch([5, 9, 7])
    coef = torch.tensor([0.5, -2.0, 1.5], dtype=torch.float64)
    got = weighted_gradient(model, [NAME], [((ids, mask, trainable), coef)])[0]
    w = model.get_submodule(MODULE).weight
    ref = torch.zeros_like(w)
    for i, n in enumerate([5, 9, 7]):
        loss = per_sample_loss(model(input_ids=ids[i : i + 1, :n], attention_mask=mask[i : i + 1, :n]).logits,
                               ids[i : i + 1, :n], trainable[i : i + 1, :n])
        ref += coef[i] * torch.autograd.grad(loss.sum(), w)[0]
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-7)


def test_target_hvp_equals_the_explicit_hessian(tmp_path):
    model = _tiny(tmp_path)
    ids, mask, trainable = _batch([6, 4], seed=1)
    w = model.get_submodule(MODULE).weight.detach().clone()
    v = torch.randn(w.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    got = target_hvp(model, [NAME], [(ids[:1], mask[:1], trainable[:1]), (ids[1:], mask[1:], trainable[1:])], [v], 2)[0]

    def mean_loss(flat):
        return _loss_of(model, flat.view_as(w), ids, mask, trainable).mean()

    hessian = torch.autograd.functional.hessian(mean_loss, w.flatten())
    torch.testing.assert_close(got.double().flatten(), hessian @ v.flatten(), rtol=1e-4, atol=1e-7)


def test_kron_project_matches_the_sketch_of_a_gradient(tmp_path):
    model = _tiny(tmp_path).float()
    ids, mask, trainable = _batch([8], seed=2)
    grad = weighted_gradient(model, [NAME], [((ids, mask, trainable), torch.ones(1))])[0]
    sketcher = KroneckerSketcher(model, [MODULE], k_in=4, k_out=3, seed=7)
    row = sketcher.sketch(ids, mask, trainable).sketch[0].numpy()
    sketcher.close()
    got = kron_project([grad], [[MODULE, 16, 16, 3, 4]], seed=7, kind="gaussian")
    np.testing.assert_allclose(got, row, rtol=1e-4, atol=1e-6)
