"""Spec sections for the compute stages: warm-up, proxy, sketch."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from iprox_ray.spec.base import Section

# Attention and MLP linears of common decoder LMs, matched by name, never by attribute path.
DEFAULT_LINEAR_PATTERNS = [r"re:.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$"]


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


class SketchSpec(Section):
    modules: list[str] = Field(default_factory=lambda: list(DEFAULT_LINEAR_PATTERNS))
    proj_in: int = Field(16, ge=1, description="Kronecker input-side projection size per module")
    proj_out: int = Field(16, ge=1, description="Kronecker output-side projection size per module")
    projection: Literal["gaussian", "rademacher"] = "gaussian"
    seed: int = 0
    token_budget: int = Field(8192, ge=16, description="max padded tokens per batch")
    max_batch_rows: int = Field(64, ge=1)
