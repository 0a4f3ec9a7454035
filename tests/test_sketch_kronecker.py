import copy

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from iprox_ray.sketch.kronecker import KroneckerSketcher
from iprox_ray.sketch.projection import projection_matrix
from tests.sketch_reference import kronecker_reference, per_sample_grads

PATTERNS = [r"re:.*\.(q_proj|o_proj|up_proj|down_proj)$"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=120, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2)
    return AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").eval()


def _batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 120, (4, 14), generator=g)
    attn = torch.ones(4, 14, dtype=torch.long)
    attn[1, 9:] = 0
    attn[3, 5:] = 0
    trainable = attn.bool().clone()
    trainable[:, :4] = False
    return ids, attn, trainable


def test_factored_sketch_equals_projected_exact_gradient(model):
    ids, attn, trainable = _batch()
    sketcher = KroneckerSketcher(copy.deepcopy(model), PATTERNS, k_in=5, k_out=3, seed=7)
    out = sketcher.sketch(ids, attn, trainable)
    expected = kronecker_reference(per_sample_grads(model, PATTERNS, ids, attn, trainable), sketcher.layout, 7)
    assert out.sketch.shape == (4, sketcher.dim) == (4, 8 * 15)
    torch.testing.assert_close(out.sketch, expected, rtol=1e-4, atol=1e-6)
    assert out.finite.all()


def test_sketch_of_a_sample_alone_equals_its_row_in_a_padded_batch(model):
    ids, attn, trainable = _batch()
    sketcher = KroneckerSketcher(copy.deepcopy(model), PATTERNS, k_in=4, k_out=4, seed=3)
    batch = sketcher.sketch(ids, attn, trainable).sketch
    for b in range(4):
        n = int(attn[b].sum())
        alone = sketcher.sketch(ids[b : b + 1, :n], attn[b : b + 1, :n], trainable[b : b + 1, :n]).sketch
        torch.testing.assert_close(alone[0], batch[b], rtol=1e-4, atol=1e-6)


def test_projections_are_deterministic_per_seed_and_name():
    a = projection_matrix(1, "layers.0.q_proj", "in", 8, 32)
    assert torch.equal(a, projection_matrix(1, "layers.0.q_proj", "in", 8, 32))
    assert not torch.equal(a, projection_matrix(2, "layers.0.q_proj", "in", 8, 32))
    assert not torch.equal(a, projection_matrix(1, "layers.1.q_proj", "in", 8, 32))
    r = projection_matrix(1, "x", "in", 16, 64, "rademacher")
    assert torch.allclose(r.abs(), torch.full_like(r, 0.25))


def test_nonfinite_sample_is_flagged_not_hidden(model):
    ids, attn, trainable = _batch()
    broken = copy.deepcopy(model)
    sketcher = KroneckerSketcher(broken, PATTERNS, k_in=4, k_out=4, seed=3)
    with torch.no_grad():
        broken.get_input_embeddings().weight[ids[2, 0]] = float("nan")
    out = sketcher.sketch(ids, attn, trainable)
    assert not out.finite[2]
    poisoned = {b for b in range(4) if ids[2, 0] in ids[b, : int(attn[b].sum())]}
    assert set(torch.nonzero(~out.finite).flatten().tolist()) == poisoned


def _svd_proxy_of(model):
    from iprox_ray.proxy.compress import compress, plan_ranks

    proxy = copy.deepcopy(model)
    compress(proxy, plan_ranks(proxy, PATTERNS, rho=0.5, multiple=2), "svd")
    return proxy


def test_lowrank_product_sketch_is_the_dense_layers_gradient_sketch(model):
    """A proxy's A·B is sketched as one layer: exactly the sketch of ∂L/∂W at W = A·B, with the
    dense layer's own projection, so proxy and target sketches share one space."""
    ids, attn, trainable = _batch()
    proxy = _svd_proxy_of(model)
    from iprox_ray.models.lowrank import densify

    dense = densify(copy.deepcopy(proxy))
    got = KroneckerSketcher(copy.deepcopy(proxy), PATTERNS, k_in=5, k_out=3, seed=7)
    want = KroneckerSketcher(dense, PATTERNS, k_in=5, k_out=3, seed=7)
    assert [m.name for m in got.layout] == [m.name for m in want.layout]
    assert got.dim == want.dim == 8 * 15
    torch.testing.assert_close(got.sketch(ids, attn, trainable).sketch, want.sketch(ids, attn, trainable).sketch,
                               rtol=1e-4, atol=1e-6)


def test_lowrank_factors_mode_sketches_each_factor(model):
    ids, attn, trainable = _batch()
    proxy = _svd_proxy_of(model)
    sketcher = KroneckerSketcher(copy.deepcopy(proxy), PATTERNS, k_in=5, k_out=3, seed=7, expand_lowrank=True)
    assert [m.name.rsplit(".", 1)[-1] for m in sketcher.layout][:2] == ["A", "B"]
    out = sketcher.sketch(ids, attn, trainable)
    expected = kronecker_reference(per_sample_grads(proxy, [r"re:.*\.(A|B)$"], ids, attn, trainable),
                                   sketcher.layout, 7)
    torch.testing.assert_close(out.sketch, expected, rtol=1e-4, atol=1e-6)


def test_reprojected_sketch_is_the_products_srht_of_the_kronecker_block(model):
    """sketch.reproject_dim: one SRHT of the whole linears' block; the vector block stays after it."""
    from iprox_ray.sketch.capture import REPROJECT_NAME
    from iprox_ray.sketch.dense_projection import DenseProjector
    from iprox_ray.sketch.factory import make_sketcher, sketch_dim, vectors_record
    from iprox_ray.spec import SketchSpec

    ids, attn, trainable = _batch()
    plain = make_sketcher(copy.deepcopy(model), SketchSpec(modules=PATTERNS, proj_in=4, proj_out=4, seed=3))
    spec = SketchSpec(modules=PATTERNS, proj_in=4, proj_out=4, seed=3, reproject_dim=64)
    reprojected = make_sketcher(copy.deepcopy(model), spec)
    full, small = plain.sketch(ids, attn, trainable).sketch, reprojected.sketch(ids, attn, trainable).sketch
    block = plain.matrix_dim
    expected = DenseProjector(3, 64, "srht").project(REPROJECT_NAME, full[:, :block])
    assert small.shape == (4, 64 + full.shape[1] - block) == (4, reprojected.dim)
    torch.testing.assert_close(small[:, :64], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(small[:, 64:], full[:, block:])
    assert reprojected.dim == sketch_dim(spec, len(reprojected.modules), vectors_record(model, spec))
    # an SRHT is unbiased for inner products: the Gram matrix of the block survives, roughly
    g_full, g_small = full[:, :block] @ full[:, :block].T, small[:, :64] @ small[:, :64].T
    assert torch.linalg.norm(g_small - g_full) < 0.5 * torch.linalg.norm(g_full)
