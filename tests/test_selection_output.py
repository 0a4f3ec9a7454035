"""The selection written in batches, memory independent of k (issue 24 item 9): the streamed top-k
equals the in-memory one row for row (ties, NaN, ±inf, -0.0, partitions cut inside a bin), no
Python record per selected row, and quarantine records counted by Arrow."""

from __future__ import annotations

import tracemalloc
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from iprox_ray.influence.topk import topk_stream
from iprox_ray.stages import selection_output
from iprox_ray.stages.selection_output import write_top_k
from iprox_ray.store.sketch_store import OK, SplitStore, open_root


class FakeManifest:
    """Two input files of `half` rows each, one corpus shard per S rows (what _batch and the older
    record builder read: locate/files, shards[i].file/row_start)."""

    def __init__(self, n_shards: int, S: int):
        half = n_shards // 2
        self.files = [SimpleNamespace(file="a.parquet"), SimpleNamespace(file="b.parquet")]
        self.file_index = np.array([0 if i < half else 1 for i in range(n_shards)])
        self.row_start = np.array([(i if i < half else i - half) * S for i in range(n_shards)])
        self.rows_per_shard = S
        self.shards = [SimpleNamespace(file=self.files[f].file, row_start=int(r))
                       for f, r in zip(self.file_index, self.row_start)]

    def locate(self, rows):
        rows = np.asarray(rows, dtype=np.int64)
        shard = rows // self.rows_per_shard
        return self.file_index[shard], self.row_start[shard] + rows % self.rows_per_shard


def _store(tmp_path, n_shards=24, S=50, seed=0, ties=False):
    pool = SplitStore.create(tmp_path / "store.zarr", "pool", n_shards, S, 1, {})
    n = n_shards * S
    rng = np.random.default_rng(seed)
    pool.group["sample_id"][:] = np.array([f"id{i}" for i in range(n)])
    pool.group["domain"][:] = rng.choice(["math", "code", ""], n)
    pool.group["written"][:] = np.full(n, OK, np.uint8)
    values = np.round(rng.normal(size=n), 1 if ties else 6).astype(np.float32)
    values[rng.random(n) < 0.05] = np.nan
    values[rng.random(n) < 0.01] = np.inf
    values[rng.random(n) < 0.01] = -np.inf
    values[rng.random(n) < 0.02] = -0.0
    values[rng.random(n) < 0.02] = 0.0
    scores = open_root(tmp_path / "store.zarr").create_array("scores/t", shape=(n,), chunks=(S,), dtype="float32",
                                                             fill_value=np.nan)
    scores[:] = values
    return pool, scores, values


@pytest.mark.parametrize("k,ties,batch", [(100, False, 7), (100, True, 7), (700, True, 64), (5000, False, 1 << 20),
                                          (1, True, 1)])
def test_streamed_top_k_equals_the_in_memory_selection(tmp_path, k, ties, batch):
    pool, scores, values = _store(tmp_path, ties=ties)
    manifest = FakeManifest(pool.n_shards, pool.rows_per_shard)
    path = tmp_path / "selection.parquet"
    info = write_top_k(path, scores, pool, manifest, k, 1000.0, spill_dir=tmp_path, batch_rows=batch)
    rows, top, non_finite = topk_stream(((o, values[o : o + 50]) for o in range(0, len(values), 50)), k)
    got = pq.read_table(path)
    assert got.column("store_row").to_pylist() == rows.tolist()
    assert got.column("score").to_pylist() == top.tolist()
    assert got.column("rank").to_pylist() == list(range(1, len(rows) + 1))
    assert got.column("sample_id").to_pylist() == [f"id{r}" for r in rows]
    assert got.column("domain").to_pylist() == pool.read("domain")[rows].tolist()
    file_index, source_row = manifest.locate(rows)
    assert got.column("source_file").to_pylist() == [manifest.files[i].file for i in file_index]
    assert got.column("source_row").to_pylist() == source_row.tolist()
    assert got.column("weight").to_pylist() == [1000.0 / len(rows)] * len(rows)
    assert info["selected"] == len(rows) and info["non_finite"] == non_finite
    assert info["cutoff"] == top[-1]
    assert not list(tmp_path.glob("select-*"))  # the spill is removed


