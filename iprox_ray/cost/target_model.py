"""The job's target model as the planner needs it without a run: a picklable loader (sibling and
warm-up processes receive it) and its weight bytes from the config alone."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

import torch

from iprox_ray.models.loading import DTYPES, load_config, load_pretrained, meta_model, random_init
from iprox_ray.spec import JobSpec


def _load_target(path: Path, init: str, seed: int, dtype: str, attn: str) -> torch.nn.Module:
    if init == "random":
        return random_init(load_config(path), seed, dtype, attn)
    return load_pretrained(path, dtype, attn)


def target_loader(job: JobSpec, attn: str | None = None) -> Callable[[], torch.nn.Module]:
    """The job's model as the warm-up starts from it (same shapes as the warmed model). A partial,
    not a closure: sibling timing processes receive it pickled."""
    spec = job.model
    return functools.partial(_load_target, job.resolve_path(spec.path), spec.init, job.run.seed, spec.dtype,
                             attn or spec.attn_implementation)


def weight_bytes(job: JobSpec, folder: Path) -> int:
    """A model folder's weights at the job's dtype, from its config (nothing loaded)."""
    return sum(p.numel() for p in meta_model(load_config(folder)).parameters()) * DTYPES[job.model.dtype].itemsize


def target_bytes(job: JobSpec) -> int:
    """The target model's weights at the job's dtype."""
    return weight_bytes(job, job.resolve_path(job.model.path))
