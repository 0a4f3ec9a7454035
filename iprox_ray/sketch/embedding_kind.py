"""What an embedding kind is: one way of turning a row into a fixed-width vector (jvp: Influence
Distillation's forward-mode embeddings; rds: RDS+ pooled hidden states), and everything the embed
stage and `iprox-ray plan` must know of it, so that neither switches on its name.

Kinds are listed by name in embedding_kinds.py (adding one: a subclass and one line there). This
module does not import that table: the implementations import this one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Callable, ClassVar, Protocol

if TYPE_CHECKING:
    import torch
    from torch import nn

    from iprox_ray.spec.scoring import EmbedSpec


class Embedder(Protocol):
    """What the embed worker calls: [B, dim] float32 rows for a padded batch, then close()."""

    @property
    def dim(self) -> int: ...

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor: ...

    def close(self) -> None: ...


class EmbeddingKind(ABC):
    name: ClassVar[str]  # its registry name, also the store group's and the stage marker's
    # The worker loads one model for every kind it serves; eager attention for all of them when any
    # kind needs it (jvp: forward-mode AD has no rule for the fused attention kernels).
    needs_eager_attention: ClassVar[bool] = False

    @abstractmethod
    def make(self, model: nn.Module, spec: EmbedSpec) -> Embedder:
        """The embedder over `model` (already on its device) with the job's [scoring.embed] settings."""

    @abstractmethod
    def settings(self, spec: EmbedSpec) -> dict:
        """What the embedding store records of how its rows were made (the store refuses a reopen
        under other settings, so this must only change when the embeddings would)."""

    def fingerprint_keys(self) -> tuple[str, ...]:
        """The job's dotted keys ("scoring.embed.dim", ...) beside model, data encoding and seed
        that decide this kind's embeddings: a change to one of them redoes the pass."""
        return ()

    @abstractmethod
    def dim(self, spec: EmbedSpec, meta_model: Callable[[], nn.Module]) -> int:
        """Width of one embedding, known before any worker starts. `meta_model` builds the sketched
        model on the meta device (shapes, no weights); it is a loader so that a kind whose width
        is a setting never pays for building it."""
