"""The demo at reduced size on a real local Ray cluster: selection, restart, determinism."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import REPO

pytestmark = pytest.mark.slow

DEMO = REPO / "jobs" / "demo.toml"
REDUCED = [
    'data.pool.paths=["../iprox_ray/demo/assets/pool/part-0000.parquet"]',
    "data.pool.rows_per_shard=32",
    "data.max_length=256",
    "warmup.epochs=1",
    "selection.k=40",
    "fidelity.enabled=false",  # the report has its own tests (test_fidelity.py)
    'proxy.method="ipsvd"',  # 'auto' decides by measured speed: these tests compare runs bit for bit
]


def iprox(args: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "iprox_ray.cli.main", *args], capture_output=True, text=True,
                          timeout=600, **kw)


def run_demo(run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    args = ["run", str(DEMO), "--run-dir", str(run_dir), "-q"]
    for item in REDUCED + list(extra):
        args += ["--set", item]
    return iprox(args)


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("e2e") / "reference"
    proc = run_demo(run_dir, "cluster.actors=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def test_reduced_demo_selects_exactly_k_and_favours_the_target_domain(reference_run):
    summary = json.loads((reference_run / "summary.json").read_text())
    selection = pq.read_table(reference_run / "selections" / "main" / "selection.parquet")
    assert selection.num_rows == 40 == summary["selected"]
    assert selection.column("rank").to_pylist() == list(range(1, 41))
    scores = selection.column("score").to_pylist()
    assert scores == sorted(scores, reverse=True)
    pool, chosen = summary["domain_share_pool"], summary["domain_share_selection"]
    assert chosen.get("arithmetic", 0) > pool["arithmetic"]
    assert (reference_run / "selections" / "main" / "selected.parquet").exists()
    assert (reference_run / "selections" / "main" / "scores.png").stat().st_size > 1000


def test_selection_loads_with_datasets(reference_run):
    datasets = pytest.importorskip("datasets")
    ds = datasets.load_dataset("parquet", data_files=str(reference_run / "selections/main/selection.parquet"),
                               split="train")
    assert set(["sample_id", "score", "rank", "source_file", "source_row"]) <= set(ds.column_names)


def _wait_for_markers(folder: Path, count: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if folder.exists() and len(list(folder.glob("*.json"))) >= count:
            return
        if proc.poll() is not None:
            raise AssertionError(f"run ended before it could be interrupted: {proc.stderr.read()[-2000:]}")
        time.sleep(0.2)
    raise AssertionError("no progress to interrupt")


def test_killed_driver_resumes_to_bitwise_identical_results(reference_run, tmp_path):
    run_dir = tmp_path / "interrupted"
    args = [sys.executable, "-m", "iprox_ray.cli.main", "run", str(DEMO), "--run-dir", str(run_dir), "-q"]
    for item in REDUCED + ["cluster.actors=1"]:  # another actor count than the reference
        args += ["--set", item]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    markers = run_dir / "completions" / "sketch-pool"
    _wait_for_markers(markers, 3, proc)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything it started
    proc.wait()
    before = {p.name: p.read_bytes() for p in markers.glob("*.json")}
    total = pq.ParquetFile(run_dir / "manifest" / "pool.parquet").metadata.num_rows
    assert 3 <= len(before) < total

    status = iprox(["status", str(run_dir)])
    assert status.returncode == 0 and "pool:" in status.stdout

    resumed = iprox(["run", str(DEMO), "--run-dir", str(run_dir), "-q"]
                    + [x for item in REDUCED + ["cluster.actors=1"] for x in ("--set", item)])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "taking over the lock" in resumed.stdout + resumed.stderr
    after = {p.name: p.read_bytes() for p in markers.glob("*.json")}
    assert len(after) == total
    assert all(after[name] == data for name, data in before.items())  # done shards were not redone

    assert tree_digest(run_dir / "store.zarr") == tree_digest(reference_run / "store.zarr")
    ours = pq.read_table(run_dir / "selections/main/selection.parquet")
    theirs = pq.read_table(reference_run / "selections/main/selection.parquet")
    assert ours.equals(theirs)


def test_changed_config_refuses_and_force_new_moves_it_aside(reference_run, tmp_path):
    proc = run_demo(reference_run, "sketch.seed=5")
    assert proc.returncode == 1
    assert "changed: sketch.seed" in proc.stderr and "--force-new" in proc.stderr


def test_store_follows_the_v2_schema(reference_run):
    import zarr

    schema = json.loads((REPO / "storage_schema" / "v2.json").read_text())
    root = zarr.open_group(str(reference_run / "store.zarr"), mode="r")
    for split in ("pool", "targets/main"):
        group = root[split]
        assert set(schema["split_groups"]["attributes"]) <= set(group.attrs) | {"model"}
        arrays = schema["split_groups"]["arrays"]
        int8 = group.attrs["sketch_dtype"] == "int8"  # the default: sketch_scale is "only" for int8
        assert {a for a, spec in arrays.items() if "only" not in spec or (int8 and a == "sketch_scale")} \
            == set(group.array_keys())
        for name in group.array_keys():  # every chunk carries its checksum
            assert "crc32c" in json.dumps(group[name].metadata.to_dict()), name
    marker = json.loads(next((reference_run / "completions" / "sketch-pool").glob("0*.json")).read_text())
    assert set(schema["completion_markers"]["fields"]) <= set(marker)
    assert root["scores/main"].dtype == "float32"
