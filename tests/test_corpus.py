import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from iprox_ray.corpus.encode import ChatEncoder
from iprox_ray.corpus.manifest import ManifestMismatchError, freeze_manifest
from iprox_ray.corpus.rows import content_id
from iprox_ray.corpus.shard_reader import read_shard
from iprox_ray.corpus.sources import CorpusError
from iprox_ray.models.loading import load_tokenizer
from iprox_ray.spec import SourceSpec

from conftest import TOKENIZER, make_pool, write_parquet


@pytest.fixture(scope="module")
def encoder():
    return ChatEncoder(load_tokenizer(TOKENIZER), max_length=96)


def _freeze(tmp_path, paths, rows_per_shard=8, fmt="auto"):
    return freeze_manifest(paths, fmt, tmp_path, rows_per_shard, tmp_path / "m.parquet", tmp_path / "m.json", {})


def _read_all(tmp_path, spec, encoder, manifest):
    kept, quarantined = [], []
    for shard in manifest.shards:
        rows = read_shard("pool", shard, spec, encoder)
        kept += rows.conversations
        quarantined += rows.quarantine
    return kept, quarantined


def test_each_bad_row_kind_is_quarantined_with_its_reason(tmp_path, encoder):
    lines = [
        json.dumps({"id": "ok1", "prompt": "What is 2+2?", "response": "4."}).encode(),
        json.dumps({"id": "nocol", "prompt": "hello"}).encode(),  # no response column
        json.dumps({"id": "empty", "prompt": "hi", "response": "   "}).encode(),
        b'{"id": "bad", "prompt": "caf\xe9", "response": "x"}',  # latin-1 byte: not UTF-8
        b'{"id": "broken", "prompt": ',  # malformed JSON
        json.dumps({"id": "long", "prompt": "word " * 400, "response": "late answer"}).encode(),
        json.dumps({"id": "ok2", "messages": [{"role": "user", "content": "Name a colour."},
                                               {"role": "assistant", "content": "Blue."}]}).encode(),
    ]
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    manifest = _freeze(tmp_path, ["rows.jsonl"], rows_per_shard=3)
    spec = SourceSpec(paths=["rows.jsonl"], id_column="id")
    kept, quarantined = _read_all(tmp_path, spec, encoder, manifest)
    assert [c.sample_id for c in kept] == ["ok1", "ok2"]
    reasons = {q["row"]: q["reason"] for q in quarantined}
    assert reasons == {1: "missing-column", 2: "empty-text", 3: "non-utf8", 4: "malformed-json",
                       5: "no-trainable-tokens"}
    assert all(q["file"] == str(path) for q in quarantined)


def test_truncated_parquet_stops_with_the_file_named(tmp_path):
    good = write_parquet(make_pool(20), tmp_path / "a.parquet")
    data = good.read_bytes()
    (tmp_path / "b.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorpusError, match="b.parquet"):
        _freeze(tmp_path, ["*.parquet"])


def test_manifest_is_frozen_and_changed_inputs_refuse(tmp_path):
    path = write_parquet(make_pool(20), tmp_path / "a.parquet", row_group_size=7)
    manifest = _freeze(tmp_path, ["a.parquet"], rows_per_shard=8)
    assert [(s.row_start, s.row_stop) for s in manifest.shards] == [(0, 8), (8, 16), (16, 20)]
    assert manifest.files[0].size == path.stat().st_size and len(manifest.files[0].checksum) == 32
    again = _freeze(tmp_path, ["a.parquet"], rows_per_shard=8)  # unchanged inputs: same manifest
    assert again.shards == manifest.shards
    write_parquet(make_pool(21), path)
    with pytest.raises(ManifestMismatchError, match="a.parquet changed"):
        _freeze(tmp_path, ["a.parquet"])
    write_parquet(make_pool(20), tmp_path / "extra.parquet")
    with pytest.raises(ManifestMismatchError, match="file list changed"):
        _freeze(tmp_path, ["*.parquet"])


def test_parquet_row_ranges_cross_row_groups(tmp_path, encoder):
    rows = make_pool(30)
    write_parquet(rows, tmp_path / "a.parquet", row_group_size=7)
    manifest = _freeze(tmp_path, ["a.parquet"], rows_per_shard=8)
    kept, quarantined = _read_all(tmp_path, SourceSpec(paths=["a.parquet"], id_column="id"), encoder, manifest)
    assert not quarantined
    assert [c.sample_id for c in kept] == [r["id"] for r in rows]


def test_save_to_disk_folder_is_read(tmp_path, encoder):
    datasets = pytest.importorskip("datasets")
    rows = make_pool(12)
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "hf"))
    manifest = _freeze(tmp_path, ["hf"], rows_per_shard=5)
    assert manifest.files[0].format == "arrow_stream"
    kept, _ = _read_all(tmp_path, SourceSpec(paths=["hf"], id_column="id", domain_column="domain"), encoder, manifest)
    assert [c.sample_id for c in kept] == [r["id"] for r in rows]
    assert kept[0].domain == "arithmetic"


