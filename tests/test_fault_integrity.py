"""Fault injection, store integrity (issue 24): chunk files of finished shards deleted, score
chunks damaged or deleted, and what makes a finished shard durable. Every fault must be named by
the next `run`, `score` or `verify` (the file, and what to rerun), never read as fill values, and a
rerun must give the bytes of an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from iprox_ray.store.lock import RunLock, RunLockedError
from iprox_ray.store.sketch_store import SplitStore

from conftest import REPO
from fault_tools import assert_clean_error, cli, reference, run_outputs  # noqa: F401 (fixture)


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


def test_a_lost_group_zarr_json_is_refused_then_rebuilt_as_it_was(reference, tmp_path):
    run_dir = _copy(reference, tmp_path)
    (run_dir / "store.zarr" / "pool" / "zarr.json").unlink()
    rc, out = cli("run", str(reference / "job.toml"), "--run-dir", str(run_dir), "-q")
    assert_clean_error(rc, out, "store.zarr/pool has no zarr.json but holds data", "iprox-ray verify RUN_DIR --repair")
    rc, out = cli("verify", str(run_dir), "--repair")
    assert rc == 0 and "rebuilt store metadata: store.zarr/pool" in out, out
    rc, out = cli("run", str(reference / "job.toml"), "--run-dir", str(run_dir), "-q")
    assert rc == 0, out[-3000:]
    assert run_outputs(run_dir) == run_outputs(reference / "run")  # the group's attributes are back, bytewise


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


# ---------------------------------------------------------------- one precision per store

# Runs the CLI with the precision resolver answering what a GPU with autocast = "auto" gives, and
# SIGKILLs the driver when the 5th shard is done: a run started on GPUs, then resumed on a CPU.
AS_IF_ON_GPU = """
import os, signal, sys
from iprox_ray.cli.main import main
from iprox_ray.stages import sketch
from iprox_ray.tasks import compute, sketch_task
from iprox_ray.store import markers
sketch.sketch_precision = sketch_task.sketch_precision = lambda weights, autocast, on_gpu: compute.AUTOCAST_BF16
calls = []
inner = markers.ShardMarkers.mark_done
def wrapped(self, shard_id, info):
    calls.append(shard_id)
    if len(calls) == 5:
        os.killpg(os.getpgrp(), signal.SIGKILL)
    return inner(self, shard_id, info)
markers.ShardMarkers.mark_done = wrapped
sys.exit(main(sys.argv[1:]))
"""


def test_a_resume_under_another_precision_refuses_naming_both(reference, tmp_path):
    run_dir = tmp_path / "run"
    args = ["run", str(reference / "job.toml"), "--run-dir", str(run_dir), "-q"]
    proc = subprocess.run([sys.executable, "-c", AS_IF_ON_GPU, *args], capture_output=True, text=True, timeout=600,
                          cwd=REPO, start_new_session=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    marker = json.loads(next((run_dir / "completions" / "sketch-pool").glob("0*.json")).read_text())
    assert marker["compute"] == {"precision": "bf16-autocast", "device": "cpu"}
    rc, out = cli(*args)
    assert_clean_error(rc, out, "holds sketches computed in bf16-autocast; this one would compute float32")
    assert not (run_dir / "stages" / "dedup-pool.json").exists()


# ---------------------------------------------------------------- one lock owner


def test_a_live_lock_of_the_same_slurm_job_is_not_taken_over(tmp_path, monkeypatch):
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        owner = {"host": socket.gethostname(), "pid": sleeper.pid, "slurm_job_id": "77", "slurm_restart": 0,
                 "since": 0, "nonce": "first"}
        (tmp_path / "LOCK").write_text(json.dumps(owner))
        monkeypatch.setenv("SLURM_JOB_ID", "77")  # a second `run` inside the same allocation
        monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
        with pytest.raises(RunLockedError, match="in use by another run"):
            RunLock(tmp_path / "LOCK", report=lambda m: None).acquire()
        assert json.loads((tmp_path / "LOCK").read_text())["nonce"] == "first"
    finally:
        sleeper.kill()
        sleeper.wait()


# Takes the run's lock away (as a --break-lock elsewhere would) once dedup has found its rows, just
# before it would rewrite them.
LOCK_STOLEN = """
import json, sys
from pathlib import Path
from iprox_ray.cli.main import main
from iprox_ray.stages import dedup
inner = dedup.find_duplicates
def stolen(store, **kw):
    out = inner(store, **kw)
    lock = Path(sys.argv[sys.argv.index("--run-dir") + 1]) / "LOCK"
    lock.write_text(json.dumps({"host": "elsewhere", "pid": 1, "since": 0, "nonce": "thief"}))
    return out
dedup.find_duplicates = stolen
sys.exit(main(sys.argv[1:]))
"""


def test_a_run_whose_lock_was_taken_over_stops_before_its_next_write(reference, tmp_path):
    run_dir = _copy(reference, tmp_path)
    for stage in ("dedup-pool", "dedup-targets-main", "score-main", "select-main"):
        (run_dir / "stages" / f"{stage}.json").unlink()
    proc = subprocess.run([sys.executable, "-c", LOCK_STOLEN, "run", str(reference / "job.toml"), "--run-dir",
                           str(run_dir), "-q"], capture_output=True, text=True, timeout=600, cwd=REPO)
    out = proc.stdout + proc.stderr
    assert_clean_error(proc.returncode, out, "was taken over while this run held it", "host elsewhere",
                       "stopping before it would rewrite the row status of")
    assert not (run_dir / "stages" / "dedup-targets-main.json").exists()
    assert json.loads((run_dir / "LOCK").read_text())["nonce"] == "thief"  # the new owner's lock is left alone


def test_verify_repair_and_score_wait_for_a_live_array_group(reference, tmp_path):
    run_dir = _copy(reference, tmp_path)
    group_lock = run_dir / "locks" / "group-0000"
    group_lock.parent.mkdir()
    group_lock.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": 0, "nonce": "g0"}))
    rc, out = cli("verify", str(run_dir), "--repair")
    assert_clean_error(rc, out, "is in use by another run", f"pid {os.getpid()}")
    rc, out = cli("score", str(run_dir), "--target", str(reference / "data" / "target.jsonl"), "--name", "t2", "-q")
    assert_clean_error(rc, out, "is in use by another run", f"pid {os.getpid()}")
    assert not (run_dir / "LOCK").exists() and group_lock.exists()
