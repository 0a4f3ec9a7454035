"""The per-sample loss every method shares: mean token cross-entropy over trainable tokens."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def per_sample_loss(logits: torch.Tensor, input_ids: torch.Tensor, trainable: torch.Tensor) -> torch.Tensor:
    """[B] losses; token t is predicted from position t-1 and counts only where trainable[t]."""
    targets = input_ids[:, 1:]
    mask = trainable[:, 1:].float()
    token_loss = F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), targets.flatten(), reduction="none"
    ).view_as(targets)
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
