"""The selected rows come back in the input's own format, best first."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import make_pool, write_parquet

from iprox_ray.corpus.manifest import freeze_manifest
from iprox_ray.stages.select import SELECTION_SCHEMA
from iprox_ray.stages.subset import write_subset


def _selection(picks):
    return pa.Table.from_pylist(
        [{"sample_id": str(i), "score": 1.0 - n / 10, "rank": n + 1, "source_file": str(f), "source_row": r,
          "domain": "", "store_row": 0} for n, (i, f, r) in enumerate(picks)], schema=SELECTION_SCHEMA)


def _manifest(tmp_path, pattern, rows_per_shard=4):
    return freeze_manifest([pattern], "auto", tmp_path, rows_per_shard, tmp_path / "m.parquet", tmp_path / "m.json", {})


def test_jsonl_subset_keeps_the_original_lines(tmp_path):
    lines = [json.dumps({"id": f"r{i}", "prompt": f"p{i}", "response": f"x{i}", "extra": i}) for i in range(11)]
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines))  # no trailing newline on the last line
    manifest = _manifest(tmp_path, "in.jsonl")
    out = write_subset(_selection([("r9", path, 9), ("r10", path, 10), ("r2", path, 2)]), manifest, tmp_path / "o")
    assert out.read_text().splitlines() == [lines[9], lines[10], lines[2]]


def test_parquet_subset_across_files_in_rank_order(tmp_path):
    rows = make_pool(20)
    a = write_parquet(rows[:10], tmp_path / "a.parquet")
    b = write_parquet(rows[10:], tmp_path / "b.parquet")
    manifest = _manifest(tmp_path, "*.parquet")
    out = write_subset(_selection([("x", b, 3), ("y", a, 0), ("z", b, 0)]), manifest, tmp_path / "o")
    assert pq.read_table(out).column("id").to_pylist() == [rows[13]["id"], rows[0]["id"], rows[10]["id"]]


def test_save_to_disk_subset_loads_with_datasets(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = make_pool(9)
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "hf"))
    manifest = _manifest(tmp_path, "hf")
    arrow = manifest.files[0].file
    out = write_subset(_selection([("a", arrow, 7), ("b", arrow, 1)]), manifest, tmp_path / "o")
    loaded = datasets.load_from_disk(str(out))
    assert loaded["id"] == [rows[7]["id"], rows[1]["id"]]
    assert loaded.features == datasets.load_from_disk(str(tmp_path / "hf")).features
