"""Pre-flight: stop right after the manifests when a split has no usable row.

Without it a split whose every row is quarantined (a template that masks nothing, rows all
longer than max_length under `drop`) surfaces hours later as a traceback in whichever stage
first needs a row. The target split is encoded whole; the pool, which can be huge, through a
seeded sample of at most POOL_SAMPLE_ROWS rows from at most POOL_SAMPLE_SHARDS shards. The
sketch stage's end checks the totals again from the quarantine records, for what a sample
cannot see (a run resumed past this check, a tokenizer changed in place).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from iprox_ray.corpus import system_prompt
from iprox_ray.corpus.encode import DataFormatError
from iprox_ray.corpus.manifest import Manifest
from iprox_ray.corpus.shard_reader import QUARANTINE_SCHEMA, read_shard
from iprox_ray.execution.context import RunContext
from iprox_ray.stages.rr_candidates import check_round_robin_estimate
from iprox_ray.store.atomic import atomic_write_parquet
from iprox_ray.store.layout import preflight_stage, shard_files
from iprox_ray.tasks.inputs import POOL, make_encoder, manifest_for, source_for

POOL_SAMPLE_ROWS = 256
POOL_SAMPLE_SHARDS = 16


class NoUsableRowsError(RuntimeError):
    """A split with no usable row: the message names the top quarantine reasons."""


def no_usable_rows_message(split: str, reasons: Counter, example: dict, n_rows: int, where: Path,
                           sampled_from: int | None = None) -> str:
    """`reasons`: quarantined rows per reason; `example`: one record of the most common reason."""
    top = ", ".join(f"{reason}: {n}" for reason, n in reasons.most_common(3))
    if len(reasons) > 3:
        top += f", {len(reasons) - 3} other reason(s)"
    detail = " ".join(str(example["detail"]).split())[:200]  # one line, whatever the template said
    rows = f"{sum(reasons.values())} of {n_rows}" + (f" sampled rows (of {sampled_from})" if sampled_from else "")
    return (f"no usable row in split {split!r}: {rows} quarantined ({top}; e.g. row {example['row']} of "
            f"{Path(example['file']).name}: {example['reason']}: {detail}); see {where}")


def _message_from_records(split: str, records: list[dict], n_rows: int, where: Path,
                          sampled_from: int | None = None) -> str:
    reasons = Counter(r["reason"] for r in records)
    example = next(r for r in records if r["reason"] == reasons.most_common(1)[0][0])
    return no_usable_rows_message(split, reasons, example, n_rows, where, sampled_from)


def pool_sample(manifest: Manifest, seed: int) -> dict[int, set[int]] | None:
    """Seeded local rows per shard, spread over up to POOL_SAMPLE_SHARDS shards; None: every row."""
    if manifest.n_rows <= POOL_SAMPLE_ROWS:
        return None
    rng = np.random.default_rng(seed)
    shards = np.sort(rng.choice(manifest.n_shards, size=min(manifest.n_shards, POOL_SAMPLE_SHARDS), replace=False))
    per_shard = -(-POOL_SAMPLE_ROWS // len(shards))
    out = {}
    for shard in shards.tolist():
        n = manifest.shards[shard].n_rows
        out[shard] = set(rng.choice(n, size=min(n, per_shard), replace=False).tolist())
    return out


def check_inputs(ctx: RunContext, splits: list[str]) -> None:
    """Raise NoUsableRowsError when a split's checked rows are all quarantined (once per split)."""
    todo = [split for split in splits if not ctx.stage_done(preflight_stage(split))]
    for split in todo:
        manifest = manifest_for(ctx, split)
        encoder = make_encoder(ctx, split)
        chosen = pool_sample(manifest, ctx.job.run.seed + 7) if split == POOL else None
        kept, records = 0, []
        for shard in manifest.shards:
            if chosen is None or shard.shard_id in chosen:
                rows = read_shard(split, shard, source_for(ctx, split), encoder,
                                  only=None if chosen is None else chosen[shard.shard_id])
                kept += len(rows.encoded)
                records += rows.quarantine
        seen = kept + len(records)
        refuse_system_policy(split, records, seen)
        if seen and not kept:
            where = ctx.layout.preflight_rows(split)
            atomic_write_parquet(where, pa.Table.from_pylist(records, schema=QUARANTINE_SCHEMA))
            raise NoUsableRowsError(_message_from_records(
                split, records, seen, where, manifest.n_rows if seen < manifest.n_rows else None))
        ctx.mark_stage_done(preflight_stage(split), {"checked": seen, "usable": kept})


def refuse_system_policy(split: str, records: list[dict], seen: int) -> None:
    """Rows whose system message the template drops or refuses (data.system_prompt = "keep"):
    stop before any work and name the option, rather than quarantine them all."""
    hit = [r for r in records if r["reason"] == system_prompt.REASON]
    if hit:
        detail = hit[0]["detail"].split(";")[0]
        raise DataFormatError(f"data.system_prompt: {len(hit)} of {seen} checked row(s) of split {split!r} have a "
                              f"system message the chat template cannot take ({detail}); {system_prompt.FIX}")


def check_round_robin_early(ctx: RunContext, splits: list[str]) -> None:
    """Round-robin's C × k candidates from the checked rows: a job over budget stops before any
    sketching (the pool's usable share comes from its checked sample)."""
    pool = ctx.stage_done(preflight_stage(POOL)) or {}
    share = pool.get("usable", 1) / max(1, pool.get("checked", 1))
    pool_rows = manifest_for(ctx, POOL).n_rows
    for split in splits:
        if split != POOL:
            usable = (ctx.stage_done(preflight_stage(split)) or {}).get("usable") or manifest_for(ctx, split).n_rows
            check_round_robin_estimate(ctx.job.selection, usable, pool_rows, share)


def check_sketched(ctx: RunContext, manifests: dict[str, Manifest]) -> None:
    """After the sketch stage: a split whose every row has a quarantine record has nothing to score.
    Counted from the files' metadata; the records are read (one column) only to word the error."""
    for split, manifest in manifests.items():
        folder = ctx.layout.quarantine_dir(split)
        # Shard files only (NNNNNN.parquet): dedup's duplicates.parquet comes later and is no reason.
        parts = shard_files(folder)
        if not manifest.n_rows or sum(pq.ParquetFile(p).metadata.num_rows for p in parts) < manifest.n_rows:
            continue
        reasons: Counter = Counter()
        for part in parts:
            reasons.update(reason_counts(pq.read_table(part, columns=["reason"]).column("reason")))
        top = reasons.most_common(1)[0][0]
        example = next(row for part in parts for row in _first_with(part, top))
        raise NoUsableRowsError(no_usable_rows_message(split, reasons, example, manifest.n_rows, folder))


def reason_counts(column) -> Counter:
    """{value: rows} of a text column, counted by Arrow (no Python object per row)."""
    counts = pc.value_counts(column)
    return Counter(dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist())))


def _first_with(part: Path, reason: str) -> list[dict]:
    table = pq.read_table(part)
    hit = pc.index(table.column("reason"), reason).as_py()
    return [] if hit < 0 else table.slice(hit, 1).to_pylist()
