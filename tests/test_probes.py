"""IPSVD probes: second moments of each module's inputs and output gradients at the sampled positions."""

import pytest
import torch

from iprox_ray.models.loss import batch_token_loss
from iprox_ray.models.patterns import select_modules
from iprox_ray.proxy.probes import ProbeCollector
from tests.sketch_reference import mixed_batch, tiny_model

PATTERNS = [r"re:.*\.(q_proj|k_proj|down_proj)$"]


def _reference(model, ids, attn, loss_mask):
    """Each module's full input and output gradient [B, T, d] under the batch's mean token loss."""
    inputs, outputs = {}, {}
    handles = []
    for name, m in select_modules(model, PATTERNS):
        def hook(mod, args, out, name=name):
            inputs[name] = args[0].detach()
            out.retain_grad()
            outputs[name] = out
        handles.append(m.register_forward_hook(hook))
    logits = model(input_ids=ids, attention_mask=attn).logits
    batch_token_loss(logits, ids, loss_mask).backward()
    for h in handles:
        h.remove()
    model.zero_grad(set_to_none=True)
    return inputs, {k: v.grad.detach() for k, v in outputs.items()}


@pytest.mark.parametrize("loss_tokens", ["all", "trainable"])
def test_moments_are_those_of_the_modules_inputs_and_output_gradients(loss_tokens):
    model = tiny_model("llama")
    ids, attn, trainable = mixed_batch()
    loss_mask = attn.bool() if loss_tokens == "all" else trainable & attn.bool()
    want_h, want_d = _reference(model, ids, attn, loss_mask)
    modules = select_modules(model, PATTERNS)
    collector = ProbeCollector(modules, max_columns=24, num_sequences=4, seed=0, loss_tokens=loss_tokens)
    collector.run(model, ids, attn, trainable)
    collector.close()
    b_idx, t_idx = collector._positions
    assert 16 <= len(b_idx) <= 24  # up to 6 per sequence (the short rows have fewer positions)
    assert bool(attn[b_idx, t_idx].all())
    if loss_tokens == "trainable":
        last = {b: int(trainable[b].nonzero().max()) for b in range(4)}
        assert all(int(t) < last[int(b)] for b, t in zip(b_idx, t_idx))
    n = len(b_idx)
    assert collector.count == n
    for name, _ in modules:
        h, d = want_h[name][b_idx, t_idx].double(), want_d[name][b_idx, t_idx].double()
        c_h, c_d = collector.moments(name)
        torch.testing.assert_close(c_h, h.T @ h / n, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(c_d, d.T @ d / n, rtol=1e-4, atol=1e-14)
    # q_proj and k_proj read the same input: one C_h, shared
    q = next(n for n, _ in modules if n.endswith("0.self_attn.q_proj"))
    k = q.replace("q_proj", "k_proj")
    assert collector.input_of[k] == q
    # activation gradients only: no weight gradient is formed, requires_grad flags are restored
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())


def test_trainable_probes_need_the_mask():
    model = tiny_model("llama")
    ids, attn, _ = mixed_batch()
    collector = ProbeCollector(select_modules(model, PATTERNS), 8, 4, 0, loss_tokens="trainable")
    with pytest.raises(ValueError, match="trainable mask"):
        collector.run(model, ids, attn)
    with pytest.raises(ValueError, match="loss_tokens"):
        ProbeCollector(select_modules(model, PATTERNS), 8, 4, 0, loss_tokens="assistant")
