"""Spec section: per-sample gradient sketching."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from iprox_ray.spec.base import Section
from iprox_ray.spec.patterns import DEFAULT_LINEAR_PATTERNS


class SketchSpec(Section):
    modules: list[str] = Field(default_factory=lambda: list(DEFAULT_LINEAR_PATTERNS))
    proj_in: int = Field(16, ge=1, description="Kronecker input-side projection size per module")
    proj_out: int = Field(16, ge=1, description="Kronecker output-side projection size per module")
    projection: Literal["gaussian", "rademacher"] = "gaussian"
    seed: int = 0
    token_budget: int = Field(8192, ge=16, description="max padded tokens per batch")
    max_batch_rows: int = Field(64, ge=1)
