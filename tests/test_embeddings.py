"""JVP and pooled embeddings: reference values, batch/padding invariance, architecture coverage."""

import json

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch.func import functional_call, jvp

from iprox_ray.models.loading import load_config, random_init
from iprox_ray.sketch.jvp import JvpEmbedder, gaussian_tangent
from iprox_ray.sketch.pooled import PooledEmbedder
from iprox_ray.sketch.softmax_jvp import CheapSoftmaxJvp
from iprox_ray.spec.scoring import DEFAULT_BLOCK_PATTERNS, DEFAULT_FINAL_NORM_PATTERNS

from conftest import ASSETS


def _llama(tmp_path, layers=3):
    config = json.loads((ASSETS / "model" / "config.json").read_text())
    config.update(hidden_size=32, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=8)
    (tmp_path / "config.json").write_text(json.dumps(config))
    return random_init(load_config(tmp_path), seed=1, attn="eager")


def _batch(lengths, vocab=4096, seed=0):
    gen = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(3, vocab, (n,), generator=gen)
        mask[i, :n] = 1
    return ids, mask


def test_jvp_matches_torch_func_reference(tmp_path):
    model = _llama(tmp_path)
    emb = JvpEmbedder(model, DEFAULT_BLOCK_PATTERNS, n_blocks=2, n_tangents=2, dim=24, seed=5)
    assert [n for n, _ in emb.blocks] == ["model.layers.0", "model.layers.1"]
    ids, mask = _batch([7, 11, 4])
    got = emb.block_output_tangents(ids, mask)
    projected = emb.embed(ids, mask)
    emb.close()
    params = {n: p.detach() for n, p in model.named_parameters()
              if n.startswith(("model.layers.0.", "model.layers.1."))}

    def block2(p):  # hidden_states[2] is the output of the second block
        out = functional_call(model, p, (), {"input_ids": ids, "attention_mask": mask, "output_hidden_states": True},
                              strict=False)
        return out.hidden_states[2]

    last = mask.sum(1) - 1
    ref = []
    for j in range(2):
        tangent = {n: gaussian_tangent(5, n, j, p) for n, p in params.items()}
        _, t = jvp(block2, (params,), (tangent,))
        ref.append(t[torch.arange(3), last])
    torch.testing.assert_close(got, torch.cat(ref, 1), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(projected, got @ emb.projection.T)
    assert projected.shape == (3, 24)


def test_jvp_mean_readout_through_the_final_norm_matches_torch_func(tmp_path):
    model = _llama(tmp_path)
    emb = JvpEmbedder(model, DEFAULT_BLOCK_PATTERNS, n_blocks=2, n_tangents=2, dim=24, seed=3, readout="mean",
                      norm_patterns=DEFAULT_FINAL_NORM_PATTERNS)
    assert emb.norm is model.model.norm  # found by pattern, not by attribute path
    ids, mask = _batch([7, 11, 4], seed=2)
    got = emb.block_output_tangents(ids, mask)
    params = {n: p.detach() for n, p in model.named_parameters()
              if n.startswith(("model.layers.0.", "model.layers.1."))}

    def normed_block2(p):
        out = functional_call(model, p, (), {"input_ids": ids, "attention_mask": mask, "output_hidden_states": True},
                              strict=False)
        return model.model.norm(out.hidden_states[2])

    weights = mask.float() / mask.sum(1, keepdim=True)
    ref = []
    for j in range(2):
        _, t = jvp(normed_block2, (params,), ({n: gaussian_tangent(3, n, j, p) for n, p in params.items()},))
        ref.append((t * weights[..., None]).sum(1))
    torch.testing.assert_close(got, torch.cat(ref, 1), rtol=1e-4, atol=1e-5)
    raw = JvpEmbedder(model, DEFAULT_BLOCK_PATTERNS, 2, 2, 24, seed=3, readout="mean").block_output_tangents(ids, mask)
    assert not torch.allclose(raw, got)  # the norm changes the embedding


def test_jvp_final_norm_must_match_one_module_outside_the_blocks(tmp_path):
    from transformers import GPT2Config

    gpt2 = random_init(GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=100, n_positions=64), seed=0, attn="eager")
    assert JvpEmbedder(gpt2, DEFAULT_BLOCK_PATTERNS, 1, 1, 8, 0, norm_patterns=DEFAULT_FINAL_NORM_PATTERNS).norm \
        is gpt2.transformer.ln_f
    with pytest.raises(ValueError, match="must match one module"):
        JvpEmbedder(_llama(tmp_path), DEFAULT_BLOCK_PATTERNS, 1, 1, 8, 0, norm_patterns=["*.final_ln"])
    with pytest.raises(ValueError, match="readout"):
        JvpEmbedder(gpt2, DEFAULT_BLOCK_PATTERNS, 1, 1, 8, 0, readout="first")


@pytest.mark.parametrize("readout", ["last", "mean"])
def test_jvp_row_alone_equals_its_row_in_a_padded_batch(tmp_path, readout):
    model = _llama(tmp_path)
    emb = JvpEmbedder(model, DEFAULT_BLOCK_PATTERNS, n_blocks=4, n_tangents=2, dim=16, seed=0, readout=readout,
                      norm_patterns=DEFAULT_FINAL_NORM_PATTERNS)
    assert len(emb.blocks) == 3  # capped at the model's depth
    ids, mask = _batch([5, 13, 9], seed=3)
    batch = emb.embed(ids, mask)
    for i, n in enumerate([5, 13, 9]):
        alone = emb.embed(ids[i : i + 1, :n], mask[i : i + 1, :n])
        torch.testing.assert_close(alone[0], batch[i], rtol=1e-4, atol=1e-5)


