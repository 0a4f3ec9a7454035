"""Driver-side corpus paths that must stay flat in the row count: block offset scans, columnar
manifests, auto shard sizing, and input checks made before any compute."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from iprox_ray.corpus.manifest import FileInfo, Manifest, build_manifest, freeze_manifest, manifest_from_files
from iprox_ray.corpus.shard_size import GRANULARITY, MAX_SHARDS, MIN_ROWS, auto_rows_per_shard
from iprox_ray.corpus.sources import CorpusError, InputFile, discover, read_rows, scan_lines

from conftest import make_pool, write_parquet


def _reference_offsets(path):
    """What the code did before: a Python line loop."""
    offsets, pos = [], 0
    with open(path, "rb") as fh:
        for line in fh:
            offsets.append(pos)
            pos += len(line)
    return offsets


CASES = {
    "plain": b'{"a": 1}\n{"a": 2}\n{"a": 3}\n',
    "no-final-newline": b'{"a": 1}\n{"a": 22}',
    "crlf": b'{"a": 1}\r\n{"a": 2}\r\n\r\n{"a": 3}',
    "empty-lines": b'\n\n{"a": 1}\n\n',
    "only-newline": b"\n",
    "empty-file": b"",
    "lone-cr": b'{"a": 1}\r{"a": 2}\n',
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("block", [1, 3, 7, 1 << 20])
def test_offsets_equal_a_line_scan(tmp_path, case, block):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(CASES[case])
    want = _reference_offsets(path)
    digest = hashlib.blake2b(digest_size=16)
    n_rows, offsets = scan_lines(path, block=block, digest=digest)
    assert n_rows == len(want) and offsets.tolist() == want and offsets.dtype == np.int64
    assert digest.hexdigest() == hashlib.blake2b(CASES[case], digest_size=16).hexdigest()
    for stride in (2, 3, 64):
        n_rows, offsets = scan_lines(path, stride, block=block)
        assert n_rows == len(want) and offsets.tolist() == want[::stride]


def test_random_lines_offsets_and_sharded_reads(tmp_path):
    rng = np.random.default_rng(3)
    lines = [json.dumps({"i": i, "pad": "x" * int(rng.integers(0, 40))}).encode() for i in range(1000)]
    ends = [b"\r\n" if rng.random() < 0.3 else b"\n" for _ in lines]
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b"".join(line + end for line, end in zip(lines, ends))[:-1])  # last row without newline
    want = _reference_offsets(path)
    for stride in (1, 7, 64):
        n_rows, offsets = scan_lines(path, stride, block=97)
        assert n_rows == 1000 and offsets.tolist() == want[::stride]
    manifest = build_manifest(discover(["rows.jsonl"], "auto", tmp_path), 7)
    assert manifest.byte_start.tolist() == want[::7]
    shard = manifest.shards[50]
    got = [r.values["i"]
           for r in read_rows(InputFile(path, "jsonl"), shard.row_start, shard.row_stop, shard.byte_start)]
    assert got == list(range(350, 357))


def test_manifest_from_synthetic_counts_is_columnar():
    files = [FileInfo(f"/synthetic/{i}.parquet", "parquet", 0, 0, "", n) for i, n in enumerate([1000, 0, 10, 256])]
    manifest = manifest_from_files(files, 256)
    assert manifest.n_shards == 4 + 1 + 1 and manifest.n_rows == 1266
    assert manifest.shard_n_rows.tolist() == [256, 256, 256, 232, 10, 256]
    assert manifest.file_index.tolist() == [0, 0, 0, 0, 2, 3]
    assert manifest.shards[3].row_start == 768 and manifest.shards[-1].file == "/synthetic/3.parquet"
    assert manifest.file_shards(2) == slice(4, 5) and manifest.file_shards(1) == slice(4, 4)
    f, r = manifest.locate([3 * 256 + 5, 4 * 256 + 9])
    assert f.tolist() == [0, 2] and r.tolist() == [773, 9]


def test_manifest_round_trips_through_disk(tmp_path):
    for name, rows in (("a", make_pool(20)), ("b", make_pool(5, seed=1))):
        write_parquet(rows, tmp_path / f"{name}.parquet")
    manifest = build_manifest(discover(["*.parquet"], "auto", tmp_path), 8)
    manifest.save(tmp_path / "m.parquet", tmp_path / "m.json", {})
    again = Manifest.load(tmp_path / "m.parquet", tmp_path / "m.json")
    assert again.shards == manifest.shards and again.rows_per_shard == 8 and again.sizing is None
    assert [(s.file.split("/")[-1], s.row_start, s.row_stop) for s in again.shards] == [
        ("a.parquet", 0, 8), ("a.parquet", 8, 16), ("a.parquet", 16, 20), ("b.parquet", 0, 5)]


def test_auto_rows_per_shard_clamps():
    assert auto_rows_per_shard(10**8, 512) == 5056  # the 20k-shard cap wins over the token target (2048)
    assert -(-10**8 // 5056) <= MAX_SHARDS
    assert auto_rows_per_shard(10**7, 512) == 2048  # 2^20 tokens / 512
    assert auto_rows_per_shard(10**6, 100_000) == MIN_ROWS  # very long rows: the floor
    assert auto_rows_per_shard(10**7, 100_000) == 512  # ... unless the shard cap needs more (1e7 / 20k)
    assert auto_rows_per_shard(10**7, 1) == 16384  # very short rows: the ceiling
    assert auto_rows_per_shard(100, 50) == 128  # a small split is one shard
    assert auto_rows_per_shard(10**6, 50, largest_file=100) == 128  # small files: one shard each, little padding
    for n, t in ((10**9, 300), (12345, 77), (1, 1)):
        rows = auto_rows_per_shard(n, t)
        assert rows % GRANULARITY == 0 and rows >= MIN_ROWS and -(-n // rows) <= MAX_SHARDS


def _freeze(tmp_path, rows_per_shard, estimator, pattern="*.jsonl"):
    return freeze_manifest([pattern], "auto", tmp_path, rows_per_shard, tmp_path / "m.parquet", tmp_path / "m.json",
                           {}, estimator)


def test_auto_size_is_recorded_and_reused_on_resume(tmp_path):
    lines = [json.dumps({"i": i, "text": "y" * (i % 13)}) for i in range(5000)]
    (tmp_path / "a.jsonl").write_text("\n".join(lines[:3000]) + "\n")
    (tmp_path / "b.jsonl").write_text("\n".join(lines[3000:]) + "\n")
    calls = []

    def estimator(probe):  # stands in for the tokenizer: deterministic in the probe's rows
        calls.append(probe.rows_per_shard)
        rows = [r for s in probe.shards[:4]
                for r in read_rows(InputFile(Path(s.file), s.format), s.row_start, s.row_stop, s.byte_start)]
        return 1024.0 + sum(len(r.values["text"]) for r in rows) / len(rows)

    manifest = _freeze(tmp_path, "auto", estimator)
    assert calls == [GRANULARITY]
    per_row = manifest.sizing["tokens_per_row"]
    assert manifest.rows_per_shard == auto_rows_per_shard(5000, per_row) == 1024
    assert manifest.n_shards == 3 + 2 and json.loads((tmp_path / "m.json").read_text())["rows_per_shard"] == 1024
    want = _reference_offsets(tmp_path / "a.jsonl")
    assert [s.byte_start for s in manifest.shards if s.file.endswith("a.jsonl")] == want[::1024]
    again = _freeze(tmp_path, "auto", lambda probe: pytest.fail("a resume must not estimate again"))
    assert again.rows_per_shard == 1024 and again.shards == manifest.shards
    (tmp_path / "m.parquet").unlink()  # a fresh build with the same seed and inputs: the same size
    calls.clear()
    assert _freeze(tmp_path, "auto", estimator).rows_per_shard == 1024 and calls == [GRANULARITY]


def test_the_auto_probe_never_has_more_shards_than_the_cap(tmp_path, monkeypatch):
    # Its per-shard columns must not grow with the pool (GRANULARITY-row probe shards: 1.6M at 1e8 rows).
    from iprox_ray.corpus import manifest as manifest_module

    monkeypatch.setattr(manifest_module, "MAX_SHARDS", 4)
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"i": i}) + "\n" for i in range(1000)))
    probes = []
    chosen = build_manifest(discover(["a.jsonl"], "auto", tmp_path), "auto",
                            tokens_per_row=lambda probe: probes.append(probe) or 10.0)
    (probe,) = probes
    assert probe.n_shards <= 4 and probe.rows_per_shard % GRANULARITY == 0 and probe.n_rows == 1000
    want = _reference_offsets(tmp_path / "a.jsonl")  # probe shards start on the right bytes
    assert [s.byte_start for s in probe.shards] == want[::probe.rows_per_shard]
    assert chosen.rows_per_shard == auto_rows_per_shard(1000, 10.0, 1000)


def test_auto_needs_an_estimator(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"i": 1}\n')
    with pytest.raises(ValueError, match="estimator"):
        build_manifest(discover(["a.jsonl"], "auto", tmp_path), "auto")


def test_mixed_formats_are_refused_before_any_compute(tmp_path):
    write_parquet(make_pool(4), tmp_path / "data" / "a.parquet")
    (tmp_path / "data" / "b.jsonl").write_text('{"i": 1}\n')
    with pytest.raises(CorpusError) as err:
        _freeze(tmp_path, 8, None, pattern="data/*")
    message = str(err.value)
    assert message.startswith("inputs of one split must share one format, found ")
    assert "a.parquet (parquet)" in message and "b.jsonl (jsonl)" in message and "\n" not in message
    assert not (tmp_path / "m.parquet").exists()


def test_conflicting_column_types_are_refused_naming_both_files(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": ["a", "b"], "score": [1, 2]}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"id": ["c"], "score": [None]}), tmp_path / "b.parquet")  # null column: compatible
    pq.write_table(pa.table({"id": ["d"], "score": ["high"]}), tmp_path / "c.parquet")
    with pytest.raises(CorpusError) as err:
        _freeze(tmp_path, 8, None, pattern="*.parquet")
    assert str(err.value) == (f"input column 'score' is int64 in {tmp_path / 'a.parquet'} but string in "
                              f"{tmp_path / 'c.parquet'}; make the column types agree")
    (tmp_path / "c.parquet").unlink()
    assert _freeze(tmp_path, 8, None, pattern="*.parquet").n_rows == 3  # missing/null columns are fine


def test_tokens_per_row_estimate_is_seeded_and_uses_the_template(tmp_path):
    from iprox_ray.corpus.encode import ChatEncoder
    from iprox_ray.corpus.shard_reader import estimate_tokens_per_row
    from iprox_ray.models.loading import load_tokenizer
    from iprox_ray.spec import SourceSpec

    from conftest import TOKENIZER

    rows = make_pool(300)
    write_parquet(rows, tmp_path / "a.parquet")
    probe = build_manifest(discover(["a.parquet"], "auto", tmp_path), GRANULARITY)
    spec = SourceSpec(paths=["a.parquet"], id_column="id", rows_per_shard="auto")
    encoder = ChatEncoder(load_tokenizer(TOKENIZER), max_length=4096)
    lengths = [encoder.encode(r["messages"]).n_tokens for r in rows]
    first = estimate_tokens_per_row(probe, "pool", spec, encoder, seed=5)
    assert first == estimate_tokens_per_row(probe, "pool", spec, encoder, seed=5)
    assert min(lengths) <= first <= max(lengths) and first != estimate_tokens_per_row(probe, "pool", spec, encoder, 6)
    short = ChatEncoder(encoder.tokenizer, max_length=16)  # truncated rows are what a shard costs
    assert estimate_tokens_per_row(probe, "pool", spec, short, seed=5) == 16.0


def test_spec_accepts_auto_and_keeps_int_bounds():
    from pydantic import ValidationError

    from iprox_ray.spec import SourceSpec

    assert SourceSpec(paths=["x"], rows_per_shard="auto").rows_per_shard == "auto"
    assert SourceSpec(paths=["x"]).rows_per_shard == 256
    assert SourceSpec(paths=["x"], rows_per_shard=3).rows_per_shard == 3
    for bad in (0, 1 << 21, "big"):
        with pytest.raises(ValidationError):
            SourceSpec(paths=["x"], rows_per_shard=bad)


def test_a_run_with_auto_shards_records_the_size_and_resumes_with_it(make_job, tmp_path, monkeypatch):
    from iprox_ray.driver.pipeline import run_job
    from iprox_ray.driver.rundir import open_run
    from iprox_ray.spec import load_job
    from iprox_ray.tasks import inputs
    from iprox_ray.tasks.inputs import POOL, manifest_for

    job = load_job(make_job(n_pool=96, k=5, rows_per_shard='"auto"'))
    run_dir = tmp_path / "run"
    summary = run_job(job, run_dir, quiet=True)
    info = json.loads((run_dir / "manifest" / "pool.json").read_text())
    assert info["rows_per_shard"] == 64 and info["sizing"]["mode"] == "auto"  # 48-row files: one shard each
    assert info["sizing"]["tokens_per_row"] > 8 and summary
    assert (run_dir / "selections" / "main" / "selected.parquet").exists()
    monkeypatch.setattr(inputs, "estimate_tokens_per_row", lambda *a: pytest.fail("a resume must not estimate"))
    with open_run(job, run_dir, quiet=True) as ctx:
        assert manifest_for(ctx, POOL).rows_per_shard == 64


def test_sample_rows_groups_picks_by_shard():
    from iprox_ray.tasks.inputs import sample_rows

    manifest = manifest_from_files([FileInfo("a", "parquet", 0, 0, "", 10), FileInfo("b", "parquet", 0, 0, "", 7)], 4)
    starts = np.concatenate([[0], np.cumsum(manifest.shard_n_rows)])
    for fraction, seed in ((0.1, 0), (0.5, 1), (1.0, 2)):
        chosen = sample_rows(manifest, fraction, seed)
        count = min(17, max(1, round(fraction * 17)))
        picks = np.sort(np.random.default_rng(seed).choice(17, size=count, replace=False))
        assert sorted(int(starts[s]) + r for s, rows in chosen.items() for r in rows) == picks.tolist()
        assert all(rows == sorted(rows) and max(rows) < manifest.shard_n_rows[s] for s, rows in chosen.items())
    assert sample_rows(manifest, 1.0, 0) == {0: [0, 1, 2, 3], 1: [0, 1, 2, 3], 2: [0, 1], 3: [0, 1, 2, 3], 4: [0, 1, 2]}
