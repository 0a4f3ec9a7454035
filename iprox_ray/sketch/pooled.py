"""RDS+ embeddings (docs/methods.md §6): the final hidden states, position-weighted mean pooled.

Weights ∝ position + 1 over real tokens (normalised per row), then L2-normalised, so the cosine
of two embeddings is their dot product. The model's base (`model.base_model`, the part below the
LM head, found through the config's base_model_prefix) gives the final, normed hidden states.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch
from torch import nn

from iprox_ray.sketch.embedding_kind import EmbeddingKind

if TYPE_CHECKING:
    from iprox_ray.spec.scoring import EmbedSpec


def position_weights(attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, T] weights ∝ (position + 1) on real tokens, summing to 1 per row."""
    mask = attention_mask.float()
    w = mask * torch.cumsum(mask, dim=1)  # position counted over real tokens (left padding safe)
    return w / w.sum(dim=1, keepdim=True).clamp_min(1.0)


class PooledEmbedder:
    def __init__(self, model: nn.Module):
        self.model = model
        self.base = model.base_model
        self.dim = model.get_input_embeddings().embedding_dim

    def close(self) -> None:
        pass

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        device = next(self.model.parameters()).device
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        with torch.no_grad():
            hidden = self.base(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        pooled = (hidden.float() * position_weights(attention_mask)[..., None]).sum(dim=1)
        return pooled / pooled.norm(dim=1, keepdim=True)  # a zero row becomes NaN: never selected


class PooledKind(EmbeddingKind):
    name = "rds"  # RDS+ (docs/methods.md §6); no [scoring.embed] setting changes these embeddings

    def make(self, model: nn.Module, spec: EmbedSpec) -> PooledEmbedder:
        return PooledEmbedder(model)

    def settings(self, spec: EmbedSpec) -> dict:
        return {"pooling": "position-weighted-mean"}

    def dim(self, spec: EmbedSpec, meta_model: Callable[[], nn.Module]) -> int:
        return meta_model().get_input_embeddings().embedding_dim  # the hidden width, pooled
