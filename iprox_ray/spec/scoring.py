"""Spec section: scoring (method, embeddings, landmarks, second order)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from iprox_ray.spec.base import Section

# Transformer blocks of common decoder LMs (model.layers.N, transformer.h.N, ...), by name.
DEFAULT_BLOCK_PATTERNS = [r"re:(.*\.)?(layers|h|blocks|block)\.\d+$"]
# The final norm after the blocks (model.norm, transformer.ln_f, decoder.final_layer_norm, ...).
DEFAULT_FINAL_NORM_PATTERNS = [r"re:(.*\.)?(norm|ln_f|final_layer_norm|final_layernorm|norm_f)$"]


class EmbedSpec(Section):
    """Embedding passes over every pool row: JVP (Influence Distillation) and pooled hidden
    states (RDS+). Only the passes a method needs are run."""

    blocks: int = Field(4, ge=1, description="JVP through the first B transformer blocks")
    block_patterns: list[str] = Field(default_factory=lambda: list(DEFAULT_BLOCK_PATTERNS))
    tangents: int = Field(2, ge=1, description="random Gaussian tangents T over those blocks' parameters")
    # Defaults from the real-model benchmark (bench/RESULTS.md, "Influence Distillation on the real
    # model"): the mean over real tokens after the final norm propagated best; the official code
    # reads the last token after the final norm.
    readout: Literal["last", "mean"] = Field("mean", description="tangent at the last real token, or its "
                                                                 "mean over the real tokens")
    final_norm: list[str] = Field(default_factory=lambda: list(DEFAULT_FINAL_NORM_PATTERNS),
                                  description="apply this final norm (name patterns; one module outside the "
                                              "blocks) before the readout; [] reads the block output raw")
    dim: int = Field(4096, ge=1, description="random projection of the T·d_model tangent outputs")
    seed: int = 0
    token_budget: int = Field(8192, ge=16, description="max padded tokens per batch")
    max_batch_rows: int = Field(64, ge=1)


class LandmarkSpec(Section):
    """Influence Distillation: exact gradients on L landmarks, propagated to the pool by KRR."""

    count: int = Field(4096, ge=1, description="landmarks L (capped at the valid pool size)")
    # farthest-point: best on the real-model benchmark (the official code draws uniformly)
    method: Literal["uniform", "kmeans++", "farthest-point"] = "farthest-point"
    candidates: int = Field(65536, ge=1, description="k-means++ / farthest-point run on this many "
                                                     "seeded uniform candidates (memory: candidates × dim)")
    seed: int = 0
    kernel: Literal["rbf", "linear"] = "rbf"
    ridge: float = Field(0.01, gt=0, description="ridge = this × mean(diag K_LL)")
    bandwidth_sample: int = Field(1000, ge=2, description="RBF σ: median pairwise distance on ≤ this many landmarks")
    bandwidth_scale: float = Field(1.0, gt=0, description="RBF σ = this × that median distance")
    center: bool = Field(False, description="fit the landmark scores minus their mean, add it back: rows far "
                                            "from every landmark get the typical score, not 0")
    holdout_folds: int = Field(5, ge=0, description="leave-some-landmarks-out check of the propagation "
                                                    "(k-fold over the landmarks, in the summary); 0: off")
    # all: sketch every pool row too (costs what LESS costs; lets exact scores be compared).
    sketch: Literal["landmarks", "all"] = "landmarks"


class SecondOrderSpec(Section):
    """Influence Distillation's Q term, (η/2)·wᵀQw with Q = (1/N)·G̃_S H_T G̃_Sᵀ, applied by
    linearising around the first-order weights (Hessian-vector products on the target set)."""

    enabled: bool = False
    lr: float = Field(1e-4, gt=0, description="η, the step the objective models")
    iterations: int = Field(1, ge=1)


class ScoringSpec(Section):
    # A name in iprox_ray/methods/registry.py, checked there when a job is loaded (the spec sits below
    # the methods and does not import them).
    method: str = Field("less", description="the scoring method (iprox-ray methods lists them)")
    # How per-target-example scores combine into one score per pool row. auto: the method's own
    # rule (subtask-max for less/tracin, the LESS rule; it equals the mean without subtasks), which
    # ScoringMethod.aggregate_for resolves.
    aggregate: Literal["auto", "mean", "subtask-max"] = "auto"
    seed: int = Field(0, description="random method: the seed of the scores")
    mid_ppl_center: float = Field(0.5, gt=0, lt=1, description="mid-ppl: quantile the kept band is centred on")
    embed: EmbedSpec = Field(default_factory=EmbedSpec)
    landmarks: LandmarkSpec = Field(default_factory=LandmarkSpec)
    second_order: SecondOrderSpec = Field(default_factory=SecondOrderSpec)
