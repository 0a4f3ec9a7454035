"""Stage: duplicate ids. Later occurrences of an id (in store row order) are quarantined.

Needs every shard, so it runs on the driver after sketching; memory is 8 bytes per row.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa

from iprox_ray.corpus.manifest import Manifest
from iprox_ray.corpus.shard_reader import QUARANTINE_SCHEMA
from iprox_ray.stages.context import RunContext
from iprox_ray.store.atomic import atomic_write_parquet
from iprox_ray.store.sketch_store import DUPLICATE, NONFINITE, NOT_SKETCHED, OK, SplitStore

CANDIDATE = (OK, NONFINITE, DUPLICATE, NOT_SKETCHED)  # rows that carry a parsed id


def _id_hash(sample_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(sample_id.encode(), digest_size=8).digest(), "little", signed=True)


def find_duplicates(store: SplitStore) -> tuple[np.ndarray, np.ndarray]:
    """(duplicate store rows, the first row holding the same id), ordered by store row."""
    rows, hashes = [], []
    for shard_id in range(store.n_shards):
        span = store.shard_rows(shard_id)
        written = store.read("written", span)
        local = np.flatnonzero(np.isin(written, CANDIDATE))
        if not len(local):
            continue
        sample_ids = store.read("sample_id", span)[local]
        rows.append(span.start + local)
        hashes.append(np.fromiter((_id_hash(s) for s in sample_ids), dtype=np.int64, count=len(local)))
    if not rows:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    rows_all, hash_all = np.concatenate(rows), np.concatenate(hashes)
    order = np.lexsort((rows_all, hash_all))
    h, r = hash_all[order], rows_all[order]
    repeat = np.flatnonzero(h[1:] == h[:-1]) + 1
    first_of_run = np.maximum.accumulate(np.where(np.r_[True, h[1:] != h[:-1]], np.arange(len(h)), 0))
    dup_rows, first_rows = r[repeat], r[first_of_run[repeat]]
    # A 64-bit hash collision must not quarantine a distinct id: compare the strings.
    ids = store.group["sample_id"]
    same = np.fromiter((ids[int(a)] == ids[int(b)] for a, b in zip(dup_rows, first_rows)), bool, len(dup_rows))
    dup_rows, first_rows = dup_rows[same], first_rows[same]
    by_row = np.argsort(dup_rows)
    return dup_rows[by_row], first_rows[by_row]


def run_dedup(ctx: RunContext, split: str, manifest: Manifest) -> int:
    stage = f"dedup-{split.replace('/', '-')}"
    done = ctx.stage_done(stage)
    if done:
        return int(done["duplicates"])
    store = SplitStore.open(ctx.layout.store, split)
    dup_rows, first_rows = find_duplicates(store)
    records = []
    S = store.rows_per_shard
    for shard_id in np.unique(dup_rows // S):
        span = store.shard_rows(int(shard_id))
        written = store.read("written", span)
        mine = dup_rows[dup_rows // S == shard_id]
        written[mine - span.start] = DUPLICATE
        store.group["written"][span] = written
    for row, first in zip(dup_rows.tolist(), first_rows.tolist()):
        shard = manifest.shards[row // S]
        first_shard = manifest.shards[first // S]
        records.append({
            "split": split, "shard_id": shard.shard_id, "file": shard.file, "row": shard.row_start + row % S,
            "sample_id": str(store.read("sample_id", slice(row, row + 1))[0]), "reason": "duplicate-id",
            "detail": f"same id as row {first_shard.row_start + first % S} of {first_shard.file}",
        })
    out = ctx.layout.quarantine_dir(split) / "duplicates.parquet"
    atomic_write_parquet(out, pa.Table.from_pylist(records, schema=QUARANTINE_SCHEMA))
    ctx.mark_stage_done(stage, {"duplicates": len(records)}, outputs=(out,))
    return len(records)
