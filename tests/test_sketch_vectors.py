"""The vector block (norm weights, norm and linear biases) holds exact per-sample gradients."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from iprox_ray.models.loss import per_sample_loss
from iprox_ray.sketch.factory import make_sketcher, vectors_record
from iprox_ray.sketch.kronecker import KroneckerSketcher
from iprox_ray.sketch.vectors import VectorBlock, vector_project
from iprox_ray.spec import SketchSpec
from iprox_ray.spec.patterns import DEFAULT_VECTOR_PATTERNS
from tests.sketch_reference import kronecker_reference, mixed_batch, patterns_for, per_sample_grads, tiny_model

ARCHS = ["llama", "qwen2", "qwen3", "gemma", "gpt2"]


def exact_vector_grads(model: nn.Module, keys: list[str], ids, attn, trainable) -> torch.Tensor:
    """[B, Σn] per-sample gradients of the named 1-D parameters from a bs=1 loop (no padding)."""
    ref = copy.deepcopy(model)
    params = dict(ref.named_parameters())
    rows = []
    for b in range(ids.shape[0]):
        n = int(attn[b].sum())
        loss = per_sample_loss(ref(input_ids=ids[b : b + 1, :n]).logits, ids[b : b + 1, :n], trainable[b : b + 1, :n])
        grads = torch.autograd.grad(loss.sum(), [params[k] for k in keys], allow_unused=True)
        rows.append(torch.cat([torch.zeros_like(params[k]) if g is None else g for k, g in zip(keys, grads)]))
    return torch.stack(rows)


@pytest.mark.parametrize("arch", ARCHS)
def test_vector_block_is_exact_per_sample_gradient(arch):
    model = tiny_model(arch)
    with torch.no_grad():  # norm weights start at 1 (0 for Gemma's 1+w): make them matter
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    ids, attn, trainable = mixed_batch()
    patterns = patterns_for(arch)

    def block(m, linears):
        return VectorBlock(m, DEFAULT_VECTOR_PATTERNS, linears, True, 0, seed=3)

    sketcher = KroneckerSketcher(copy.deepcopy(model), patterns, k_in=3, k_out=2, seed=7, vectors=block)
    keys = [p.key for p in sketcher.vectors.params]
    norms = [k for k in keys if "norm" in k or ".ln_" in k]
    assert norms, "the default patterns find the norms"
    if arch in ("qwen2", "gpt2"):
        assert any(k.endswith(".bias") and "norm" not in k and ".ln_" not in k for k in keys), "linear biases"
    out = sketcher.sketch(ids, attn, trainable)
    assert out.sketch.shape[1] == sketcher.matrix_dim + sum(p.numel for p in sketcher.vectors.params)
    expected = exact_vector_grads(model, keys, ids, attn, trainable)
    torch.testing.assert_close(out.sketch[:, sketcher.matrix_dim :], expected, rtol=1e-4, atol=1e-6)
    # The linears' columns are untouched by the vector block.
    grads = per_sample_grads(model, patterns, ids, attn, trainable)
    torch.testing.assert_close(out.sketch[:, : sketcher.matrix_dim], kronecker_reference(grads, sketcher.layout, 7),
                               rtol=1e-4, atol=1e-6)


def test_projected_vector_block_preserves_inner_products():
    model = tiny_model("llama")
    ids, attn, trainable = mixed_batch(batch=6)
    spec_exact = SketchSpec(proj_in=2, proj_out=2, vector_dim=0)
    spec_proj = SketchSpec(proj_in=2, proj_out=2, vector_dim=96)
    exact = make_sketcher(copy.deepcopy(model), spec_exact)
    proj = make_sketcher(copy.deepcopy(model), spec_proj)
    total = sum(p.numel for p in exact.vectors.params)
    assert total > 96 and proj.vectors.dim == 96
    assert vectors_record(model, spec_proj)["kind"] == "srht" and vectors_record(model, spec_exact)["dim"] == total
    a = exact.sketch(ids, attn, trainable).sketch[:, exact.matrix_dim :]
    b = proj.sketch(ids, attn, trainable).sketch[:, proj.matrix_dim :]
    # An SRHT block is a linear map: it equals the projection of the exact block, parameter by parameter.
    manual = torch.zeros_like(b)
    for p in exact.vectors.params:
        manual += proj.vectors.projector.project(p.key, a[:, exact.vectors.offsets[p.key]])
    torch.testing.assert_close(b, manual, rtol=1e-4, atol=1e-6)
    # and its inner products are those of the exact block up to JL error (k = 96)
    gram_a, gram_b = a @ a.T, b @ b.T
    scale = torch.outer(a.norm(dim=1), a.norm(dim=1))
    assert ((gram_a - gram_b).abs() / scale).max() < 6 / 96**0.5


def test_vectors_can_be_left_out():
    model = tiny_model("llama")
    sketcher = make_sketcher(copy.deepcopy(model), SketchSpec(proj_in=2, proj_out=2, vectors=[], biases=False))
    assert sketcher.vectors is None and sketcher.dim == sketcher.matrix_dim


@pytest.mark.parametrize("vector_dim", [0, 96])
def test_vector_project_maps_weight_space_vectors_like_the_sketch(vector_dim):
    """The second-order term projects weight-space vectors with `vector_project`: it must be the
    map the sketcher applies to per-sample gradients."""
    model = tiny_model("llama")
    ids, attn, trainable = mixed_batch(batch=2)
    spec = SketchSpec(proj_in=2, proj_out=2, vector_dim=vector_dim)
    sketcher = make_sketcher(copy.deepcopy(model), spec)
    got = sketcher.sketch(ids, attn, trainable).sketch[:, sketcher.matrix_dim :].numpy()
    keys = [p.key for p in sketcher.vectors.params]
    exact = exact_vector_grads(model, keys, ids, attn, trainable)
    record = vectors_record(model, spec)
    sizes = [n for _, n in record["params"]]
    for b in range(2):
        np.testing.assert_allclose(vector_project(list(exact[b].split(sizes)), record), got[b], rtol=1e-4, atol=1e-6)


def _projected_inner_products(x, y, sizes, dim, seeds):
    """<P x, P y> of the vector block's projection (vector_project) over seeds; x, y: lists of parts."""
    params = [[f"model.layers.{i}.norm.weight", n] for i, n in enumerate(sizes)]
    out = []
    for seed in seeds:
        record = {"params": params, "dim": dim, "kind": "srht", "seed": seed}
        out.append(float(np.dot(vector_project(x, record), vector_project(y, record))))
    return np.asarray(out)


