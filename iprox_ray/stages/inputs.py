"""Inputs for the driver-side stages: frozen manifests, tokenizer, and seeded row samples."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from iprox_ray.corpus.batching import collate
from iprox_ray.corpus.encode import ChatEncoder, Encoded
from iprox_ray.corpus.manifest import Manifest, freeze_manifest
from iprox_ray.corpus.shard_reader import estimate_tokens_per_row, read_shard
from iprox_ray.models.loading import load_tokenizer
from iprox_ray.spec import JobSpec, SourceSpec
from iprox_ray.stages.context import RunContext
from iprox_ray.store.layout import POOL, target_split


def source_for(ctx: RunContext, split: str) -> SourceSpec:
    return ctx.job.data.pool if split == POOL else ctx.job.data.target


def token_probe(job: JobSpec, split: str, source: SourceSpec,
                encoder: Callable[[], ChatEncoder]) -> Callable[[Manifest], float]:
    """What sizes `rows_per_shard = "auto"`: mean tokens per row of a seeded sample of a probe
    manifest (called, and the encoder built, only when an auto size is first chosen)."""
    return lambda probe: estimate_tokens_per_row(probe, split, source, encoder(), job.run.seed + 11)


def manifest_for(ctx: RunContext, split: str) -> Manifest:
    source = source_for(ctx, split)
    tokens_per_row = token_probe(ctx.job, split, source, lambda: make_encoder(ctx))
    return freeze_manifest(
        source.paths,
        source.format,
        ctx.job.base_dir,
        source.rows_per_shard,
        ctx.layout.manifest(split),
        ctx.layout.manifest_info(split),
        source.model_dump(mode="json"),
        tokens_per_row,
    )


def tokenizer_path(job: JobSpec):
    return job.resolve_path(job.model.tokenizer or job.model.path)


def encoder_for(job: JobSpec) -> ChatEncoder:
    """The workers' encoder: the job's tokenizer, max_length and truncation."""
    return ChatEncoder(load_tokenizer(tokenizer_path(job)), job.data.max_length, job.data.truncation)


def make_encoder(ctx: RunContext) -> ChatEncoder:
    return encoder_for(ctx.job)


def sample_rows(manifest: Manifest, fraction: float, seed: int, min_rows: int = 1) -> dict[int, list[int]]:
    """A seeded uniform sample of a `fraction` of the rows (at least min_rows): {shard_id: sorted local rows}."""
    return sample_count(manifest, max(min_rows, round(fraction * manifest.n_rows)), seed)


def sample_count(manifest: Manifest, count: int, seed: int) -> dict[int, list[int]]:
    """A seeded uniform sample of `count` rows (all when fewer): {shard_id: sorted local rows}."""
    total = manifest.n_rows
    picks = np.sort(np.random.default_rng(seed).choice(total, size=min(total, count), replace=False))
    starts = np.concatenate([[0], np.cumsum(manifest.shard_n_rows)])
    shards = np.searchsorted(starts, picks, side="right") - 1  # one vectorised lookup, not one per row
    local = (picks - starts[shards]).tolist()
    edges = [0, *(np.flatnonzero(np.diff(shards)) + 1).tolist(), len(picks)]
    return {int(shards[lo]): local[lo:hi] for lo, hi in zip(edges[:-1], edges[1:]) if hi > lo}


def encode_sample(ctx: RunContext, manifest: Manifest, chosen: dict[int, list[int]], encoder: ChatEncoder) -> list[Encoded]:
    """Encoded rows of a sample, in sample order; quarantined rows are simply absent."""
    out: list[Encoded] = []
    for shard_id, local_rows in sorted(chosen.items()):
        rows = read_shard(POOL, manifest.shards[shard_id], ctx.job.data.pool, encoder, only=set(local_rows))
        out.extend(rows.encoded)
    return out


def fixed_batches(encoded: list[Encoded], order: list[int], batch_size: int, pad_id: int):
    """Batches of `batch_size` rows in the given order, as (input_ids, attention_mask, trainable)."""
    out = []
    for i in range(0, len(order), batch_size):
        b = collate(encoded, order[i : i + batch_size], pad_id)
        out.append(tuple(torch.from_numpy(a) for a in (b.input_ids, b.attention_mask, b.trainable)))
    return out


def shuffled_epochs(encoded: list[Encoded], batch_size: int, pad_id: int, seed: int, epochs: int):
    """One list of batches per epoch, rows reshuffled (seeded) each epoch."""
    rng = np.random.default_rng(seed)
    return [fixed_batches(encoded, rng.permutation(len(encoded)).tolist(), batch_size, pad_id)
            for _ in range(epochs)]

