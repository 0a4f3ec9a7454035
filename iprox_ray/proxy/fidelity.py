"""What a proxy costs: forward FLOPs per token (its rank agreement: influence/agreement.py)."""

from __future__ import annotations

from torch import nn

from iprox_ray.models.patterns import is_linear_like, linear_dims


def forward_flops_per_token(model: nn.Module, mean_length: float) -> float:
    """Matmul FLOPs of one forward per token: 2·d_in·d_out per linear (incl. the LM head) plus
    attention scores and mixing (2·2·T·d_attn per layer at the mean sequence length T)."""
    linear = sum(2 * d_in * d_out for m in model.modules() if is_linear_like(m) for d_out, d_in in [linear_dims(m)])
    cfg = model.config
    heads = getattr(cfg, "num_attention_heads", 0)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // max(heads, 1)
    attention = 4 * mean_length * heads * head_dim * cfg.num_hidden_layers
    return float(linear + attention)



def sketch_flops_per_token(model: nn.Module, sketched: list[tuple[str, nn.Module]], mean_length: float,
                           loss_share: float, k_in: int, k_out: int) -> float:
    """Matmul FLOPs of the sketch pass per token, what bounds its speed: every linear's forward and
    activation-only backward (2·2·d_in·d_out; a low-rank A·B counts as its two thin factors), the
    LM head at loss positions only (`loss_share` of the tokens), attention forward and backward
    (3·4·T·d_attn per layer), and the Kronecker projections of each sketched module's input and
    output (2·k·d each) with their outer product (2·k_out·k_in). Norms, activations and other
    element-wise work are left out: they are what a measured speed-up loses to overhead."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    flops = 0.0
    for m in model.modules():
        if is_linear_like(m):
            d_out, d_in = linear_dims(m)
            flops += 4 * d_in * d_out * (loss_share if m is head else 1.0)
    cfg = model.config
    heads = getattr(cfg, "num_attention_heads", 0)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // max(heads, 1)
    flops += 12 * mean_length * heads * head_dim * cfg.num_hidden_layers
    for _, m in sketched:
        d_out, d_in = linear_dims(m)
        flops += 2 * k_in * d_in + 2 * k_out * d_out + 2 * k_out * k_in
    return float(flops)
