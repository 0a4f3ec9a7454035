"""Spec section: selection (size, strategy)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from iprox_ray.spec.base import Section


class SelectionSpec(Section):
    k: int | None = Field(None, ge=1, description="rows to select (wins over fraction)")
    fraction: float = Field(0.05, gt=0, le=1, description="share of the valid pool to select")
    # topk: global top-k of the aggregated score; round-robin: target examples take turns (a random
    # order per round), each taking its best unselected row; weights: Influence Distillation's
    # λ-bisection weights (exactly k non-zero, summing to the valid pool size).
    strategy: Literal["topk", "round-robin", "weights"] = "topk"
    seed: int = Field(0, description="round-robin: seed of the per-round order")
    # Round-robin keeps, per target example, its best k pool rows (C × k candidates, ~48 bytes
    # each): a run whose C × k exceeds this is refused before scoring.
    round_robin_memory_gib: float = Field(8.0, gt=0, description="round-robin: memory for the per-example "
                                                                 "candidate lists (target examples × k × 48 B)")

    def size_for(self, n_valid: int) -> int:
        if self.k is not None:
            return min(self.k, n_valid)
        return min(n_valid, max(1, round(self.fraction * n_valid)))
