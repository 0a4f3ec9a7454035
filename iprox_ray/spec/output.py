"""Spec section: what a run writes besides the store."""

from __future__ import annotations

from pydantic import Field

from iprox_ray.spec.base import Section


class OutputSpec(Section):
    subset: bool = Field(True, description="write the selected rows in the input's format")
    plot: bool = True
