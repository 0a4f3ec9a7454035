"""Spec sections: the influence-preserving proxy, and the fidelity check of it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from iprox_ray.spec.base import Section
from iprox_ray.spec.patterns import DEFAULT_LINEAR_PATTERNS

LOW_RANK_METHODS = ("ipsvd", "svd", "random")


class ProxySpec(Section):
    """How the proxy is made. Stage 1 (`method`), then optional stage-2 alignment of the factors.

    auto (default): build the `auto_candidate` proxy, check it against the target and exact
    influence on probe rows (the fidelity report), and sketch with it only when the verdict says
    it pays ([fidelity] pays_* thresholds); otherwise sketch with the target and say so;
    none: the warmed target itself; ipsvd / svd / random: every matched linear replaced by A·B;
    layer_extraction: keep round((1−ρ)·L) decoder layers (the first of every block);
    model: an off-the-shelf smaller model at `model_path` (same tokenizer).
    """

    method: Literal["auto", "none", "ipsvd", "svd", "random", "layer_extraction", "model"] = "auto"
    auto_candidate: Literal["ipsvd", "svd", "random", "layer_extraction"] = Field(
        "ipsvd", description="method = 'auto': the proxy built and checked")
    rho: float = Field(0.5, gt=0, lt=1, description="fraction of each layer's parameters removed")
    rank_multiple: int = Field(128, ge=1)
    rank_rule: Literal["uniform", "global"] = Field(
        "uniform", description="uniform: every layer at ρ (the paper); global (ipsvd): ranks where the whitened "
                               "energy per parameter is highest, (1−ρ) of the parameters in all")
    modules: list[str] = Field(default_factory=lambda: list(DEFAULT_LINEAR_PATTERNS))
    model_path: str | None = Field(None, description="method = 'model': the smaller model's folder")
    # construction data: a seeded share of the pool, split into probes (stage 1) and alignment data
    construction_fraction: float = Field(0.01, gt=0, le=1)
    probe_fraction: float = Field(0.1, gt=0, lt=1, description="share of construction rows used as probes")
    min_probe_rows: int = Field(8, ge=1)
    max_probe_columns: int = Field(8192, ge=8, description="token positions whose h, δ enter the probe moments "
                                   "(the paper: 1024; moments cost no more memory for more)")
    probe_batch_size: int = Field(4, ge=1)
    probe_loss: Literal["all", "trainable"] = Field(
        "trainable", description="probe loss tokens: the trained (assistant) tokens the sketches use, or every "
                                 "non-pad token (the paper)")
    ridge: float = Field(1e-3, ge=0)
    relative_ridge: bool = Field(True, description="ridge as a share of each side's mean eigenvalue (the paper's "
                                                   "absolute 1e-3 swamps C_δ on real models)")
    # stage 2: gradient (and logit) alignment of the low-rank factors (proxy/stage2.py)
    align_epochs: int = Field(
        0, ge=0, description="passes over the alignment rows; 0 skips stage 2")
    align_objective: Literal["factors", "product", "kl"] = Field(
        "kl", description="factors: the paper's factor-gradient cosine L_GA (+ lambda_kl·KL); product: cosine of "
                          "the product's gradient A·B to the target's weight gradient (what the sketch measures) "
                          "(+ lambda_kl·KL); kl: logit distillation only")
    align_lr: float = Field(1e-4, gt=0)
    align_schedule: Literal["constant", "linear", "cosine"] = Field(
        "cosine", description="learning-rate decay after the warm-up")
    align_warmup: float = Field(0.1, ge=0, lt=1, description="share of the steps ramping the learning rate up")
    align_weight_decay: float = Field(0.01, ge=0)
    align_batch_size: int = Field(4, ge=1)
    align_rows: int = Field(0, ge=0, description="alignment rows used (0: every construction row that is not a "
                                                 "probe); the held-out share is taken from them")
    align_row_choice: Literal["random", "most-trainable"] = Field(
        "random", description="which construction rows align when align_rows caps them: a seeded random draw, "
                              "or the rows with the most trainable (assistant) tokens, which carry the loss")
    align_holdout_fraction: float = Field(
        0.2, gt=0, lt=1, description="share of the alignment rows held out: stage 2 stops when their objective "
                                     "stops falling and keeps the best factors (never worse than stage 1)")
    align_eval_every: int = Field(8, ge=1, description="steps between held-out checks")
    align_patience: int = Field(3, ge=1, description="held-out checks without improvement before stopping")
    lambda_kl: float = Field(1.0, ge=0, description="weight of the logit KL term beside L_GA (paper: unpublished)")
    temperature: float = Field(2.0, gt=0)

    @model_validator(mode="after")
    def _model_path_iff_model(self) -> "ProxySpec":
        if (self.method == "model") != (self.model_path is not None):
            raise ValueError("model_path is required with method = 'model' and only then")
        return self

    @property
    def built_method(self) -> str:
        """The proxy construction that runs: the candidate under 'auto', else the method itself."""
        return self.auto_candidate if self.method == "auto" else self.method

    @property
    def is_low_rank(self) -> bool:
        return self.built_method in LOW_RANK_METHODS


class FidelitySpec(Section):
    """Proxy vs target influence agreement on a probe sample, before spending the full run."""

    enabled: bool = Field(False, description="run and print the report before sketching the pool")
    pool_rows: int = Field(512, ge=8, description="probe rows drawn from the pool (seeded)")
    target_rows: int = Field(64, ge=1, description="target rows used (first of the target set)")
    top_fraction: float = Field(0.05, gt=0, lt=1, description="overlap reported for this top share")
    exact_rows: int = Field(
        32, ge=0, description="probe rows also scored by exact bs=1 gradients of the warmed target (every "
                              "trained parameter, no projection), so the report shows sketch-vs-exact; 0 skips"
    )
    # The verdict (and proxy.method = 'auto'): the proxy pays when it sketches this much faster and
    # keeps this share of the target sketch's Spearman against exact influence (without exact
    # rows: this Spearman against the target's own sketch scores).
    pays_speedup: float = Field(1.5, gt=0, description="measured sketch speed-up the proxy must reach")
    pays_fidelity_share: float = Field(0.9, gt=0, le=1, description="share of the target sketch's Spearman vs "
                                                                     "exact influence the proxy must keep")
    pays_spearman: float = Field(0.8, gt=-1, le=1, description="without exact rows: the proxy's Spearman vs the "
                                                               "target's sketch scores")
