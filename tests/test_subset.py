"""The selected rows come back in the input's own format, best first."""

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from iprox_ray.corpus.manifest import freeze_manifest
from iprox_ray.corpus.sources import CorpusError
from iprox_ray.stages import subset
from iprox_ray.stages.select import SELECTION_SCHEMA
from iprox_ray.stages.subset import write_subset

from conftest import make_pool, write_parquet


def _selection(tmp_path, picks, row_group_size=None):
    """A selection Parquet of these (sample id, file, row) picks, best first."""
    table = pa.Table.from_pylist(
        [{"sample_id": str(i), "score": 1.0 - n / 10, "rank": n + 1, "source_file": str(f), "source_row": r,
          "domain": "", "store_row": 0} for n, (i, f, r) in enumerate(picks)], schema=SELECTION_SCHEMA)
    path = tmp_path / "selection.parquet"
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def _manifest(tmp_path, pattern, rows_per_shard=4):
    return freeze_manifest([pattern], "auto", tmp_path, rows_per_shard, tmp_path / "m.parquet", tmp_path / "m.json", {})


def test_jsonl_subset_keeps_the_original_lines(tmp_path):
    lines = [json.dumps({"id": f"r{i}", "prompt": f"p{i}", "response": f"x{i}", "extra": i}) for i in range(11)]
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines))  # no trailing newline on the last line
    manifest = _manifest(tmp_path, "in.jsonl")
    out = write_subset(_selection(tmp_path, [("r9", path, 9), ("r10", path, 10), ("r2", path, 2)]), manifest,
                       tmp_path / "o" / "selected")
    assert out.read_text().splitlines() == [lines[9], lines[10], lines[2]]


def test_parquet_subset_across_files_in_rank_order(tmp_path):
    rows = make_pool(20)
    a = write_parquet(rows[:10], tmp_path / "a.parquet")
    b = write_parquet(rows[10:], tmp_path / "b.parquet")
    manifest = _manifest(tmp_path, "*.parquet")
    out = write_subset(_selection(tmp_path, [("x", b, 3), ("y", a, 0), ("z", b, 0)]), manifest,
                       tmp_path / "o" / "selected")
    assert pq.read_table(out).column("id").to_pylist() == [rows[13]["id"], rows[0]["id"], rows[10]["id"]]


def test_save_to_disk_subset_loads_with_datasets(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = make_pool(9)
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "hf"))
    manifest = _manifest(tmp_path, "hf")
    arrow = manifest.files[0].file
    out = write_subset(_selection(tmp_path, [("a", arrow, 7), ("b", arrow, 1)]), manifest, tmp_path / "o" / "selected")
    loaded = datasets.load_from_disk(str(out))
    assert loaded["id"] == [rows[7]["id"], rows[1]["id"]]
    assert loaded.features == datasets.load_from_disk(str(tmp_path / "hf")).features


def _random_picks(files_rows, k, seed):
    """k distinct (file, row) picks in a seeded random (rank) order."""
    everything = [(f, r) for f, n in files_rows for r in range(n)]
    order = np.random.default_rng(seed).permutation(len(everything))[:k]
    return [(f"s{n}", everything[i][0], everything[i][1]) for n, i in enumerate(order.tolist())]


