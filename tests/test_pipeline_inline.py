"""The pipeline in-process (inline executor): quarantine accounting, run-directory rules."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from iprox_ray.cli.main import main
from iprox_ray.driver.pipeline import run_job
from iprox_ray.driver.rundir import RunMismatchError
from iprox_ray.spec import load_job

from conftest import make_pool, write_parquet


def _bad_rows() -> list[dict]:
    rows = make_pool(64)
    rows[3] = {**rows[3], "messages": None}  # neither messages nor prompt/response
    rows[5]["messages"] = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}]
    rows[9] = {**rows[9], "id": rows[2]["id"]}  # duplicate id (a later row)
    rows[40] = {**rows[40], "id": rows[41]["id"]}  # duplicate across shards, later in the other file
    return rows


def test_bad_rows_are_quarantined_counted_and_excluded(make_job, tmp_path):
    job = load_job(make_job(pool_rows=_bad_rows(), k=12))
    summary = run_job(job, tmp_path / "run", quiet=True)
    assert summary["rows_read"]["pool"] == 64
    reasons = summary["quarantine_reasons"]
    assert reasons == {"pool:duplicate-id": 2, "pool:empty-text": 1, "pool:missing-column": 1}
    assert summary["rows_quarantined"]["pool"] == 4
    assert summary["valid_pool_rows"] == 60 and summary["selected"] == 12
    table = pq.read_table(tmp_path / "run" / "quarantine.parquet")
    dup = [r for r in table.to_pylist() if r["reason"] == "duplicate-id"]
    assert sorted(r["row"] for r in dup) == [9, 41 - 32]  # second file starts at pool row 32
    selected = set(pq.read_table(tmp_path / "run/selections/main/selection.parquet").column("sample_id").to_pylist())
    assert not selected & {r["sample_id"] for r in table.to_pylist() if r["reason"] != "duplicate-id"}


def test_rerun_is_a_no_op_and_other_config_refuses(make_job, tmp_path):
    path = make_job(k=5)
    run_dir = tmp_path / "run"
    first = run_job(load_job(path), run_dir, quiet=True)
    again = run_job(load_job(path), run_dir, quiet=True)
    assert first["selection"] == again["selection"]
    with pytest.raises(RunMismatchError, match="changed: selection.k"):
        run_job(load_job(path, ["selection.k=6"]), run_dir, quiet=True)
    run_job(load_job(path, ["selection.k=6"]), run_dir, quiet=True, force_new=True)
    assert json.loads((run_dir / "summary.json").read_text())["selected"] == 6
    moved = list(tmp_path.glob("run.replaced-*"))
    assert len(moved) == 1 and (moved[0] / "summary.json").exists()


def test_changed_input_refuses_on_rerun(make_job, tmp_path, capsys):
    path = make_job(k=5)
    run_dir = tmp_path / "run"
    run_job(load_job(path), run_dir, quiet=True)
    write_parquet(make_pool(40, seed=3), tmp_path / "data" / "pool-0.parquet")
    assert main(["run", str(path), "--run-dir", str(run_dir), "-q"]) == 1
    assert "pool-0.parquet changed since the manifest was frozen" in capsys.readouterr().err


def test_truncated_input_stops_the_run_naming_the_file(make_job, tmp_path, capsys):
    path = make_job(k=5)
    data = (tmp_path / "data" / "pool-1.parquet").read_bytes()
    (tmp_path / "data" / "pool-1.parquet").write_bytes(data[:200])
    assert main(["run", str(path), "--run-dir", str(tmp_path / "run"), "-q"]) == 1
    assert "cannot read input file" in (err := capsys.readouterr().err) and "pool-1.parquet" in err


def test_status_command_reports_progress(make_job, tmp_path, capsys):
    path = make_job(k=5)
    run_job(load_job(path), tmp_path / "run", quiet=True)
    capsys.readouterr()
    assert main(["status", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "pool: 6/6 shards done, 0 pending, 0 failed, 0 rows quarantined" in out
    assert "lock: free" in out
