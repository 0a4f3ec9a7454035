"""A split with no usable row stops the run after the manifests, with one clear line."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from iprox_ray.cli.main import main
from iprox_ray.driver.rundir import open_run
from iprox_ray.spec import load_job
from iprox_ray.stages.preflight import POOL_SAMPLE_ROWS, NoUsableRowsError, check_inputs, check_sketched
from iprox_ray.store.atomic import atomic_write_parquet
from iprox_ray.tasks.inputs import POOL, manifest_for, target_split

from conftest import make_pool

LONG = "word " * 300  # past max_length = 192: right truncation leaves no assistant token


def _unusable_pool(n: int, n_missing: int) -> list[dict]:
    rows = make_pool(n)
    for i, row in enumerate(rows):
        if i < n_missing:
            rows[i] = {**row, "messages": None}
        else:
            row["messages"][0]["content"] = LONG
    return rows


def _run(path, run_dir, *sets):
    args = ["run", str(path), "--run-dir", str(run_dir), "-q"]
    for item in sets:
        args += ["--set", item]
    return main(args)


def _assert_stopped_after_preflight(run_dir):
    """Only the manifests, the pre-flight's records and markers: no later stage wrote anything."""
    assert {p.name for p in run_dir.iterdir()} <= {"config.json", "LOCK", "cache", "manifest", "preflight", "stages",
                                                   "render.json"}
    assert all(p.name.startswith("preflight-") for p in (run_dir / "stages").glob("*"))


def test_a_pool_without_usable_rows_stops_with_one_line(make_job, tmp_path, capsys):
    path = make_job(pool_rows=_unusable_pool(60, 4))
    run_dir = tmp_path / "run"
    assert _run(path, run_dir) == 1
    err = capsys.readouterr().err
    where = run_dir / "preflight" / "pool.parquet"
    assert err == (f"error: no usable row in split 'pool': 60 of 60 quarantined (no-trainable-tokens: 56, "
                   f"missing-column: 4; e.g. row 4 of pool-0.parquet: no-trainable-tokens: no assistant token "
                   f"within 192 tokens); see {where}\n")
    assert pq.read_table(where).num_rows == 60
    _assert_stopped_after_preflight(run_dir)


def test_a_target_without_usable_rows_stops_before_the_warmup(make_job, tmp_path, capsys):
    path = make_job()
    rows = [{"id": f"q{i}", "prompt": LONG, "response": "4."} for i in range(12)]
    (tmp_path / "data" / "target.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run_dir = tmp_path / "run"
    assert _run(path, run_dir, "data.truncation=drop") == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no usable row in split 'targets/main': 12 of 12 quarantined (too-long: 12; "
                          "e.g. row 0 of target.jsonl: too-long: ")
    assert err.count("\n") == 1 and "Traceback" not in err
    _assert_stopped_after_preflight(run_dir)


def test_a_large_pool_is_checked_on_a_bounded_sample(make_job, tmp_path, capsys):
    n = 2 * POOL_SAMPLE_ROWS
    path = make_job(pool_rows=_unusable_pool(n, 0), rows_per_shard=16)
    assert _run(path, tmp_path / "run") == 1
    assert (f"no usable row in split 'pool': {POOL_SAMPLE_ROWS} of {POOL_SAMPLE_ROWS} sampled rows (of {n}) "
            "quarantined (no-trainable-tokens: 256;") in capsys.readouterr().err


def test_a_usable_pool_passes_once_and_records_it(make_job, tmp_path):
    with open_run(load_job(make_job(k=5)), tmp_path / "run", quiet=True) as ctx:
        check_inputs(ctx, [POOL, target_split("main")])
        marker = json.loads(ctx.layout.stage_done("preflight-pool").read_text())
        assert marker["checked"] == marker["usable"] == 96
        assert json.loads(ctx.layout.stage_done("preflight-targets-main").read_text())["usable"] == 12


def test_the_sketch_stage_end_checks_the_quarantine_totals(make_job, tmp_path):
    from iprox_ray.corpus.shard_reader import ShardRows

    with open_run(load_job(make_job(n_pool=32)), tmp_path / "run", quiet=True) as ctx:
        manifest = manifest_for(ctx, POOL)
        check_sketched(ctx, {POOL: manifest})  # nothing quarantined yet
        for shard in manifest.shards:
            rows = ShardRows(shard, quarantine=[
                {"split": POOL, "shard_id": shard.shard_id, "file": shard.file, "row": r, "sample_id": "",
                 "reason": "too-long", "detail": "999 tokens > max_length 192"}
                for r in range(shard.row_start, shard.row_stop)])
            atomic_write_parquet(ctx.layout.quarantine_shard(POOL, shard.shard_id), rows.quarantine_table())
        with pytest.raises(NoUsableRowsError, match=r"no usable row in split 'pool': 32 of 32 quarantined "
                                                    r"\(too-long: 32; e\.g\. row 0 of pool-0\.parquet"):
            check_sketched(ctx, {POOL: manifest})


def test_a_new_target_without_usable_rows_is_refused_before_sketching(make_job, tmp_path, capsys):
    from iprox_ray.driver.pipeline import run_job

    run_dir = tmp_path / "run"
    run_job(load_job(make_job(k=5)), run_dir, quiet=True)
    bad = tmp_path / "data" / "bad.jsonl"
    bad.write_text("".join(json.dumps({"id": f"b{i}", "prompt": LONG, "response": "4."}) + "\n" for i in range(3)))
    capsys.readouterr()
    assert main(["score", str(run_dir), "--target", str(bad), "-q"]) == 1
    assert capsys.readouterr().err.startswith(
        "error: no usable row in split 'targets/bad': 3 of 3 quarantined (no-trainable-tokens: 3; ")
    from iprox_ray.store.layout import RunLayout
    from iprox_ray.store.sketch_store import open_root

    assert "targets/bad" not in open_root(RunLayout(run_dir).store)  # never sketched
    assert not (run_dir / "quarantine" / "targets-bad").exists()
