"""RDS+ (Ivison et al. 2025): cosine of mean-pooled hidden states; no gradients."""

from __future__ import annotations

from iprox_ray.influence.less import unit_rows
from iprox_ray.methods.base import Needs, ScoringMethod, TargetInputs
from iprox_ray.methods.scorers import EmbeddingScorer, Scorer, TargetFeatures
from iprox_ray.store.embedding_store import EmbeddingStore
from iprox_ray.store.layout import POOL


class RdsPlus(ScoringMethod):
    name = "rds+"
    needs = Needs(pool_sketch="none", target_sketch=False, embeddings=("rds",), target_embeddings=("rds",))

    def build_scorer(self, inputs: TargetInputs) -> Scorer:
        store = inputs.ctx.layout.store
        t_emb = EmbeddingStore.open(store, "rds", inputs.split).gather("embedding", inputs.rows)
        features = TargetFeatures.build(unit_rows(t_emb), inputs.columns)
        return EmbeddingScorer(inputs.pool, inputs.columns.count, {}, EmbeddingStore.open(store, "rds", POOL), features)
