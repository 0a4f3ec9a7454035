"""Spec sections: scoring and selection."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from iprox_ray.spec.base import Section


class ScoringSpec(Section):
    method: Literal["less"] = "less"


class SelectionSpec(Section):
    k: int | None = Field(None, ge=1, description="rows to select (wins over fraction)")
    fraction: float = Field(0.05, gt=0, le=1, description="share of the valid pool to select")
    strategy: Literal["topk"] = "topk"

    def size_for(self, n_valid: int) -> int:
        if self.k is not None:
            return min(self.k, n_valid)
        return min(n_valid, max(1, round(self.fraction * n_valid)))
