"""Stage: select. Numba top-k streamed over the score array; selection.parquet with provenance."""

from __future__ import annotations

import pyarrow as pa

from iprox_ray.corpus.manifest import Manifest
from iprox_ray.influence.topk import topk_stream
from iprox_ray.stages.context import RunContext
from iprox_ray.store.atomic import atomic_write_parquet, read_json
from iprox_ray.store.sketch_store import OK, SplitStore, open_root

SELECTION_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("score", pa.float64()),
        ("rank", pa.int64()),
        ("source_file", pa.string()),
        ("source_row", pa.int64()),
        ("domain", pa.string()),
        ("store_row", pa.int64()),
    ]
)


def count_valid(pool: SplitStore) -> int:
    return int(sum((block == OK).sum() for _, block in pool.iter_blocks("written")))


def run_select(ctx: RunContext, scores_name: str, manifest: Manifest, target_name: str) -> dict:
    stage = f"select-{target_name}"
    done = ctx.stage_done(stage)
    if done:
        return done
    pool = SplitStore.open(ctx.layout.store, "pool")
    scores = open_root(ctx.layout.store)[scores_name]
    valid = count_valid(pool)
    k = ctx.job.selection.size_for(valid)
    S = pool.rows_per_shard
    chunks = ((start, scores[start : start + S]) for start in range(0, pool.n_rows, S))
    rows, values, non_finite = topk_stream(chunks, k)
    sample_ids = pool.gather("sample_id", rows)
    domains = pool.gather("domain", rows)
    records = []
    for rank, (row, score) in enumerate(zip(rows.tolist(), values.tolist()), start=1):
        shard = manifest.shards[row // S]
        records.append({
            "sample_id": str(sample_ids[rank - 1]), "score": float(score), "rank": rank,
            "source_file": shard.file, "source_row": shard.row_start + row % S,
            "domain": str(domains[rank - 1]), "store_row": row,
        })
    path = ctx.layout.selection(target_name)
    atomic_write_parquet(path, pa.Table.from_pylist(records, schema=SELECTION_SCHEMA))
    info = {"selection": str(path), "k": k, "valid_rows": valid,
            "non_finite_scores": non_finite - (pool.n_rows - valid),
            "cutoff": float(values[-1]) if len(values) else None}
    ctx.mark_stage_done(stage, info)
    return info


def selection_info(ctx: RunContext, target_name: str) -> dict:
    return read_json(ctx.layout.stage_done(f"select-{target_name}"))


