"""Influence Distillation (Nikdan et al. 2025): exact first-order scores on landmark rows,
propagated to the pool by kernel ridge regression on cheap JVP embeddings."""

from __future__ import annotations

from iprox_ray.influence.less import unit_rows
from iprox_ray.methods.base import Needs, ScoringMethod, TargetInputs
from iprox_ray.methods.landmark_agreement import landmark_fidelity
from iprox_ray.methods.scorers import (
    EmbeddingScorer,
    Scorer,
    TargetFeatures,
    fit_landmark_model,
    read_landmarks,
    sketch_rows,
)
from iprox_ray.spec import SpecError
from iprox_ray.store.embedding_store import EmbeddingStore
from iprox_ray.store.layout import POOL
from iprox_ray.store.sketch_store import open_root


class InfluenceDistillation(ScoringMethod):
    name = "influence-distillation"
    needs = Needs(pool_sketch="landmarks", target_sketch=True, embeddings=("jvp",))
    second_order = True

    def validate(self, job) -> None:
        super().validate(job)
        if len(job.sketch.checkpoints) > 1:
            raise SpecError("sketch.checkpoints: influence-distillation scores one model: sketch a single checkpoint")

    def build_scorer(self, inputs: TargetInputs) -> Scorer:
        ctx = inputs.ctx
        features = TargetFeatures.build(unit_rows(sketch_rows(inputs.target, inputs.rows, 0)), inputs.columns)
        embeddings = EmbeddingStore.open(ctx.layout.store, "jvp", POOL)
        model, info = fit_landmark_model(inputs.pool, embeddings, read_landmarks(ctx), features, ctx.job.scoring)
        return EmbeddingScorer(inputs.pool, inputs.columns.count, info, embeddings, features, model)

    def summary_extra(self, ctx, split: str, scores_name: str) -> dict:
        extra = {"landmark_holdout": open_root(ctx.layout.store)[scores_name].attrs.get("holdout")}
        if ctx.job.scoring.landmarks.sketch == "all":
            extra["landmark_fidelity"] = landmark_fidelity(ctx, split, scores_name, self.aggregate_for(ctx.job.scoring))
        return extra
