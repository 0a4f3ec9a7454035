"""What both kinds of plan start from: the seeded, tokenised sample of each split, what of it the
method sketches, each split's counts and sketch bytes, and the notes about the run's early checks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from iprox_ray.cost.counts import SplitSample, manifest_of, sample_split, shard_padded_tokens, sketch_array_bytes
from iprox_ray.cost.result import SplitCost
from iprox_ray.spec import JobSpec, SpecError
from iprox_ray.stages.rr_candidates import check_round_robin_estimate
from iprox_ray.store.layout import MAIN_TARGET, POOL, target_split
from iprox_ray.tasks.inputs import encoder_for, render_now, windowed

MAIN_SPLIT = target_split(MAIN_TARGET)  # the job file's target set, as a store split


@dataclass
class Inputs:
    """The sampled splits and what of each the sketch stage sketches."""

    samples: dict[str, SplitSample]
    share: dict[str, float]  # of a split's usable rows that get a sketch
    checkpoints: int
    seed: int
    pad_id: int


def sample_inputs(job: JobSpec, needs, sample_rows: int, run_dir: Path | None, notes: list[str]) -> Inputs:
    # Windowed text splits are sampled as documents, each counted as all its windows.
    encoders = {split: encoder_for(job, split, render_now(run_dir), documents=True) for split in (MAIN_SPLIT, POOL)}
    seed = job.run.seed + 1009  # a sample of its own, not the warm-up's
    samples = {split: sample_split(split, manifest_of(job, split, source, encoders[split]), source, encoders[split],
                                   sample_rows, seed)
               for split, source in ((MAIN_SPLIT, job.data.target), (POOL, job.data.pool))}
    for split, sample in samples.items():
        if windowed(job, split):
            notes.append(f"{split}: data.text_windows = \"all\": its {sample.manifest.n_rows} documents make about "
                         f"{sample.manifest.n_rows * sample.usable_share:.0f} window rows ({sample.usable_share:.2f} "
                         "per document in the sample); tokens, seconds and sketched rows count every window, its "
                         "rows, shards and store bytes count documents")
    pool = samples[POOL]
    usable_pool = max(1, int(round(pool.manifest.n_rows * pool.usable_share)))
    share = {MAIN_SPLIT: 1.0 if needs.target_sketch else 0.0,
             POOL: {"all": 1.0, "none": 0.0}.get(needs.pool_sketch, 1.0)}
    if needs.pool_sketch == "landmarks" and job.scoring.landmarks.sketch == "landmarks":
        share[POOL] = min(1.0, job.scoring.landmarks.count / usable_pool)
    return Inputs(samples, share, max(1, len(job.sketch.checkpoints)), seed, encoders[POOL].tokenizer.pad_token_id)


def split_costs(job: JobSpec, inputs: Inputs, dim: int,
                dtype: str) -> tuple[list[SplitCost], dict[str, dict[int, float]]]:
    """(each split's counts and sketch bytes at the store's `dtype`, each shard's padded tokens by
    split) at the job's budget."""
    costs, padded_by_split = [], {}
    for split, sample in inputs.samples.items():
        padded = shard_padded_tokens(sample, job.sketch.token_budget, job.sketch.max_batch_rows, inputs.seed)
        padded_by_split[split] = padded
        m = sample.manifest
        costs.append(SplitCost(
            split, m.n_rows, m.n_shards, m.rows_per_shard, sample.sampled, round(sample.usable_share, 4),
            round(sample.mean_tokens, 2), sample.tokens, int(round(sum(padded.values()))),
            int(round(m.n_rows * sample.usable_share * inputs.share[split])),
            sketch_array_bytes(m, dim, inputs.share[split], dtype) * inputs.checkpoints))
    return costs, padded_by_split


def common_notes(job: JobSpec, scoring, inputs: Inputs, notes: list[str]) -> None:
    n_ckpt = inputs.checkpoints
    if n_ckpt > 1:
        notes.append(f"{n_ckpt} checkpoints: the first was sized; seconds and model memory scaled by {n_ckpt}")
    if job.selection.strategy == "round-robin" and not scoring.single_score:
        t_sample, pool = inputs.samples[MAIN_SPLIT], inputs.samples[POOL]
        try:  # the preflight's own check, from the samples' usable shares
            check_round_robin_estimate(job.selection, max(1, round(t_sample.manifest.n_rows * t_sample.usable_share)),
                                       pool.manifest.n_rows, pool.usable_share)
        except SpecError as exc:
            notes.append(f"the run would stop at preflight: {exc}")
