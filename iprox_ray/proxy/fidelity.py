"""What a proxy costs: forward FLOPs per token (its rank agreement: influence/agreement.py)."""

from __future__ import annotations

from torch import nn

from iprox_ray.models.selection import is_linear_like, linear_dims


def forward_flops_per_token(model: nn.Module, mean_length: float) -> float:
    """Matmul FLOPs of one forward per token: 2·d_in·d_out per linear (incl. the LM head) plus
    attention scores and mixing (2·2·T·d_attn per layer at the mean sequence length T)."""
    linear = sum(2 * d_in * d_out for m in model.modules() if is_linear_like(m) for d_out, d_in in [linear_dims(m)])
    cfg = model.config
    heads = getattr(cfg, "num_attention_heads", 0)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // max(heads, 1)
    attention = 4 * mean_length * heads * head_dim * cfg.num_hidden_layers
    return float(linear + attention)
