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


def batch_token_loss(logits: torch.Tensor, input_ids: torch.Tensor, trainable: torch.Tensor) -> torch.Tensor:
    """Scalar: mean over every trainable token of the batch (a HF `labels` loss)."""
    token_loss, mask = _token_losses(logits, input_ids, trainable)
    return (token_loss * mask).sum() / mask.sum().clamp_min(1.0)