@pytest.mark.parametrize("memory_bytes", [1, 2000, 256 << 20])  # spill after every piece, a few runs, none
def test_parquet_subset_matches_a_whole_file_reference(tmp_path, memory_bytes, monkeypatch):
    rows = make_pool(300)
    a = write_parquet(rows[:170], tmp_path / "a.parquet", row_group_size=16)  # 11 row groups
    b = write_parquet(rows[170:], tmp_path / "b.parquet", row_group_size=50)
    manifest = _manifest(tmp_path, "*.parquet", rows_per_shard=32)
    picks = _random_picks([(a, 170), (b, 130)], 40, seed=1) + [("g0", a, 0), ("g10", a, 169)]
    read = []
    original = pq.ParquetFile.read_row_groups
    monkeypatch.setattr(pq.ParquetFile, "read_row_groups",
                        lambda self, groups, **kw: read.append(list(groups)) or original(self, groups, **kw))
    out = write_subset(_selection(tmp_path, picks), manifest, tmp_path / "o" / "selected", memory_bytes=memory_bytes)
    whole = {str(a): pq.read_table(a), str(b): pq.read_table(b)}
    want = pa.concat_tables([whole[str(f)].slice(r, 1) for _, f, r in picks])
    got = pq.read_table(out)
    assert got.equals(want) and got.schema.metadata == want.schema.metadata
    assert all(len(groups) == 1 for groups in read)  # one row group at a time ...
    groups_a = {(r // 16) for _, f, r in picks if f == a}
    assert len(read) == len(groups_a) + len({(r // 50) for _, f, r in picks if f == b})  # ... each needed one once
    assert {0, 10} <= groups_a and len(groups_a) > 2
    assert not list((tmp_path / "o").glob(".subset-*"))  # the spill folder is gone


@pytest.mark.parametrize("memory_bytes", [1, 256 << 20])
def test_jsonl_subset_across_shards_keeps_bytes(tmp_path, memory_bytes):
    rng = np.random.default_rng(2)
    lines = [json.dumps({"id": f"r{i}", "pad": "z" * int(rng.integers(0, 30))}).encode() for i in range(200)]
    ends = [b"\r\n" if i % 3 == 0 else b"\n" for i in range(200)]
    (tmp_path / "a.jsonl").write_bytes(b"".join(x + e for x, e in zip(lines[:120], ends[:120])))
    (tmp_path / "b.jsonl").write_bytes(b"".join(x + e for x, e in zip(lines[120:], ends[120:]))[:-1])  # no final \n
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    manifest = _manifest(tmp_path, "*.jsonl", rows_per_shard=7)
    picks = _random_picks([(a, 120), (b, 80)], 60, seed=3) + [("last", b, 79)]
    out = write_subset(_selection(tmp_path, picks), manifest, tmp_path / "o" / "selected", memory_bytes=memory_bytes)
    source = {a: (lines[:120], ends[:120]), b: (lines[120:], ends[120:-1] + [b"\n"])}
    assert out.read_bytes() == b"".join(source[f][0][r] + source[f][1][r] for _, f, r in picks)


def test_compatible_schemas_are_unified_in_the_output(tmp_path):
    pq.write_table(pa.table({"id": ["a0", "a1"], "score": [None, None]}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"id": ["b0", "b1"], "score": [1.5, 2.5], "extra": [1, 2]}), tmp_path / "b.parquet")
    manifest = _manifest(tmp_path, "*.parquet")
    out = write_subset(_selection(tmp_path, [("x", tmp_path / "b.parquet", 1), ("y", tmp_path / "a.parquet", 0)]),
                       manifest, tmp_path / "o" / "selected")
    assert pq.read_table(out).to_pylist() == [{"id": "b1", "score": 2.5, "extra": 2},
                                              {"id": "a0", "score": None, "extra": None}]


def test_a_selection_that_does_not_fit_the_manifest_is_refused(tmp_path):
    path = write_parquet(make_pool(10), tmp_path / "a.parquet")
    manifest = _manifest(tmp_path, "a.parquet")
    with pytest.raises(CorpusError, match=r"asks for row 10 of .*a.parquet, which has 10 rows"):
        write_subset(_selection(tmp_path, [("x", path, 10)]), manifest, tmp_path / "o" / "selected")
    with pytest.raises(CorpusError, match="other.parquet, which is not an input"):
        write_subset(_selection(tmp_path, [("x", tmp_path / "other.parquet", 0)]), manifest,
                     tmp_path / "o" / "selected")


def test_an_empty_selection_writes_an_empty_file_with_the_columns(tmp_path):
    path = write_parquet(make_pool(10), tmp_path / "a.parquet")
    out = write_subset(_selection(tmp_path, []), _manifest(tmp_path, "a.parquet"), tmp_path / "o" / "selected")
    table = pq.read_table(out)
    assert table.num_rows == 0 and table.schema.names == pq.read_schema(path).names


def _stream_folder(rows, folder: Path, batch_rows: int) -> Path:
    """A save_to_disk-shaped folder whose Arrow stream holds several record batches."""
    folder.mkdir()
    table = pa.Table.from_pylist(rows)
    with pa.OSFile(str(folder / "data-00000-of-00001.arrow"), "wb") as sink, \
            pa.ipc.new_stream(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=batch_rows):
            writer.write_batch(batch)
    (folder / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}))
    return folder


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "arrow"])
def test_every_bounded_path_at_once_gives_the_reference(tmp_path, fmt, monkeypatch):
    """Selection read in batches of 7, one file's pairs merged back in blocks of 5, spilled runs of
    3-row batches after every piece: the same rows in the same order as a whole-file reference."""
    monkeypatch.setattr(subset, "SELECTION_BATCH_ROWS", 7)
    monkeypatch.setattr(subset, "SPILL_BATCH_ROWS", 3)
    rows = make_pool(150)
    if fmt == "parquet":
        files = [write_parquet(rows[:90], tmp_path / "a.parquet", row_group_size=8),
                 write_parquet(rows[90:], tmp_path / "b.parquet", row_group_size=11)]
        manifest = _manifest(tmp_path, "*.parquet", rows_per_shard=16)
    elif fmt == "jsonl":
        files = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
        for f, part in zip(files, (rows[:90], rows[90:])):
            f.write_text("".join(json.dumps(r) + "\n" for r in part))
        manifest = _manifest(tmp_path, "*.jsonl", rows_per_shard=16)
    else:
        _stream_folder(rows, tmp_path / "hf", batch_rows=13)
        manifest = _manifest(tmp_path, "hf", rows_per_shard=16)
        files = [Path(manifest.files[0].file)]
    sizes = [f.n_rows for f in manifest.files]
    picks = _random_picks(list(zip(files, sizes)), 70, seed=5)
    out = write_subset(_selection(tmp_path, picks, row_group_size=9), manifest, tmp_path / "o" / "selected",
                       memory_bytes=1, block_rows=5)
    start = dict(zip(map(str, files), np.cumsum([0, *sizes[:-1]]).tolist()))
    want = [rows[start[str(f)] + r]["id"] for _, f, r in picks]
    got = ([json.loads(line)["id"] for line in out.read_text().splitlines()] if fmt == "jsonl"
           else pq.read_table(out).column("id").to_pylist() if fmt == "parquet"
           else pa.ipc.open_stream(pa.memory_map(str(out / "data-00000-of-00001.arrow"))).read_all()
           .column("id").to_pylist())
    assert got == want
    assert not list((tmp_path / "o").glob(".subset-*"))


def test_selection_keys_merge_each_file_back_in_row_order_in_bounded_blocks(tmp_path):
    manifest = type("M", (), {"files": [None] * 4})()
    keys = subset.SelectionKeys(tmp_path, manifest)
    rng = np.random.default_rng(0)
    pairs = rng.permutation([(f, r) for f in range(4) for r in range(200)])[:500]
    for lo in range(0, 500, 37):  # runs of 37 selection rows
        keys.add(pairs[lo:lo + 37, 0].astype(np.int64), pairs[lo:lo + 37, 1].astype(np.int64))
    for f in range(4):
        blocks = list(keys.blocks(f, block_rows=20))
        rows = np.concatenate([r for r, _ in blocks])
        positions = np.concatenate([p for _, p in blocks])
        mine = np.flatnonzero(pairs[:, 0] == f)
        assert rows.tolist() == sorted(pairs[mine, 1].tolist())  # every pair once, in row order
        assert positions.tolist() == mine[np.argsort(pairs[mine, 1])].tolist()  # each with its rank
        assert max(len(r) for r, _ in blocks) <= 20
