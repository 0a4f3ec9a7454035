"""Spec section: the warm-up fine-tune."""

from __future__ import annotations

from pydantic import Field

from iprox_ray.spec.base import Section


class WarmupSpec(Section):
    enabled: bool = True
    fraction: float = Field(0.05, gt=0, le=1, description="share of the pool trained on")
    epochs: int = Field(1, ge=1)
    lr: float = Field(2e-5, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(8, ge=1)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    checkpoint: str | None = Field(
        None, description="bring-your-own warmed model folder (skips training)"
    )
