"""The losses every method shares: token cross-entropy over trainable tokens.

Token t is predicted from position t-1 and counts only where trainable[t].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _token_losses(logits: torch.Tensor, input_ids: torch.Tensor, trainable: torch.Tensor):
    """([B, T-1] fp32 token losses, [B, T-1] fp32 mask)."""
    targets = input_ids[:, 1:]
    token_loss = F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), targets.flatten(), reduction="none"
    ).view_as(targets)
    return token_loss, trainable[:, 1:].float()


def per_sample_loss(logits: torch.Tensor, input_ids: torch.Tensor, trainable: torch.Tensor) -> torch.Tensor:
    """[B] losses: each sample's mean over its own trainable tokens."""
    token_loss, mask = _token_losses(logits, input_ids, trainable)
    return (token_loss * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)


def gathered_loss(logits: torch.Tensor, input_ids: torch.Tensor, keep: torch.Tensor, gathered: bool) -> torch.Tensor:
    """Same [B] losses as `per_sample_loss`, where keep[b, t] = trainable[b, t+1].

    gathered: logits hold only the kept positions ([1, N, V] in row-major order of `keep`);
    otherwise they are the full [B, T, V].
    """
    next_ids = torch.zeros_like(input_ids)
    next_ids[:, :-1] = input_ids[:, 1:]
    if not gathered:
        logits = logits[keep]
    token_loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), next_ids[keep], reduction="none")
    rows = torch.arange(input_ids.shape[0], device=input_ids.device).unsqueeze(1).expand_as(keep)[keep]
    total = torch.zeros(input_ids.shape[0], device=token_loss.device, dtype=token_loss.dtype)
    total = total.index_add(0, rows, token_loss)
    return total / keep.sum(dim=1).clamp_min(1).to(total.dtype)


def batch_token_loss(logits: torch.Tensor, input_ids: torch.Tensor, trainable: torch.Tensor) -> torch.Tensor:
    """Scalar: mean over every trainable token of the batch (a HF `labels` loss)."""
    token_loss, mask = _token_losses(logits, input_ids, trainable)
    return (token_loss * mask).sum() / mask.sum().clamp_min(1.0)
