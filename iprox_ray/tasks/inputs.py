"""Inputs for the driver-side stages: frozen manifests, the split's encoder, and seeded row samples."""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from iprox_ray.corpus.batching import collate
from iprox_ray.corpus.encode import DataFormatError, Encoded
from iprox_ray.corpus.formats import EncodingSettings, build_encoder
from iprox_ray.corpus.manifest import Manifest, freeze_manifest
from iprox_ray.corpus.shard_reader import estimate_tokens_per_row, read_shard
from iprox_ray.corpus.windows import windows_source
from iprox_ray.execution.context import RunContext
from iprox_ray.models.loading import load_tokenizer
from iprox_ray.spec import JobSpec, SourceSpec
from iprox_ray.store.atomic import atomic_write_json, read_json
from iprox_ray.store.layout import MAIN_TARGET, POOL, RunLayout, target_split
from iprox_ray.tasks.cut_windows import cut_windows


def windowed(job: JobSpec, split: str) -> bool:
    """Is the split read as the windows cut from its documents (corpus/windows.py)?"""
    return job.data.format_of(split == POOL) == "text" and job.data.text_windows == "all"


def input_source(job: JobSpec, split: str) -> SourceSpec:
    """The split's inputs as the job names them."""
    return job.data.pool if split == POOL else job.data.target


def source_for(ctx: RunContext, split: str) -> SourceSpec:
    """What the split's manifest and readers read: its inputs, or the windows cut from them."""
    source = input_source(ctx.job, split)
    return windows_source(source, ctx.layout.windows_dir(split)) if windowed(ctx.job, split) else source


def token_probe(job: JobSpec, split: str, source: SourceSpec,
                encoder: Callable[[], object]) -> Callable[[Manifest], float]:
    """What sizes `rows_per_shard = "auto"`: mean tokens per row of a seeded sample of a probe
    manifest (called, and the encoder built, only when an auto size is first chosen)."""
    return lambda probe: estimate_tokens_per_row(probe, split, source, encoder(), job.run.seed + 11)


def manifest_for(ctx: RunContext, split: str) -> Manifest:
    if windowed(ctx.job, split):
        cut_windows(ctx, split, input_source(ctx.job, split), lambda: make_encoder(ctx, split, documents=True))
    source = source_for(ctx, split)
    tokens_per_row = token_probe(ctx.job, split, source, lambda: make_encoder(ctx, split))
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


def template_text(job: JobSpec) -> str | None:
    """The Jinja text of data.template_file (None when no split uses format "template")."""
    if not job.data.template_file:
        return None
    path = job.resolve_path(job.data.template_file)
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataFormatError(f"data.template_file: cannot read {path}: {exc}") from None


def encoding_settings(job: JobSpec, split: str, now: str | None = None, documents: bool = False) -> EncodingSettings:
    """How the split's rows are encoded. A windowed text split is read as its cut windows, or
    with `documents` as the documents themselves (to cut them, or to count their windows)."""
    data = job.data
    fmt = data.format_of(split == POOL)
    windows = "cut" if windowed(job, split) and not documents else data.text_windows
    return EncodingSettings(fmt, data.max_length, data.truncation, data.system_prompt,
                            template_text(job) if fmt == "template" else None, now, windows)


def render_record(ctx: RunContext) -> dict:
    """The inputs a template reads besides the row, fixed at the run's first encode and read by
    every later one (a resume, `iprox-ray score` of a new target): the instant its clock shows,
    and the template file's digest (a changed file refuses)."""
    path = ctx.layout.render_record
    template = template_text(ctx.job)
    digest = hashlib.sha256(template.encode()).hexdigest() if template is not None else None
    if not path.exists():
        atomic_write_json(path, {"now": datetime.now().isoformat(timespec="seconds"), "template_sha256": digest})
    record = read_json(path)
    if digest is not None and record.get("template_sha256") not in (None, digest):
        raise DataFormatError(f"data.template_file {ctx.job.data.template_file} changed since run directory "
                              f"{ctx.layout.root} was started; restore it, or use --force-new to start anew")
    return record


def encoding_for(ctx: RunContext, split: str, documents: bool = False) -> EncodingSettings:
    """The settings every encoder of this run's split is built from (driver and workers)."""
    return encoding_settings(ctx.job, split, render_record(ctx)["now"], documents)


def render_now(run_dir: Path | None) -> str | None:
    """A run directory's recorded template clock, if it has one (`iprox-ray plan --run-dir`)."""
    path = RunLayout(Path(run_dir)).render_record if run_dir is not None else None
    return read_json(path)["now"] if path is not None and path.exists() else None


def encoder_for(job: JobSpec, split: str, now: str | None = None, documents: bool = False):
    """An encoder outside a run directory (`iprox-ray plan`, the settings check)."""
    return build_encoder(encoding_settings(job, split, now, documents), load_tokenizer(tokenizer_path(job)))


def make_encoder(ctx: RunContext, split: str, documents: bool = False):
    return build_encoder(encoding_for(ctx, split, documents), load_tokenizer(tokenizer_path(ctx.job)))


def check_data_formats(job: JobSpec) -> None:
    """The settings check: each split's format can be built with this tokenizer (a chat template
    where "chat" needs one, an eos token for "tulu", a readable template file)."""
    tokenizer = load_tokenizer(tokenizer_path(job))
    for split in (POOL, target_split(MAIN_TARGET)):
        build_encoder(encoding_settings(job, split, documents=True), tokenizer)


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


def encode_sample(ctx: RunContext, manifest: Manifest, chosen: dict[int, list[int]], encoder) -> list[Encoded]:
    """Encoded pool rows of a sample, in sample order; quarantined rows are simply absent."""
    out: list[Encoded] = []
    source = source_for(ctx, POOL)
    for shard_id, local_rows in sorted(chosen.items()):
        rows = read_shard(POOL, manifest.shards[shard_id], source, encoder, only=set(local_rows))
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

