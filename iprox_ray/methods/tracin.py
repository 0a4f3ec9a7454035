"""TracIn (Pruthi et al. 2020): inner products of the raw gradient sketches, summed over checkpoints."""

from __future__ import annotations

from iprox_ray.methods.less import Less


class TracIn(Less):
    name = "tracin"
    raw = True