def test_content_hash_ids_are_stable_and_content_sensitive(tmp_path, encoder):
    rows = [{k: v for k, v in r.items() if k != "id"} for r in make_pool(4)]
    write_parquet(rows, tmp_path / "a.parquet")
    manifest = _freeze(tmp_path, ["a.parquet"])
    kept, _ = _read_all(tmp_path, SourceSpec(paths=["a.parquet"]), encoder, manifest)
    assert [c.sample_id for c in kept] == [content_id(r["messages"]) for r in rows]
    assert len({c.sample_id for c in kept}) == 4


def _assistant_text(tokenizer, enc):
    ids = enc.input_ids[enc.trainable]
    return tokenizer.decode(ids)


def test_loss_mask_covers_exactly_the_assistant_turns(encoder):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Add 2 and 3."},
        {"role": "assistant", "content": "Five."},
        {"role": "user", "content": "And 4 and 4?"},
        {"role": "assistant", "content": "Eight."},
    ]
    enc = encoder.encode(messages)
    text = _assistant_text(encoder.tokenizer, enc)
    assert "Five." in text and "Eight." in text
    assert "Add" not in text and "brief" not in text


def test_prefix_method_agrees_with_generation_markers():
    tokenizer = load_tokenizer(TOKENIZER)
    native = ChatEncoder(tokenizer, 256)
    assert native.native_mask
    by_prefix = ChatEncoder(tokenizer, 256)
    by_prefix.native_mask = False
    for row in make_pool(6):
        a, b = native.encode(row["messages"]), by_prefix.encode(row["messages"])
        np.testing.assert_array_equal(a.input_ids, b.input_ids)
        np.testing.assert_array_equal(a.trainable, b.trainable)


def test_truncation_policies(encoder):
    row = make_pool(2)[1]["messages"]
    full = ChatEncoder(encoder.tokenizer, 10_000).encode(row)
    cut = ChatEncoder(encoder.tokenizer, 40).encode(row)
    np.testing.assert_array_equal(cut.input_ids, full.input_ids[:40])  # right: keep the start
    from iprox_ray.corpus.rows import RowError

    with pytest.raises(RowError, match="too-long"):
        ChatEncoder(encoder.tokenizer, 40, "drop").encode(row)


def test_quarantine_table_schema(tmp_path, encoder):
    (tmp_path / "r.jsonl").write_text('{"id": 1}\n')
    manifest = _freeze(tmp_path, ["r.jsonl"])
    rows = read_shard("pool", manifest.shards[0], SourceSpec(paths=["r.jsonl"]), encoder)
    table = rows.quarantine_table()
    assert table.num_rows == 1 and table.column("reason").to_pylist() == ["missing-column"]
    pq.write_table(table, tmp_path / "q.parquet")
    assert pq.read_table(tmp_path / "q.parquet").schema == table.schema
    assert isinstance(table, pa.Table)
