"""Exact per-example gradients and exact LESS scores against independent autograd references."""

import copy

import numpy as np
import torch

from iprox_ray.influence.exact import ExactGradients, ExactLess, trained_parameters
from iprox_ray.models.loss import per_sample_loss
from tests.sketch_reference import mixed_batch, tiny_model


def reference_gradient(model, ids, trainable) -> dict[str, torch.Tensor]:
    ref = copy.deepcopy(model)
    loss = per_sample_loss(ref(input_ids=ids[None]).logits, ids[None], trainable[None]).sum()
    names = [n for n, _ in trained_parameters(ref)]
    params = dict(ref.named_parameters())
    return dict(zip(names, torch.autograd.grad(loss, [params[n] for n in names])))


def rows_of(batch):
    ids, attn, trainable = batch
    return [(ids[b, : int(attn[b].sum())], trainable[b, : int(attn[b].sum())]) for b in range(ids.shape[0])]


def test_trained_parameters_leave_out_embedding_and_head():
    model = tiny_model("qwen2")
    names = [n for n, _ in trained_parameters(model)]
    assert not any("embed_tokens" in n or "lm_head" in n for n in names)
    assert any(n.endswith("input_layernorm.weight") for n in names) and any(n.endswith("q_proj.bias") for n in names)


def test_row_gradient_is_exact_and_buffers_are_reused():
    model = tiny_model("llama")
    grads = ExactGradients(copy.deepcopy(model))
    rows = rows_of(mixed_batch())
    for ids, trainable in rows[:3]:
        flat, _ = grads.row(ids.numpy(), trainable.numpy())
        expected = reference_gradient(model, ids, trainable)
        for name, g in expected.items():
            torch.testing.assert_close(flat[grads.spans[name]].view_as(g), g, rtol=1e-5, atol=1e-7)
    assert flat.data_ptr() == grads.flat.data_ptr()


def test_exact_less_matches_dense_cosines_per_subset():
    model = tiny_model("llama")
    grads = ExactGradients(copy.deepcopy(model))
    pool, target = rows_of(mixed_batch(seed=1)), rows_of(mixed_batch(seed=2))
    names = [n for n, _ in trained_parameters(model)]
    subsets = {"all": names, "linears": [n for n in names if n.endswith("proj.weight")]}
    less = ExactLess(grads, subsets)
    assert less.fit_target((i.numpy(), t.numpy()) for i, t in target) == len(target)

    def flat(row, keep):
        g = reference_gradient(model, *row)
        return torch.cat([g[n].flatten() for n in keep]).double().numpy()

    for label, keep in subsets.items():
        units = [flat(r, keep) / np.linalg.norm(flat(r, keep)) for r in target]
        direction = np.mean(units, axis=0)
        for row in pool:
            got, _ = less.score(row[0].numpy(), row[1].numpy())
            g = flat(row, keep)
            np.testing.assert_allclose(got[label], g @ direction / np.linalg.norm(g), rtol=1e-4, atol=1e-6)
