"""Spec section: how the store keeps what the workers write."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from iprox_ray.spec.base import Section


class StoreSpec(Section):
    sketch_dtype: Literal["float16", "int8"] = Field(
        "float16", description="sketch rows on disk: float16, or int8 with a float32 scale per row (half the "
                               "bytes; scores read it directly). Measured against exact influence in "
                               "bench/RESULTS.md, 'sketch frontier'")