def test_selecting_many_rows_holds_no_python_record_per_row(tmp_path, monkeypatch):
    """run_select of k = 150,000 rows: the Python heap stays far below one record per selected row
    (a dict per row was ~1 KB: 150 MB here)."""
    from iprox_ray.execution.context import RunContext
    from iprox_ray.spec import JobSpec
    from iprox_ray.stages.select import run_select
    from iprox_ray.store.layout import RunLayout

    S, n_shards, k = 1000, 200, 150_000
    layout = RunLayout(tmp_path / "run")
    pool = SplitStore.create(layout.store, "pool", n_shards, S, 1, {})
    n = n_shards * S
    pool.group["sample_id"][:] = np.array([f"sample-{i:08d}" for i in range(n)])
    pool.group["domain"][:] = np.where(np.arange(n) % 3 == 0, "math", "code")
    pool.group["written"][:] = np.full(n, OK, np.uint8)
    scores = open_root(layout.store).create_array("scores/t", shape=(n,), chunks=(S,), dtype="float32",
                                                  fill_value=np.nan)
    scores[:] = np.random.default_rng(0).normal(size=n).astype(np.float32)
    job = JobSpec.model_validate({"model": {"path": str(tmp_path)},
                                  "data": {"pool": {"paths": ["x"]}, "target": {"paths": ["x"]}},
                                  "selection": {"k": k}})
    ctx = RunContext(job, layout, quiet=True)
    monkeypatch.setattr(selection_output, "BATCH_ROWS", 1 << 15)
    tracemalloc.start()
    try:
        info = run_select(ctx, "scores/t", FakeManifest(n_shards, S), "t")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info["selected"] == k and pq.ParquetFile(info["selection"]).metadata.num_rows == k
    assert peak < 60 << 20, f"{peak / 2**20:.0f} MiB traced"  # was 138 MiB; now ~35 (13 once warm)


def test_quarantine_is_counted_without_a_python_record_per_row(tmp_path):
    """merge_quarantine and the post-sketch check on 300,000 quarantine records: counted by Arrow,
    the Python heap stays far below one object per record (to_pylist of them all was ~200 MB)."""
    from iprox_ray.corpus.shard_reader import QUARANTINE_SCHEMA
    from iprox_ray.stages.preflight import NoUsableRowsError, check_sketched
    from iprox_ray.stages.report import merge_quarantine
    from iprox_ray.store.layout import RunLayout

    layout = RunLayout(tmp_path / "run")
    n = 100_000
    for shard in range(3):
        rows = np.arange(shard * n, (shard + 1) * n)
        table = pa.table({"split": pa.array(["pool"] * n), "shard_id": pa.array(np.full(n, shard)),
                          "file": pa.array(["f.jsonl"] * n), "row": pa.array(rows),
                          "sample_id": pa.array(np.char.add("s", rows.astype(str))),
                          "reason": pa.array(["empty-text"] * (n - n // 4) + ["too-long"] * (n // 4)),
                          "detail": pa.array(["d"] * n)}, schema=QUARANTINE_SCHEMA)
        path = layout.quarantine_shard("pool", shard)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
    ctx = SimpleNamespace(layout=layout)
    tracemalloc.start()
    try:
        counts = merge_quarantine(ctx)
        check_sketched(ctx, {"pool": SimpleNamespace(n_rows=3 * n + 1)})  # one usable row: no error
        with pytest.raises(NoUsableRowsError, match=r"300000 of 300000 quarantined \(empty-text: 225000, "
                                                    r"too-long: 75000; e\.g\. row 0 of f\.jsonl"):
            check_sketched(ctx, {"pool": SimpleNamespace(n_rows=3 * n)})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 << 20, f"{peak / 2**20:.0f} MiB traced"
    assert counts == {("pool", "empty-text"): 225_000, ("pool", "too-long"): 75_000}
    assert pq.ParquetFile(layout.quarantine_all).metadata.num_rows == 3 * n


def test_many_small_quarantine_files_merge_into_few_row_groups(tmp_path):
    """A row group per shard file would grow quarantine.parquet's footer (held in memory until the
    writer closes) with the pool's shard count; records are grouped instead, none lost."""
    from iprox_ray.corpus.shard_reader import QUARANTINE_SCHEMA
    from iprox_ray.stages import report
    from iprox_ray.store.layout import RunLayout

    layout = RunLayout(tmp_path / "run")
    for shard in range(40):
        table = pa.table({"split": ["pool"] * 3, "shard_id": [shard] * 3, "file": ["f.jsonl"] * 3,
                          "row": [3 * shard, 3 * shard + 1, 3 * shard + 2], "sample_id": ["a", "b", "c"],
                          "reason": ["too-long"] * 3, "detail": ["d"] * 3}, schema=QUARANTINE_SCHEMA)
        path = layout.quarantine_shard("pool", shard)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
    original = report.QUARANTINE_GROUP_ROWS
    try:
        report.QUARANTINE_GROUP_ROWS = 50
        counts = report.merge_quarantine(SimpleNamespace(layout=layout))
    finally:
        report.QUARANTINE_GROUP_ROWS = original
    merged = pq.ParquetFile(layout.quarantine_all)
    assert counts == {("pool", "too-long"): 120}
    assert merged.metadata.num_rows == 120 and merged.num_row_groups == 3  # 51 + 51 + 18
    assert sorted(pq.read_table(layout.quarantine_all).column("row").to_pylist()) == list(range(120))
