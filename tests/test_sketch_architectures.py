"""Sketches equal projections of exact per-sample gradients, on every supported architecture."""

import copy

import pytest
import torch

from iprox_ray.models.loss import gathered_loss, per_sample_loss
from iprox_ray.sketch.dense import DenseSketcher
from iprox_ray.sketch.kronecker import KroneckerSketcher
from tests.sketch_reference import (
    dense_reference,
    kronecker_reference,
    mixed_batch,
    patterns_for,
    per_sample_grads,
    tiny_model,
    vmap_grads,
)

ARCHS = ["llama", "qwen2", "qwen3", "gemma", "mistral", "gpt2"]


@pytest.fixture(scope="module", params=ARCHS)
def arch_model(request):
    return request.param, tiny_model(request.param)


def test_kronecker_sketch_equals_projected_exact_gradient(arch_model):
    arch, model = arch_model
    ids, attn, trainable = mixed_batch()
    grads = per_sample_grads(model, patterns_for(arch), ids, attn, trainable)
    sketcher = KroneckerSketcher(copy.deepcopy(model), patterns_for(arch), k_in=5, k_out=3, seed=7)
    out = sketcher.sketch(ids, attn, trainable)
    assert out.sketch.shape == (4, 15 * len(sketcher.layout))
    torch.testing.assert_close(out.sketch, kronecker_reference(grads, sketcher.layout, 7), rtol=1e-4, atol=1e-6)
    assert out.finite.all()


@pytest.mark.parametrize("kind", ["srht", "rademacher"])
def test_dense_sketch_equals_projected_exact_gradient(arch_model, kind):
    arch, model = arch_model
    ids, attn, trainable = mixed_batch()
    grads = per_sample_grads(model, patterns_for(arch), ids, attn, trainable)
    sketcher = DenseSketcher(copy.deepcopy(model), patterns_for(arch), dim=64, seed=3, kind=kind, mask_fraction=0.5)
    out = sketcher.sketch(ids, attn, trainable)
    torch.testing.assert_close(out.sketch, dense_reference(grads, sketcher), rtol=1e-4, atol=1e-6)


def test_hook_gradients_match_vmap_grad():
    model = tiny_model("llama")
    ids, attn, trainable = mixed_batch()
    patterns = patterns_for("llama")
    reference = vmap_grads(model, patterns, ids, attn, trainable)
    sketcher = DenseSketcher(copy.deepcopy(model), patterns, dim=32, seed=0)
    captured = []
    original = sketcher.per_sample_gradient
    sketcher.per_sample_gradient = lambda x, g: captured.append(original(x, g)) or captured[-1]
    sketcher.sketch(ids, attn, trainable)
    # Backward visits modules in reverse order: pair them by name through the call order.
    names = [n for n, _ in reversed(sketcher.modules)]
    for name, grad in zip(names, captured):
        expected = torch.stack([r[name] for r in reference])
        torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kind", ["kronecker", "srht"])
def test_a_sample_alone_equals_its_row_in_a_mixed_batch(kind):
    model = tiny_model("qwen2", attn="sdpa")
    ids, attn, trainable = mixed_batch(batch=5, width=16)
    if kind == "kronecker":
        sketcher = KroneckerSketcher(model, patterns_for("qwen2"), k_in=4, k_out=4, seed=3)
    else:
        sketcher = DenseSketcher(model, patterns_for("qwen2"), dim=48, seed=3)
    batch = sketcher.sketch(ids, attn, trainable).sketch
    for order in ([4, 0, 2], [1, 3]):  # other batch compositions, other padding widths
        sub = sketcher.sketch(ids[order], attn[order], trainable[order]).sketch
        torch.testing.assert_close(sub, batch[order], rtol=1e-4, atol=1e-6)
    for b in range(5):
        n = int(attn[b].sum())
        alone = sketcher.sketch(ids[b : b + 1, :n], attn[b : b + 1, :n], trainable[b : b + 1, :n]).sketch
        torch.testing.assert_close(alone[0], batch[b], rtol=1e-4, atol=1e-6)


