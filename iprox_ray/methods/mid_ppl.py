"""Mid-perplexity: keep the pool rows whose loss sits in the middle band (the scorer, memory-bounded,
is in stages/mid_ppl.py). The losses come from the sketch pass; the target is not used."""

from __future__ import annotations

from iprox_ray.methods.base import Needs, ScoringMethod, TargetInputs
from iprox_ray.stages.mid_ppl import MidPplScorer
from iprox_ray.stages.scorers import Scorer, count_valid


class MidPpl(ScoringMethod):
    name = "mid-ppl"
    needs = Needs(pool_sketch="all", target_sketch=False, losses=True)
    single_score = True

    def build_scorer(self, inputs: TargetInputs) -> Scorer:
        spec, selection = inputs.ctx.job.scoring, inputs.ctx.job.selection
        k = selection.size_for(count_valid(inputs.pool))  # exact ranks only where a selection of k can reach
        return MidPplScorer.build(inputs.pool, spec.mid_ppl_center, keep=k + 1 if selection.strategy == "weights" else k)