def test_projected_vector_block_is_unbiased_and_its_error_shrinks_as_one_over_sqrt_dim():
    """Many small parameters (norm vectors) projected to a wider block: every parameter must land
    in its own random directions. Padding each into one shared k-block (the old SRHT) put them all
    in the same 64-dimensional subspace: the error then stayed flat as the block grew."""
    g = torch.Generator().manual_seed(0)
    sizes = [64] * 40
    x = [torch.randn(n, generator=g) for n in sizes]
    y = [0.3 * a + torch.randn(a.shape, generator=g) for a in x]
    exact = float(sum((a * b).sum() for a, b in zip(x, y)))
    scale = float(torch.cat(x).norm() * torch.cat(y).norm())
    seeds = range(120)
    errors = {}
    for dim in (256, 4096):
        est = _projected_inner_products(x, y, sizes, dim, seeds)
        err = est - exact
        assert abs(err.mean()) < 4 * err.std() / np.sqrt(len(err)) + 1e-6 * scale  # unbiased
        errors[dim] = np.sqrt(np.mean(err**2)) / scale
    ratio = errors[256] / errors[4096]
    assert 2.8 < ratio < 5.5, (errors, ratio)  # 1/sqrt(dim): sqrt(16) = 4
    assert errors[4096] < 2.0 / np.sqrt(4096)
