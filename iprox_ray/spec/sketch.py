"""Spec section: per-sample gradient sketching."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from iprox_ray.spec.base import SafeName, Section
from iprox_ray.spec.patterns import DEFAULT_LINEAR_PATTERNS, DEFAULT_VECTOR_PATTERNS


class CheckpointSpec(Section):
    """One training checkpoint to sketch (TracIn / LESS: scores are Σ_ckpt η̄_ckpt · cos)."""

    model: str = Field(description="HF model folder of this checkpoint")
    optimizer: str | None = Field(
        None,
        description="its Adam state: an iprox-ray state folder, or a Trainer optimizer.pt / accelerate optimizer.bin",
    )
    weight: float = Field(1.0, gt=0,
                          description="η̄: the epoch's mean learning rate (weights are renormalised to sum 1)")
    name: SafeName | None = Field(None)


class SketchSpec(Section):
    modules: list[str] = Field(default_factory=lambda: list(DEFAULT_LINEAR_PATTERNS))
    vectors: list[str] = Field(
        default_factory=lambda: list(DEFAULT_VECTOR_PATTERNS),
        description="modules (norms) whose own 1-D parameters are sketched exactly per sample; [] leaves them out",
    )
    biases: bool = Field(True, description="also sketch the biases of the sketched linears (exact per sample)")
    vector_dim: int = Field(
        1024, ge=0, description="columns of the vector parameters' block (norms, biases): each parameter gets its "
                                "own seeded SRHT into them, so the width is fixed whatever the model; 0 keeps "
                                "their exact gradients (a block no wider than this is kept exact). Chosen from "
                                "the frontier table (bench/RESULTS.md, 'sketch frontier')"
    )
    # A name, not a Literal: the kinds are registered in sketch/kinds.py (above this layer, so not
    # imported here) and checked there, with the settings a kind cannot take, when a job is loaded.
    kind: str = Field(
        "kronecker", description="kronecker: per-module P_out ⊗ P_in; srht / rademacher: dense projection to `dim` "
                                 "(the registered kinds: iprox_ray/sketch/kinds.py)"
    )
    proj_in: int = Field(32, ge=1, description="Kronecker input-side projection size per module")
    proj_out: int = Field(32, ge=1, description="Kronecker output-side projection size per module")
    projection: Literal["gaussian", "rademacher"] = Field("gaussian", description="Kronecker factor distribution")
    reproject_dim: int = Field(
        8192, ge=0, description="kronecker: an SRHT of the whole linears' block to this many columns (0 keeps the "
                                "block, as does a block no wider than this); cheap next to the backward, and it "
                                "decouples the store's width from the model's depth (bench/RESULTS.md, 'sketch "
                                "frontier')")
    dim: int = Field(8192, ge=1, description="dense sketch dimension (srht / rademacher)")
    mask_fraction: float = Field(1.0, gt=0, le=1, description="dense: keep this seeded share of each module's entries")
    seed: int = 0
    lowrank: Literal["product", "factors"] = Field(
        "product", description="a proxy's low-rank layer A·B: one sketch of the product's gradient, of the dense "
                               "layer's shape and projection (default), or one per factor (bench/RESULTS.md)"
    )
    optimizer: Literal["none", "less", "influence-distillation"] = Field(
        "none", description="Adam-aware pool features (targets always stay plain gradients)"
    )
    adam_exact: bool = Field(
        False, description="kronecker + optimizer: materialise per-sample gradients for the exact transform "
                           "(else a rank-1 factored approximation); dense kinds are always exact"
    )
    optimizer_state: str | None = Field(None, description="Adam state for the features; default: the warm-up's")
    checkpoints: list[CheckpointSpec] = Field(
        default_factory=list, description="sketch several checkpoints (needs proxy.method = 'none' or 'auto')"
    )
    autocast: Literal["auto", "bf16", "off"] = Field("auto", description="auto: bf16 on GPU, fp32 on CPU")
    token_budget: int | Literal["auto"] = Field(
        "auto", description="max padded tokens per batch; auto: the largest whose predicted worker peak fits "
                            "the worker's share of its node's memory (sketch/memory.py), chosen at the run's "
                            "first sketch and kept for its resumes (stages/sketch-budget.json)")
    max_batch_rows: int = Field(64, ge=1)

    @field_validator("token_budget", mode="before")
    @classmethod
    def _budget(cls, value):
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 16):
            return value
        raise ValueError(f"must be an integer >= 16 or 'auto', got {value!r}")

    @model_validator(mode="after")
    def _check(self) -> "SketchSpec":
        names = [c.name or f"ckpt{i}" for i, c in enumerate(self.checkpoints)]
        if len(set(names)) != len(names):
            raise ValueError(f"checkpoint names must be unique, got {names}")
        return self

    def checkpoint_weights(self) -> list[float]:
        total = sum(c.weight for c in self.checkpoints)
        return [c.weight / total for c in self.checkpoints]
