"""One driver stage of the scale benchmark (bench/scale/driver.py), run in its own process.

    python -m bench.scale.stages STAGE WORKDIR ROWS DIM K

prints one JSON line {"stage", "seconds", ...}; the parent reads this process's peak RSS with
os.wait4. Synthetic data (no model, bench/scale/common.py): Parquet inputs with id/domain columns,
and a pool store whose sketch rows are random unit rows. The product stages run through their own
entry points (run_score, run_select) with a real RunContext whose JobSpec names no real model (none
is loaded).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.scale.common import (
    DUP_EVERY,
    ROWS_PER_FILE,
    RR_MEMORY_GIB,
    TARGET,
    TARGET_EXAMPLES,
    context,
    domains_of,
    ids_of,
    load_manifest,
    write_inputs,
    write_manifest,
)
from iprox_ray.store.layout import POOL, score_array, target_split
from iprox_ray.store.sketch_store import OK, SplitStore

# Each stage imports the product modules it calls inside its function, so a stage's peak RSS
# holds only what that stage loads (run_score and run_select import torch through the product).


def stage_inputs(work: Path, n: int, dim: int, k: int) -> dict:
    return write_inputs(work, n)


def stage_manifest(work: Path, n: int, dim: int, k: int) -> dict:
    return write_manifest(work, k)


def stage_store(work: Path, n: int, dim: int, k: int) -> dict:
    """The pool store filled in batches of whole shards, plus a 64-example target split."""
    from iprox_ray.store.batched_reads import shard_batches

    ctx = context(work, k, "topk")
    manifest = load_manifest(ctx)
    S = manifest.rows_per_shard
    pool = SplitStore.create(ctx.layout.store, POOL, manifest.n_shards, S, dim, attrs={})
    file_first = np.concatenate([[0], np.cumsum([f.n_rows for f in manifest.files])])
    rng = np.random.default_rng(1)
    g_arr = pool.group
    for span in shard_batches(pool):
        rows = np.arange(span.start, span.stop, dtype=np.int64)
        shard, local = rows // S, rows % S
        valid = local < manifest.shard_n_rows[shard]
        g = file_first[manifest.file_index[shard]] + manifest.row_start[shard] + local
        m = len(rows)
        sketch = rng.standard_normal((m, dim), dtype=np.float32)
        sketch /= np.linalg.norm(sketch, axis=1, keepdims=True)
        sketch[~valid] = 0
        g_arr["sketch"][span] = sketch.astype(np.float16)
        g_arr["sketch_norm"][span] = np.where(valid, rng.gamma(2.0, 1.0, m), 0).astype(np.float32)
        g_arr["loss"][span] = np.where(valid, rng.gamma(4.0, 0.5, m), 0).astype(np.float32)
        g_arr["n_tokens"][span] = np.where(valid, rng.integers(16, 1024, m), 0).astype(np.int32)
        g_arr["written"][span] = np.where(valid, OK, 0).astype(np.uint8)
        g_arr["sample_id"][span] = np.where(valid, ids_of(g), "")
        g_arr["domain"][span] = np.where(valid, domains_of(g), "")
    target = SplitStore.create(ctx.layout.store, target_split(TARGET), 1, TARGET_EXAMPLES, dim, attrs={})
    t = rng.standard_normal((TARGET_EXAMPLES, dim), dtype=np.float32)
    norms = np.linalg.norm(t, axis=1)
    target.write_shard(0, (t / norms[:, None]).astype(np.float16), {
        "sample_id": np.array([f"t{i}" for i in range(TARGET_EXAMPLES)]), "domain": np.full(TARGET_EXAMPLES, "target"),
        "subtask": np.full(TARGET_EXAMPLES, ""), "n_tokens": np.full(TARGET_EXAMPLES, 100, np.int32),
        "loss": np.ones(TARGET_EXAMPLES, np.float32), "sketch_norm": norms.astype(np.float32),
        "written": np.full(TARGET_EXAMPLES, OK, np.uint8)})
    return {"store_rows": pool.n_rows}


def stage_dedup(work: Path, n: int, dim: int, k: int) -> dict:
    """What run_dedup does: find_duplicates (its default budget, as a run), mark_duplicates, the
    quarantine records."""
    from iprox_ray.corpus.shard_reader import QUARANTINE_SCHEMA
    from iprox_ray.stages.dedup import find_duplicates, mark_duplicates, quarantine_batches

    ctx = context(work, k, "topk")
    store = SplitStore.open(ctx.layout.store, POOL)
    dup_rows, first_rows = find_duplicates(store, spill_dir=ctx.layout.root)
    mark_duplicates(store, dup_rows)
    out = ctx.layout.root / "duplicates.parquet"
    with pq.ParquetWriter(out, QUARANTINE_SCHEMA) as writer:
        for batch in quarantine_batches(store, load_manifest(ctx), POOL, dup_rows, first_rows):
            writer.write_batch(batch)
    expected = max(0, (n + DUP_EVERY - 2) // DUP_EVERY)  # rows g < n with g % DUP_EVERY == 1 (no N-sized array)
    return {"duplicates": int(len(dup_rows)), "expected": expected}


def stage_score(work: Path, n: int, dim: int, k: int) -> dict:
    """run_score, LESS, round-robin mode: the aggregated score array plus per-example candidates
    (ColumnTopK over [S, 64] blocks), after check_round_robin_budget."""
    from iprox_ray.stages.score import run_score

    ctx = context(work, k, "round-robin")
    name = run_score(ctx, target_split(TARGET), TARGET)
    return {"array": name}


def stage_topk(work: Path, n: int, dim: int, k: int) -> dict:
    """run_select, strategy topk (topk_stream over the score chunks; selection.parquet records)."""
    from iprox_ray.stages.select import run_select

    ctx = context(work, k, "topk")
    info = run_select(ctx, score_array(TARGET), load_manifest(ctx), TARGET + "-topk")
    return {"selected": info["selected"], "cutoff": info["cutoff"]}


def stage_roundrobin(work: Path, n: int, dim: int, k: int) -> dict:
    """check_round_robin_budget, then run_select, strategy round-robin (candidates -> round_robin)."""
    from iprox_ray.stages.rr_candidates import check_round_robin_budget
    from iprox_ray.stages.select import run_select

    ctx = context(work, k, "round-robin")
    check_round_robin_budget(TARGET_EXAMPLES, k, RR_MEMORY_GIB)
    info = run_select(ctx, score_array(TARGET), load_manifest(ctx), TARGET)
    return {"selected": info["selected"], "strategy": info["strategy"]}


def stage_domains(work: Path, n: int, dim: int, k: int) -> dict:
    from iprox_ray.stages.report import pool_domain_counts

    counts = pool_domain_counts(SplitStore.open(context(work, k, "topk").layout.store, POOL))
    return {"domains": len(counts), "rows": sum(counts.values())}


def stage_midppl(work: Path, n: int, dim: int, k: int) -> dict:
    """MidPplScorer.build(keep=k), then .block per shard into a streaming top-k."""
    from iprox_ray.influence.topk import StreamingTopK
    from iprox_ray.methods.mid_ppl import MidPplScorer

    pool = SplitStore.open(context(work, k, "topk").layout.store, POOL)
    scorer = MidPplScorer.build(pool, 0.5, keep=k)
    top = StreamingTopK(k)
    for shard_id in range(pool.n_shards):
        top.push(scorer.block(shard_id)[:, 0], shard_id * pool.rows_per_shard)
    rows, _ = top.result()
    return {"selected": int(len(rows)), "exact_band_rows": scorer.info["exact_band_rows"]}


def stage_selgen(work: Path, n: int, dim: int, k: int) -> dict:
    """A selection of k distinct input rows in a random rank order (data generation), where top-k
    would write it: the subset stage measured without a sketch store and scores."""
    from iprox_ray.stages.select import SELECTION_SCHEMA

    ctx = context(work, k, "topk")
    names = pa.array([f.file for f in load_manifest(ctx).files], pa.string())
    rng = np.random.default_rng(2)
    step = n / k
    g = (np.arange(k) * step + rng.uniform(0, step, k)).astype(np.int64)[rng.permutation(k)]  # distinct rows
    path = ctx.layout.selection(TARGET + "-topk")
    path.parent.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(path, SELECTION_SCHEMA) as writer:
        for lo in range(0, k, 1 << 18):
            part = g[lo: lo + (1 << 18)]
            m = len(part)
            writer.write_table(pa.table({
                "sample_id": pa.array(ids_of(part)), "score": pa.array(np.zeros(m)),
                "rank": pa.array(np.arange(lo + 1, lo + m + 1)), "weight": pa.array(np.ones(m)),
                "source_file": names.take(pa.array(part // ROWS_PER_FILE)),
                "source_row": pa.array(part % ROWS_PER_FILE), "domain": pa.array(domains_of(part)),
                "store_row": pa.array(part), "picked_by": pa.nulls(m, pa.string())}, schema=SELECTION_SCHEMA))
    return {"selected": k}


def stage_subset(work: Path, n: int, dim: int, k: int) -> dict:
    """write_subset of the top-k selection over the Parquet inputs (the columns Run.finish_target reads)."""
    from iprox_ray.stages.subset import write_subset

    ctx = context(work, k, "topk")
    path = ctx.layout.selection(TARGET + "-topk")
    out = write_subset(path, load_manifest(ctx), ctx.layout.subset(TARGET + "-topk"))
    written, selected = pq.ParquetFile(out).metadata.num_rows, pq.ParquetFile(path).metadata.num_rows
    first = pq.ParquetFile(out).read_row_group(0, columns=["id"]).column("id")[0].as_py()
    want = pq.ParquetFile(path).read_row_group(0, columns=["sample_id"]).column("sample_id")[0].as_py()
    if written != selected or first != want:
        raise AssertionError(f"subset has {written} rows (first {first!r}); selection {selected}")
    return {"rows": written}


QUARANTINE_EVERY = 100  # synthetic quarantine records: 1 % of the pool's rows


def stage_qgen(work: Path, n: int, dim: int, k: int) -> dict:
    """Synthetic quarantine records (data generation): every 100th input row, one file per shard."""
    from iprox_ray.corpus.shard_reader import QUARANTINE_SCHEMA
    from iprox_ray.store.layout import shard_file

    ctx = context(work, k, "topk")
    manifest = load_manifest(ctx)
    folder = ctx.layout.quarantine_dir(POOL)
    folder.mkdir(parents=True, exist_ok=True)
    reasons = np.array(["empty-text", "too-long", "template-error", "malformed-json"])
    records = 0
    for shard in range(manifest.n_shards):
        local = np.arange(-manifest.row_start[shard] % QUARANTINE_EVERY, manifest.shard_n_rows[shard], QUARANTINE_EVERY)
        rows = manifest.row_start[shard] + local
        m = len(rows)
        table = pa.table({
            "split": pa.array(np.full(m, POOL)), "shard_id": pa.array(np.full(m, shard, np.int64)),
            "file": pa.array(np.full(m, manifest.files[manifest.file_index[shard]].file)),
            "row": pa.array(rows.astype(np.int64)), "sample_id": pa.array(np.strings.add("q", rows.astype(str))),
            "reason": pa.array(reasons[rows % len(reasons)]), "detail": pa.array(np.full(m, "synthetic"))},
            schema=QUARANTINE_SCHEMA)
        pq.write_table(table, shard_file(folder, shard))
        records += m
    return {"records": records}


def stage_quarantine(work: Path, n: int, dim: int, k: int) -> dict:
    """What a run does with quarantine records on every run and resume: merge_quarantine (the
    merged file and the per-reason counts of the summary) and the post-sketch check."""
    from types import SimpleNamespace

    from iprox_ray.stages.preflight import check_sketched
    from iprox_ray.stages.report import merge_quarantine

    ctx = context(work, k, "topk")
    counts = merge_quarantine(ctx)
    check_sketched(ctx, {POOL: SimpleNamespace(n_rows=load_manifest(ctx).n_rows)})
    return {"records": int(sum(counts.values())), "reasons": len(counts)}


STAGES = {name[len("stage_"):]: fn for name, fn in globals().items() if name.startswith("stage_")}


def main(argv: list[str]) -> None:
    stage, work, n, dim, k = argv[0], Path(argv[1]), int(float(argv[2])), int(argv[3]), int(argv[4])
    start = time.perf_counter()
    info = STAGES[stage](work, n, dim, k)
    print(json.dumps({"stage": stage, "seconds": time.perf_counter() - start, **info}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