def test_gathered_loss_equals_full_loss():
    torch.manual_seed(0)
    ids, attn, trainable = mixed_batch()
    logits = torch.randn(*ids.shape, 120)
    trainable = trainable & attn.bool()
    keep = torch.zeros_like(trainable)
    keep[:, :-1] = trainable[:, 1:]
    expected = per_sample_loss(logits, ids, trainable)
    torch.testing.assert_close(gathered_loss(logits, ids, keep, gathered=False), expected)
    torch.testing.assert_close(gathered_loss(logits[keep][None], ids, keep, gathered=True), expected)


def related_rows(n: int = 12, width: int = 20, seed: int = 4):
    """Rows from three templates with a quarter of the tokens resampled: like real data, samples
    share structure (i.i.d. random tokens on a random model give near-orthogonal gradients)."""
    g = torch.Generator().manual_seed(seed)
    templates = torch.randint(0, 120, (3, width), generator=g)
    ids = templates[torch.arange(n) % 3].clone()
    flip = torch.rand(n, width, generator=g) < 0.25
    ids[flip] = torch.randint(0, 120, (int(flip.sum()),), generator=g)
    attn = torch.ones(n, width, dtype=torch.long)
    attn[1::2, width - 6 :] = 0
    trainable = attn.bool().clone()
    trainable[:, :3] = False
    return ids, attn, trainable


@pytest.mark.parametrize("kind", ["srht", "kronecker"])
def test_sketched_inner_products_track_exact_ones_at_k4096(kind):
    model = tiny_model("llama", seed=5)
    ids, attn, trainable = related_rows()
    patterns = patterns_for("llama")
    grads = per_sample_grads(model, patterns, ids, attn, trainable)
    exact = torch.stack([torch.cat([g.flatten() for g in s.values()]) for s in grads])
    iu = torch.triu_indices(12, 12, 1)  # distinct pairs only: norms alone would flatter
    exact_ip = (exact @ exact.T)[iu[0], iu[1]]
    if kind == "srht":  # k = 4096 in total
        sketcher = DenseSketcher(copy.deepcopy(model), patterns, dim=4096, seed=1)
    else:  # k = 64 x 64 = 4096 per module
        sketcher = KroneckerSketcher(copy.deepcopy(model), patterns, k_in=64, k_out=64, seed=1)
    sketch = sketcher.sketch(ids, attn, trainable).sketch
    approx = (sketch @ sketch.T)[iu[0], iu[1]]
    corr = torch.corrcoef(torch.stack([exact_ip, approx]))[0, 1]
    assert corr >= 0.95, float(corr)


def test_nonfinite_rows_are_flagged_on_the_dense_path():
    model = tiny_model("llama")
    ids, attn, trainable = mixed_batch()
    sketcher = DenseSketcher(model, patterns_for("llama"), dim=16, seed=0)
    with torch.no_grad():
        model.get_input_embeddings().weight[ids[2, 0]] = float("inf")
    out = sketcher.sketch(ids, attn, trainable)
    poisoned = {b for b in range(4) if ids[2, 0] in ids[b, : int(attn[b].sum())]}
    assert set(torch.nonzero(~out.finite).flatten().tolist()) == poisoned


def test_bf16_autocast_is_close_to_fp32_and_off_by_default_on_cpu():
    model = tiny_model("llama", attn="sdpa")
    ids, attn, trainable = mixed_batch()
    fp32 = KroneckerSketcher(copy.deepcopy(model), patterns_for("llama"), 4, 4, seed=0)
    assert fp32.autocast is None  # 'auto' on CPU: fp32
    bf16 = KroneckerSketcher(copy.deepcopy(model), patterns_for("llama"), 4, 4, seed=0, autocast="bf16")
    assert bf16.autocast == torch.bfloat16
    a, b = fp32.sketch(ids, attn, trainable).sketch, bf16.sketch(ids, attn, trainable).sketch
    assert b.dtype == torch.float32  # projections are kept fp32 under bf16 autocast
    assert torch.nn.functional.cosine_similarity(a, b).min() > 0.95
