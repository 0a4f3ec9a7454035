"""One store, many targets: `iprox-ray score RUN --target NEW` sketches only the new target."""

from __future__ import annotations

import hashlib
import html
import json
import random

import pyarrow.parquet as pq
import pytest

from iprox_ray.cli.main import main
from iprox_ray.driver.pipeline import run_job
from iprox_ray.methods.scorers import holdout_line
from iprox_ray.spec import load_job

from conftest import prose_row


def _prose_target(path, n=10):
    rng = random.Random(5)
    with open(path, "w") as fh:
        for i in range(n):
            row = prose_row(rng, 1000 + 2 * i + 1)
            fh.write(json.dumps({"id": f"p{i}", "prompt": row["messages"][0]["content"],
                                 "response": row["messages"][1]["content"]}) + "\n")
    return path


def _digest(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _pool_state(run_dir):
    return (_digest(run_dir / "store.zarr" / "pool"), _digest(run_dir / "completions"),
            sorted(p.name for p in (run_dir / "completions").iterdir()))


def _check_report(run_dir, method, first, new):
    """The HTML report `iprox-ray score` rewrote holds both targets, their overlap and, for
    Influence Distillation, the landmark hold-out the summary recorded."""
    page = (run_dir / "report.html").read_text()
    assert '<section id="target-main">' in page and '<section id="target-prose">' in page
    both = len({r["sample_id"] for r in first} & {r["sample_id"] for r in new})
    assert f'data-overlap="main|prose">{both} (' in page
    holdout = json.loads((run_dir / "summary.json").read_text()).get("landmark_holdout")
    if method == "influence-distillation":
        assert holdout and html.escape(holdout_line(holdout)) in page
    else:
        assert holdout is None and "only Influence Distillation propagates scores" in page


@pytest.mark.parametrize("method", ["less", "influence-distillation"])
def test_new_target_sketches_only_the_target_and_selects_beside_the_first(make_job, tmp_path, capsys, method):
    extra = ['scoring.method="influence-distillation"', "scoring.landmarks.count=40", "scoring.embed.dim=32",
             "scoring.embed.blocks=1"] if method != "less" else []
    job = load_job(make_job(k=8), extra)
    run_dir = tmp_path / "run"
    run_job(job, run_dir, quiet=True)
    before = _pool_state(run_dir)
    target = _prose_target(tmp_path / "prose.jsonl")
    args = ["score", str(run_dir), "--target", str(target), "--name", "prose", "-q"]
    assert main(args) == 0, capsys.readouterr().err
    assert _pool_state(run_dir)[0] == before[0]  # pool arrays: bitwise unchanged
    assert _pool_state(run_dir)[1].items() >= before[1].items()  # old markers untouched
    assert "sketch-pool" in before[2] and "sketch-targets-prose" in _pool_state(run_dir)[2]
    new = pq.read_table(run_dir / "selections/prose/selection.parquet").to_pylist()
    first = pq.read_table(run_dir / "selections/main/selection.parquet").to_pylist()
    assert len(new) == len(first) == 8
    share = lambda rows, d: sum(r["domain"] == d for r in rows) / len(rows)  # noqa: E731
    assert share(new, "python_topics") > share(first, "python_topics")
    assert share(first, "arithmetic") > 0.5
    assert (run_dir / "selections/prose/selected.parquet").exists()
    assert (run_dir / "selections/prose/scores.png").exists()
    import zarr

    root = zarr.open_group(str(run_dir / "store.zarr"), mode="r")
    assert root["scores/prose"].attrs["target"] == "targets/prose" and "targets/prose" in root
    _check_report(run_dir, method, first, new)

    # the same command again is a no-op; other settings under the same name refuse without --force
    assert main(args) == 0
    assert pq.read_table(run_dir / "selections/prose/selection.parquet").to_pylist() == new
    capsys.readouterr()
    assert main(args + ["--set", "selection.k=3"]) == 1
    assert "scored with other settings" in capsys.readouterr().err
    assert main(args + ["--set", "selection.k=3", "--force"]) == 0
    assert pq.read_table(run_dir / "selections/prose/selection.parquet").num_rows == 3
    assert _pool_state(run_dir)[0] == before[0]


def test_new_target_refuses_pool_side_changes_and_missing_pool_data(make_job, tmp_path, capsys):
    run_dir = tmp_path / "run"
    target = _prose_target(tmp_path / "prose.jsonl")
    assert main(["score", str(run_dir), "--target", str(target)]) == 1  # no run yet
    run_job(load_job(make_job(k=4)), run_dir, quiet=True)
    capsys.readouterr()
    assert main(["score", str(run_dir), "--target", str(target), "--set", "sketch.seed=3", "-q"]) == 1
    assert "changed: sketch.seed" in capsys.readouterr().err
    assert main(["score", str(run_dir), "--target", str(target), "--set", 'scoring.method="rds+"', "-q"]) == 1
    assert "rds embeddings of the whole pool" in capsys.readouterr().err
    assert main(["score", str(run_dir), "--target", str(target), "--name", "main", "-q"]) == 1
    for name in ("..", ".", "a/b"):  # `--name .. --force` once deleted the whole run directory
        assert main(["score", str(run_dir), "--target", str(target), "--name", name, "--force", "-q"]) == 1
        assert f"target name {name!r} must match" in capsys.readouterr().err
        assert (run_dir / "config.json").exists() and (run_dir / "store.zarr").exists()
    # a method that reads only what the pool already has is fine: tracin on the full sketches
    assert main(["score", str(run_dir), "--target", str(target), "--name", "t2", "--set",
                 'scoring.method="tracin"', "-q"]) == 0
    assert pq.read_table(run_dir / "selections/t2/selection.parquet").num_rows == 4
