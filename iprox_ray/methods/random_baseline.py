"""Random: a seeded uniform score per pool row (the baseline every method must beat).

This module is the whole method (scorer included): adding a method is a module like this one and
its line in registry.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from iprox_ray.methods.base import Needs, ScoringMethod, TargetInputs
from iprox_ray.methods.scorers import Scorer, candidate_mask


@dataclass
class RandomScorer(Scorer):
    seed: int = 0

    def block(self, shard_id: int) -> np.ndarray:
        span = self.pool.shard_rows(shard_id)
        out = self._empty()
        ok = candidate_mask(self.pool, span, need_sketch=False)
        draws = np.random.default_rng([self.seed, shard_id]).random(self.pool.rows_per_shard, dtype=np.float32)
        out[ok, 0] = draws[ok]
        return out


class RandomBaseline(ScoringMethod):
    name = "random"
    needs = Needs(pool_sketch="none", target_sketch=False)
    single_score = True

    def build_scorer(self, inputs: TargetInputs) -> Scorer:
        return RandomScorer(inputs.pool, 1, {}, seed=inputs.ctx.job.scoring.seed)
