"""Fault injection, store integrity (issue 24): chunk files of finished shards deleted, score
chunks damaged or deleted, and what makes a finished shard durable. Every fault must be named by
the next `run`, `score` or `verify` (the file, and what to rerun), never read as fill values, and a
rerun must give the bytes of an uninterrupted run.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
from fault_tools import assert_clean_error, cli, reference, run_outputs  # noqa: F401 (fixture)

from iprox_ray.store.sketch_store import SplitStore


def _copy(reference: Path, tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    shutil.copytree(reference / "run", run_dir)
    return run_dir


def _flip(path: Path, at: int = 20) -> None:
    data = bytearray(path.read_bytes())
    data[at : at + 4] = bytes(b ^ 0xFF for b in data[at : at + 4])
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------- shard chunks


def test_a_deleted_chunk_of_a_finished_shard_is_redone_never_read_as_padding(reference, tmp_path):
    run_dir = _copy(reference, tmp_path)
    (run_dir / "store.zarr" / "pool" / "written" / "c" / "3").unlink()  # shard 3's rows would read as padding
    rc, out = cli("verify", str(run_dir))
    assert rc == 1 and "chunk file store.zarr/pool/written/c/3 is missing" in out, out
    assert "`iprox-ray run` with the run's job" in out
    rc, out = cli("score", str(run_dir), "--target", str(reference / "data" / "target.jsonl"), "--name", "t2", "-q")
    assert_clean_error(rc, out, "sketch-pool shard 3: its chunk file store.zarr/pool/written/c/3", "is missing",
                       "iprox-ray verify RUN_DIR --repair")
    rc, out = cli("run", str(reference / "job.toml"), "--run-dir", str(run_dir), "-q")
    assert rc == 0, out[-3000:]
    assert "sketch-pool shard 3: its chunk file store.zarr/pool/written/c/3 is missing; redoing the shard" in out
    assert run_outputs(run_dir) == run_outputs(reference / "run")


def test_a_written_shard_is_durable_before_its_marker(tmp_path, monkeypatch):
    """Every chunk file of the shard and every folder entry on the way to it is fsynced by
    write_shard (the completion marker is written after it returns)."""
    store = SplitStore.create(tmp_path / "store.zarr", "pool", n_shards=3, rows_per_shard=4, sketch_dim=2, attrs={})
    synced: list[str] = []
    real = os.fsync

    def spy(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    rows = {"sample_id": np.array(["a", "b"]), "domain": np.array(["d", "d"]), "subtask": np.array(["", ""]),
            "n_tokens": np.array([3, 4], np.int32), "loss": np.array([1.0, 2.0], np.float32),
            "sketch_norm": np.array([1.0, 1.0], np.float32), "written": np.array([1, 1], np.uint8)}
    record = store.write_shard(1, np.ones((2, 2), np.float16), rows)
    root = (tmp_path / "store.zarr").resolve()
    files = [str(root / key) for key in record["chunks"]]
    assert "pool/written/c/1" in record["chunks"] and "pool/sketch/c/1/0" in record["chunks"]
    assert set(files) <= set(synced)
    for folder in {str(root / "pool" / "written" / "c"), str(root / "pool" / "sketch" / "c" / "1"), str(root / "pool")}:
        assert folder in synced, folder


# ---------------------------------------------------------------- arrays the driver writes


def test_a_damaged_score_chunk_is_named_verified_repaired_and_rescored(reference, tmp_path):
    run_dir = _copy(reference, tmp_path)
    _flip(run_dir / "store.zarr" / "scores" / "main" / "c" / "2")
    rc, out = cli("run", str(reference / "job.toml"), "--run-dir", str(run_dir), "-q")  # re-plots the scores
    assert_clean_error(rc, out, "store.zarr/scores/main/c/2", "cannot be read", "iprox-ray verify RUN_DIR --repair")
    rc, out = cli("verify", str(run_dir))
    assert rc == 1 and "damaged: score-main (scores/main): cannot be read: scores/main/c/2" in out, out
    assert "`iprox-ray run` with the run's job" in out and "redoes score-main" in out
    rc, out = cli("verify", str(run_dir), "--repair")
    assert rc == 0 and "forgot 1 damaged item(s)" in out, out
    assert not (run_dir / "stages" / "score-main.json").exists()
    assert not (run_dir / "stages" / "select-main.json").exists()
    assert (run_dir / "stages" / "dedup-pool.json").exists()  # nothing the scores do not depend on
    rc, out = cli("run", str(reference / "job.toml"), "--run-dir", str(run_dir), "-q")
    assert rc == 0, out[-3000:]
    assert run_outputs(run_dir) == run_outputs(reference / "run")
    rc, out = cli("verify", str(run_dir))
    assert rc == 0 and "0 damaged" in out, out


def test_a_deleted_score_chunk_is_noticed_not_read_as_nan(reference, tmp_path):
    run_dir = _copy(reference, tmp_path)
    (run_dir / "store.zarr" / "scores" / "main" / "c" / "5").unlink()
    rc, out = cli("verify", str(run_dir))
    assert rc == 1 and "damaged: score-main (scores/main): store.zarr/scores/main/c/5 is missing" in out, out
    rc, out = cli("run", str(reference / "job.toml"), "--run-dir", str(run_dir), "-q")
    assert rc == 0, out[-3000:]
    assert "score-main: its output store.zarr/scores/main/c/5 is missing; redoing the stage" in out
    assert run_outputs(run_dir) == run_outputs(reference / "run")


def test_a_scored_target_names_its_own_rerun_command(reference, tmp_path):
    run_dir = _copy(reference, tmp_path)
    target = str(reference / "data" / "target.jsonl")
    rc, out = cli("score", str(run_dir), "--target", target, "--name", "t2", "-q")
    assert rc == 0, out[-3000:]
    (run_dir / "store.zarr" / "scores" / "t2" / "c" / "0").unlink()
    rc, out = cli("verify", str(run_dir))
    assert rc == 1 and f"`iprox-ray score {run_dir} --target {target} --name t2` redoes score-t2" in out, out
