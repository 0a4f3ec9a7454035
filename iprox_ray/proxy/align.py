"""IProX stage 2: align the proxy's factor gradients (and logits) with the target's (docs/methods.md §2).

L_GA = mean over factored layers of ½[(1 − cos(∇A_proxy, G_t Bᵀ)) + (1 − cos(∇B_proxy, Aᵀ G_t))],
with G_t the target's weight gradient (detached) and A, B not detached inside the mapped targets;
the proxy's factor gradients need create_graph=True (double backward, math attention).
objective "product" instead aligns what the sketch measures: per layer 1 − cos(G_p, G_t), with
G_p = Σ_t δ'_t h'_tᵀ the gradient of the proxy's product A·B (δ' from a double backward);
"kl" is logit distillation alone (L_KL, one backward: the cheap way to heal a compressed model).
L_KL = τ² · mean over trainable tokens of KL(softmax(f_target/τ) ‖ softmax(f_proxy/τ)).
Only the factors A and B train (the loop: stage2.py); biases, norms and embeddings stay fixed.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from iprox_ray.models.loss import batch_token_loss
from iprox_ray.models.lowrank import LowRankLinear
from iprox_ray.models.patterns import is_linear_like

COSINE_EPS = 1e-8
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # input_ids, attention_mask, trainable


@dataclass(frozen=True)
class LayerPair:
    name: str
    target: nn.Module  # the dense linear in the target
    proxy: LowRankLinear


def layer_pairs(target: nn.Module, proxy: nn.Module) -> list[LayerPair]:
    """Every low-rank module of the proxy with the dense linear of the same name in the target."""
    pairs = []
    for name, module in proxy.named_modules():
        if isinstance(module, LowRankLinear):
            dense = target.get_submodule(name)
            if not is_linear_like(dense):
                raise ValueError(f"target module {name} is {type(dense).__name__}, not a linear")
            pairs.append(LayerPair(name, dense, module))
    if not pairs:
        raise ValueError("the proxy has no low-rank module to align")
    return pairs


def _dense_weight_grad(module: nn.Module, grad: torch.Tensor) -> torch.Tensor:
    # Conv1D (GPT-2) stores [in, out]; factor space is defined on [out, in].
    return grad if isinstance(module, nn.Linear) else grad.t()


def _math_attention():
    """Double backward needs differentiable attention; the math SDPA kernel is."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel(SDPBackend.MATH)
    except ImportError:  # pragma: no cover - older torch
        return contextlib.nullcontext()


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def kl_loss(target_logits: torch.Tensor, proxy_logits: torch.Tensor, trainable: torch.Tensor,
            tau: float) -> torch.Tensor:
    """τ² · mean over the positions that predict a trainable token of KL(target ‖ proxy).

    Only those positions are normalised ([n, V], not [B, T, V]: the vocabulary makes the rest
    the largest tensors of stage 2)."""
    keep = trainable[:, 1:].bool()
    if not keep.any():
        return proxy_logits.sum() * 0.0
    t_logp = F.log_softmax(target_logits[:, :-1][keep].float().detach() / tau, dim=-1)
    p_logp = F.log_softmax(proxy_logits[:, :-1][keep].float() / tau, dim=-1)
    per_token = (t_logp.exp() * (t_logp - p_logp)).sum(dim=-1)
    return tau**2 * per_token.mean()


def _product_gaps(proxy_loss_of, pairs: Sequence[LayerPair], t_grads) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Per layer 1 − cos(G_p, G_t), G_p = Σ δ' h'ᵀ of the proxy's low-rank layer (differentiable)."""
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    handles = [pair.proxy.register_forward_hook(lambda m, args, out, n=pair.name: seen.__setitem__(n, (args[0], out)))
               for pair in pairs]
    try:
        p_loss, p_logits = proxy_loss_of()
    finally:
        for h in handles:
            h.remove()
    deltas = torch.autograd.grad(p_loss, [seen[p.name][1] for p in pairs], create_graph=True)
    gaps = []
    for i, pair in enumerate(pairs):
        x = seen[pair.name][0]
        g_p = torch.einsum("...m,...n->mn", deltas[i].float(), x.float())
        g_t = _dense_weight_grad(pair.target, t_grads[i]).detach().float()
        gaps.append(1 - F.cosine_similarity(g_p.flatten(), g_t.flatten(), dim=0, eps=COSINE_EPS))
    return gaps, p_logits


def alignment_loss(
    target: nn.Module, proxy: nn.Module, pairs: Sequence[LayerPair], batch: Batch, lambda_kl: float, tau: float,
    objective: str = "factors",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, L_GA, L_KL) on one batch; total is differentiable w.r.t. the proxy's factors."""
    matching = objective != "kl"
    for pair in pairs:  # the gradients this loss is made of
        pair.target.weight.requires_grad_(matching)
        for weight in (pair.proxy.A.weight, pair.proxy.B.weight):
            weight.requires_grad_(True)
    device = next(proxy.parameters()).device
    ids, attn, trainable = (t.to(device) for t in batch)
    with _autocast(device):
        with torch.set_grad_enabled(matching):
            t_logits = target(input_ids=ids, attention_mask=attn).logits
        t_grads = None
        if matching:
            t_loss = batch_token_loss(t_logits, ids, trainable)
            t_grads = torch.autograd.grad(t_loss, [p.target.weight for p in pairs])

        def proxy_loss():
            with _math_attention():
                logits = proxy(input_ids=ids, attention_mask=attn).logits
            return batch_token_loss(logits, ids, trainable), logits

        if objective == "product":
            per_layer, p_logits = _product_gaps(proxy_loss, pairs, t_grads)
            return _total(per_layer, t_logits, p_logits, trainable, lambda_kl, tau)
        if objective == "kl":  # logit distillation alone: one backward, no gradient matching
            _, p_logits = proxy_loss()
            l_kl = kl_loss(t_logits, p_logits, trainable, tau)
            return l_kl, torch.zeros((), device=device), l_kl
        p_loss, p_logits = proxy_loss()
        factors = [p.proxy.A.weight for p in pairs] + [p.proxy.B.weight for p in pairs]
        p_grads = torch.autograd.grad(p_loss, factors, create_graph=True)
    n = len(pairs)
    per_layer = []
    for i, pair in enumerate(pairs):
        g_t = _dense_weight_grad(pair.target, t_grads[i]).detach().float()
        a, b = pair.proxy.A.weight, pair.proxy.B.weight
        cos_a = F.cosine_similarity(p_grads[i].float().flatten(), (g_t @ b.float().T).flatten(), dim=0, eps=COSINE_EPS)
        cos_b = F.cosine_similarity(p_grads[n + i].float().flatten(), (a.float().T @ g_t).flatten(), dim=0,
                                    eps=COSINE_EPS)
        per_layer.append(0.5 * ((1 - cos_a) + (1 - cos_b)))
    return _total(per_layer, t_logits, p_logits, trainable, lambda_kl, tau)


def _total(per_layer, t_logits, p_logits, trainable, lambda_kl: float, tau: float):
    l_ga = torch.stack(per_layer).mean()
    l_kl = kl_loss(t_logits, p_logits, trainable, tau) if lambda_kl > 0 else torch.zeros((), device=l_ga.device)
    return l_ga + lambda_kl * l_kl, l_ga, l_kl


def factor_parameters(proxy: nn.Module) -> list[nn.Parameter]:
    return [w for m in proxy.modules() if isinstance(m, LowRankLinear) for w in (m.A.weight, m.B.weight)]
