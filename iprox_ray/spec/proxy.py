"""Spec section: the influence-preserving proxy."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from iprox_ray.spec.base import Section
from iprox_ray.spec.patterns import DEFAULT_LINEAR_PATTERNS


class ProxySpec(Section):
    method: Literal["none", "ipsvd", "svd", "random"] = "ipsvd"
    rho: float = Field(0.5, gt=0, lt=1, description="fraction of each layer's parameters removed")
    rank_multiple: int = Field(128, ge=1)
    modules: list[str] = Field(default_factory=lambda: list(DEFAULT_LINEAR_PATTERNS))
    construction_fraction: float = Field(0.01, gt=0, le=1)
    probe_fraction: float = Field(0.1, gt=0, le=1, description="share of construction rows")
    min_probe_rows: int = Field(8, ge=1)
    max_probe_columns: int = Field(1024, ge=8)
    ridge: float = Field(1e-3, ge=0)
