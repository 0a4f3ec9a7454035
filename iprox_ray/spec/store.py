"""Spec section: how the store keeps what the workers write."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from iprox_ray.spec.base import Section


class StoreSpec(Section):
    sketch_dtype: Literal["float16", "int8"] = Field(
        "int8", description="sketch rows on disk: int8 with a float32 scale per row (the default: half the "
                            "bytes of float16, scores read it directly, Spearman against exact influence within "
                            "0.001 of float16's), or float16 (bench/RESULTS.md, 'sketch frontier')")