def test_jvp_is_deterministic_across_instances_and_seeded(tmp_path):
    model = _llama(tmp_path)
    ids, mask = _batch([6, 8])
    a = JvpEmbedder(model, DEFAULT_BLOCK_PATTERNS, 1, 2, 8, seed=0)
    first = a.embed(ids, mask)
    a.close()
    b = JvpEmbedder(model, DEFAULT_BLOCK_PATTERNS, 1, 2, 8, seed=0)
    torch.testing.assert_close(b.embed(ids, mask), first, rtol=0, atol=0)
    b.close()
    c = JvpEmbedder(model, DEFAULT_BLOCK_PATTERNS, 1, 2, 8, seed=1)
    assert not torch.allclose(c.embed(ids, mask), first)


def test_jvp_on_gpt2_blocks_found_by_pattern():
    from transformers import GPT2Config

    model = random_init(GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=100, n_positions=64), seed=0,
                        attn="eager")
    emb = JvpEmbedder(model, DEFAULT_BLOCK_PATTERNS, 1, 2, 12, seed=0)
    assert [n for n, _ in emb.blocks] == ["transformer.h.0"]
    ids, mask = _batch([4, 9], vocab=100)
    out = emb.embed(ids, mask)
    assert out.shape == (2, 12) and torch.isfinite(out).all()
    torch.testing.assert_close(emb.embed(ids[:1, :4], mask[:1, :4])[0], out[0], rtol=1e-4, atol=1e-5)


def test_pooled_embedding_is_position_weighted_unit_and_padding_free(tmp_path):
    model = _llama(tmp_path)
    pooled = PooledEmbedder(model)
    ids, mask = _batch([5, 12], seed=7)
    out = pooled.embed(ids, mask)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2))
    with torch.no_grad():
        hidden = model.base_model(input_ids=ids[1:, :12], attention_mask=mask[1:, :12]).last_hidden_state[0]
    w = torch.arange(1, 13, dtype=torch.float32)
    ref = (hidden * (w / w.sum())[:, None]).sum(0)
    torch.testing.assert_close(out[1], ref / ref.norm(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(pooled.embed(ids[:1, :5], mask[:1, :5])[0], out[0], rtol=1e-5, atol=1e-6)


def _softmax_dual(call, x, t):
    with fwAD.dual_level():
        out = call(fwAD.make_dual(x, t))
        primal, tangent = fwAD.unpack_dual(out)
        return primal.clone(), tangent.clone()


@pytest.mark.parametrize("call", [
    lambda d: torch.nn.functional.softmax(d, dim=-1, dtype=torch.float64),
    lambda d: torch.nn.functional.softmax(d, -1, 3, torch.float64),
    lambda d: torch.softmax(d, 2),
    lambda d: d.softmax(-1),
    lambda d: d.softmax(dim=1, dtype=torch.float64),
], ids=["F-kw-dtype", "F-positional-dtype", "torch", "method", "method-kw-dtype"])
def test_cheap_softmax_rule_equals_torch_rule_on_masked_scores(call):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 6, 6, generator=gen) + torch.full((6, 6), torch.finfo(torch.float32).min).triu(1)
    t = torch.randn(x.shape, generator=gen)
    ref = _softmax_dual(call, x, t)
    with CheapSoftmaxJvp():
        got = _softmax_dual(call, x, t)
    assert got[0].dtype == ref[0].dtype and got[1].dtype == ref[1].dtype
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    assert got[1].abs().max() > 0.1  # a real tangent, not zeros


def test_cheap_softmax_leaves_plain_and_implicit_dim_calls_to_torch():
    x, w = torch.randn(3, 5, requires_grad=True), torch.randn(3, 5)
    (ref,) = torch.autograd.grad((torch.softmax(x, -1) * w).sum(), x)
    with CheapSoftmaxJvp():  # the cheap rule has no backward: torch's softmax must serve reverse mode
        (got,) = torch.autograd.grad((torch.softmax(x, -1) * w).sum(), x)
    torch.testing.assert_close(got, ref, rtol=0, atol=0)
    with CheapSoftmaxJvp():
        with fwAD.dual_level(), pytest.warns(UserWarning, match="Implicit dimension"):  # dim=None: torch's path
            out = torch.nn.functional.softmax(fwAD.make_dual(x, torch.ones_like(x)), _stacklevel=5, dim=None)
            assert fwAD.unpack_dual(out).tangent is not None


def test_jvp_with_the_cheap_rule_equals_torch_rule(tmp_path):
    model = _llama(tmp_path)
    ids, mask = _batch([9, 3, 12], seed=2)
    cheap = JvpEmbedder(model, DEFAULT_BLOCK_PATTERNS, 2, 2, 16, seed=4).block_output_tangents(ids, mask)
    stock = JvpEmbedder(model, DEFAULT_BLOCK_PATTERNS, 2, 2, 16, seed=4,
                        cheap_softmax=False).block_output_tangents(ids, mask)
    torch.testing.assert_close(cheap, stock, rtol=1e-4, atol=1e-5)
