"""data.text_windows: window bounds, and the window files cut from a document shard."""

from __future__ import annotations

import json

import numpy as np
import pytest

from iprox_ray.corpus.formats import EncodingSettings, build_encoder, encode_all
from iprox_ray.corpus.manifest import freeze_manifest
from iprox_ray.corpus.rows import RowError, TextRow
from iprox_ray.corpus.shard_reader import read_shard
from iprox_ray.corpus.text import window_bounds
from iprox_ray.corpus.windows import cut_shard, windows_source
from iprox_ray.models.loading import load_tokenizer
from iprox_ray.spec import SourceSpec

from conftest import TOKENIZER


@pytest.mark.parametrize("n,length", [(1, 8), (8, 8), (9, 8), (15, 8), (16, 8), (100, 8), (50, 2)])
def test_windows_train_every_token_after_the_first_exactly_once(n, length):
    bounds = window_bounds(n, length)
    assert all(stop - start <= length and stop - start >= 2 or n < 2 for start, stop in bounds)
    trained = [t for start, stop in bounds for t in range(start + 1, stop)]
    assert trained == list(range(1, n))  # once each, in order; each window's first token is context
    assert bounds[0][0] == 0 and bounds[-1][1] == n


def test_cut_windows_hold_the_documents_tokens_ids_and_text(tmp_path):
    tok = load_tokenizer(TOKENIZER)
    docs = [{"doc": "a", "body": "short text", "topic": "x"},
            {"doc": "b", "body": "a longer document " * 12, "topic": "y"},
            {"doc": "c", "body": "   ", "topic": "z"},
            {"doc": "d", "topic": "z"}]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    source = SourceSpec(paths=["docs.jsonl"], text_column="body", id_column="doc", domain_column="topic")
    manifest = freeze_manifest(source.paths, "auto", tmp_path, 8, tmp_path / "m.parquet", tmp_path / "m.json", {})
    documents = build_encoder(EncodingSettings("text", 16, windows="all"), tok)
    table = cut_shard(manifest.shards[0], source, documents)
    rows = table.to_pylist()
    long_ids = [tok.bos_token_id] + tok(docs[1]["body"], add_special_tokens=False)["input_ids"]
    n_windows = len(window_bounds(len(long_ids), 16))
    assert n_windows > 2 and [r["id"] for r in rows if not r["error"]] == ["a#0"] + [f"b#{k}" for k in range(n_windows)]
    b_rows = [r for r in rows if r["id"].startswith("b#")]
    assert [t for r in b_rows for t in r["input_ids"][1:]] == long_ids[1:]  # the document, once, after its first token
    assert all(r["text"] in docs[1]["body"] and r["domain"] == "y" and r["source_row"] == 1 for r in b_rows)
    assert [(r["source_row"], r["error"]) for r in rows if r["error"]] == [
        (2, "empty-text: empty body"), (3, "missing-column: row has no 'body'")]
    # the windows read back through the split's reader: same tokens, each window's own id, errors quarantined
    (tmp_path / "w").mkdir()
    import pyarrow.parquet as pq

    pq.write_table(table, tmp_path / "w" / "000000.parquet")
    reader = windows_source(source, tmp_path / "w")
    wm = freeze_manifest(reader.paths, reader.format, tmp_path, 64, tmp_path / "w.parquet", tmp_path / "w.json", {})
    cut = build_encoder(EncodingSettings("text", 16, windows="cut"), tok)
    out = read_shard("pool", wm.shards[0], reader, cut)
    assert [c.sample_id for c in out.conversations] == [r["id"] for r in rows if not r["error"]]
    assert [q["reason"] for q in out.quarantine] == ["empty-text", "missing-column"]
    for enc, row in zip(out.encoded, (r for r in rows if not r["error"])):
        np.testing.assert_array_equal(enc.input_ids, row["input_ids"])
        assert not enc.trainable[0] and enc.trainable[1:].all()
    # counting a document's rows without cutting (iprox-ray plan) gives the same windows
    counted = encode_all(documents, TextRow("b", docs[1]["body"]))
    assert [list(e.input_ids) for e in counted] == [r["input_ids"] for r in b_rows]


def test_first_window_truncates_or_drops():
    tok = load_tokenizer(TOKENIZER)
    text = "word " * 40
    right = build_encoder(EncodingSettings("text", 16), tok).encode(text)
    assert right.n_tokens == 16
    with pytest.raises(RowError) as err:
        build_encoder(EncodingSettings("text", 16, truncation="drop"), tok).encode(text)
    assert err.value.reason == "too-long"
