"""Reference computations for the sketch tests: tiny models of each architecture and exact
per-sample weight gradients from a batch-size-1 loop or torch.func vmap(grad)."""

from __future__ import annotations

import copy

import torch
import transformers as tf
from torch import nn

from iprox_ray.models.loss import per_sample_loss
from iprox_ray.models.patterns import linear_weight, select_modules

VOCAB = 120
LLAMA_LIKE = [r"re:.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$"]
GPT2 = ["*.c_attn", "*.c_proj", "*.c_fc"]


def tiny_config(arch: str):
    common = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2)
    if arch == "llama":
        return tf.LlamaConfig(**common)
    if arch == "qwen2":
        return tf.Qwen2Config(**common)
    if arch == "qwen3":
        return tf.Qwen3Config(**common, head_dim=8)
    if arch == "gemma":
        return tf.GemmaConfig(**common, head_dim=8)
    if arch == "mistral":
        return tf.MistralConfig(**common)
    if arch == "gpt2":
        return tf.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64)
    raise ValueError(arch)


def tiny_model(arch: str, seed: int = 0, attn: str = "eager") -> nn.Module:
    torch.manual_seed(seed)
    model = tf.AutoModelForCausalLM.from_config(tiny_config(arch), attn_implementation=attn).eval()
    with torch.no_grad():  # random-init biases are zero; make them matter
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.02)
    return model


def patterns_for(arch: str) -> list[str]:
    return GPT2 if arch == "gpt2" else LLAMA_LIKE


def mixed_batch(batch: int = 4, width: int = 14, seed: int = 1):
    """Right-padded rows of different lengths; the first tokens of each row carry no loss."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (batch, width), generator=g)
    attn = torch.ones(batch, width, dtype=torch.long)
    for b in range(1, batch, 2):
        attn[b, width - 3 * b :] = 0
    trainable = attn.bool().clone()
    trainable[:, :3] = False
    return ids, attn, trainable


def per_sample_grads(model: nn.Module, patterns: list[str], ids, attn, trainable) -> list[dict[str, torch.Tensor]]:
    """Exact per-sample weight gradients in [d_out, d_in] layout from a bs=1 loop (no padding)."""
    ref = copy.deepcopy(model)
    for p in ref.parameters():
        p.requires_grad_(True)
    modules = select_modules(ref, patterns)
    out = []
    for b in range(ids.shape[0]):
        n = int(attn[b].sum())
        ref.zero_grad()
        logits = ref(input_ids=ids[b : b + 1, :n]).logits
        per_sample_loss(logits, ids[b : b + 1, :n], trainable[b : b + 1, :n]).sum().backward()
        grads = {}
        for name, module in modules:
            g = module.weight.grad
            grads[name] = (g if isinstance(module, nn.Linear) else g.t()).detach().clone()
        out.append(grads)
    return out


def vmap_grads(model: nn.Module, patterns: list[str], ids, attn, trainable) -> list[dict[str, torch.Tensor]]:
    """The same through torch.func vmap(grad) over the padded batch (eager attention)."""
    from torch.func import functional_call, grad, vmap

    names = [n for n, _ in select_modules(model, patterns)]
    params = {f"{n}.weight": dict(model.named_modules())[n].weight.detach() for n in names}
    transposed = {n for n, m in select_modules(model, patterns) if not isinstance(m, nn.Linear)}

    def loss_one(p, i, a, t):
        logits = functional_call(model, p, (i[None],), {"attention_mask": a[None]}).logits
        return per_sample_loss(logits, i[None], t[None])[0]

    grads = vmap(grad(loss_one), in_dims=(None, 0, 0, 0), chunk_size=2)(params, ids, attn, trainable)
    return [{n: (grads[f"{n}.weight"][b].t() if n in transposed else grads[f"{n}.weight"][b])
             for n in names} for b in range(ids.shape[0])]


def kronecker_reference(grads, layout, seed: int, kind: str = "gaussian", transform=None) -> torch.Tensor:
    from iprox_ray.sketch.projection import projection_matrix

    rows = []
    for sample in grads:
        parts = []
        for m in layout:
            g = sample[m.name] if transform is None else transform(m.name, sample[m.name][None])[0]
            p_in = projection_matrix(seed, m.name, "in", m.k_in, m.d_in, kind)
            p_out = projection_matrix(seed, m.name, "out", m.k_out, m.d_out, kind)
            parts.append((p_out @ g @ p_in.T).flatten())
        rows.append(torch.cat(parts))
    return torch.stack(rows)


def dense_reference(grads, sketcher, transform=None) -> torch.Tensor:
    rows = []
    for sample in grads:
        total = torch.zeros(sketcher.dim)
        for name, _ in sketcher.modules:
            g = sample[name] if transform is None else transform(name, sample[name][None])[0]
            flat = g.flatten()
            mask = sketcher.masks[name]
            if mask is not None:
                flat = flat[mask]
            total += sketcher.projector.matrix(name, flat.numel()) @ flat
        rows.append(total)
    return torch.stack(rows)


def model_linear_weight(model, name):
    return linear_weight(dict(model.named_modules())[name])
