"""LESS (Xia et al. 2024): cosine of Adam-preconditioned gradient sketches, summed over checkpoints
with their mean learning rates (LESS §3, eq. 2), max over target subtasks."""

from __future__ import annotations

from typing import ClassVar

from iprox_ray.influence.less import unit_rows
from iprox_ray.methods.base import Needs, ScoringMethod, TargetInputs
from iprox_ray.methods.scorers import Scorer, SketchScorer, TargetFeatures, checkpoint_weights, sketch_rows


class Less(ScoringMethod):
    name = "less"
    needs = Needs(pool_sketch="all", target_sketch=True)
    default_aggregate = "subtask-max"
    raw: ClassVar[bool] = False  # inner products of the raw sketches instead of cosines

    def build_scorer(self, inputs: TargetInputs) -> Scorer:
        weights = checkpoint_weights(inputs.pool)
        per_checkpoint = []
        for c in range(len(weights)):
            t_sketch = sketch_rows(inputs.target, inputs.rows, c)
            per_checkpoint.append(TargetFeatures.build(t_sketch if self.raw else unit_rows(t_sketch), inputs.columns))
        return SketchScorer(inputs.pool, inputs.columns.count, {"checkpoint_weights": weights}, per_checkpoint,
                            weights, raw=self.raw)
