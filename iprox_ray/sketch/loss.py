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
