"""Fault injection, runs: name attacks, the lock race, damaged and deleted outputs, swapped model
files, a poisoned model, and SIGKILL of the driver and of an actor, each followed by the user's
next step (bad rows and files: test_fault_inputs.py).

Messages are asserted, not only exit codes; every rerun after a fault must give the bytes of an
uninterrupted run.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from iprox_ray.execution import ray_pool
from iprox_ray.store.lock import RunLock, RunLockedError

from conftest import REPO, TOKENIZER
from fault_tools import assert_clean_error, cli, reference, run_outputs, tree_digest  # noqa: F401 (fixture)

# ---------------------------------------------------------------- names


def test_dot_names_are_refused_and_nothing_outside_the_run_is_deleted(reference, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(reference / "run", run_dir)
    rc, out = cli("run", str(reference / "job.toml"), "--run-dir", str(tmp_path / "other"), "--set", 'run.name=".."')
    assert_clean_error(rc, out, "run.name")
    for name in ("..", ".", "../x"):
        rc, out = cli("score", str(run_dir), "--target", str(reference / "data" / "target.jsonl"),
                      "--name", name, "--force", "-q")
        assert_clean_error(rc, out, "target name")
    assert (run_dir / "config.json").exists() and (run_dir / "selections" / "main" / "selection.parquet").exists()


# ---------------------------------------------------------------- the lock


def _contend(path: str, barrier, results) -> None:
    barrier.wait()
    lock = RunLock(Path(path), report=lambda m: None)
    try:
        lock.acquire()
    except RunLockedError as exc:
        results.put(("refused", str(exc)))
        return
    results.put(("held", lock.nonce))
    time.sleep(1.0)  # hold it while the other process tries
    lock.release()


def test_two_processes_racing_for_a_stale_lock_never_both_hold_it(tmp_path):
    ctx = mp.get_context("fork")
    dead = subprocess.Popen(["true"])
    dead.wait()
    for attempt in range(4):
        path = tmp_path / f"LOCK{attempt}"
        path.write_text(json.dumps({"host": os.uname().nodename, "pid": dead.pid, "since": 0, "nonce": "stale"}))
        barrier, results = ctx.Barrier(2), ctx.Queue()
        procs = [ctx.Process(target=_contend, args=(str(path), barrier, results)) for _ in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(30)
        outcomes = sorted(results.get(timeout=5) for _ in procs)
        assert [o[0] for o in outcomes] == ["held", "refused"], outcomes
        assert "in use by another run" in outcomes[1][1]
        assert not path.exists()  # the holder released its own lock
        assert not list(tmp_path.glob(f".{path.name}.*"))  # no private names left behind


def test_release_never_removes_a_lock_that_was_taken_over(tmp_path):
    path = tmp_path / "LOCK"
    first = RunLock(path, report=lambda m: None)
    first.acquire()
    second = RunLock(path, force=True, report=lambda m: None)
    second.acquire()  # --break-lock while the first still runs
    said: list[str] = []
    first.report = said.append
    first.release()
    assert json.loads(path.read_text())["nonce"] == second.nonce
    assert "was taken over" in said[0]
    second.release()
    assert not path.exists()


# ---------------------------------------------------------------- damaged and missing outputs


def test_a_damaged_chunk_is_named_verified_repaired_and_redone_alone(reference, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(reference / "run", run_dir)
    chunk = run_dir / "store.zarr" / "pool" / "sketch" / "c" / "3" / "0"
    data = bytearray(chunk.read_bytes())
    data[20:24] = b"XXXX"
    chunk.write_bytes(bytes(data))
    rc, out = cli("score", str(run_dir), "--target", str(reference / "data" / "target.jsonl"), "--name", "again", "-q")
    assert_clean_error(rc, out, "pool/sketch", "cannot be read", "iprox-ray verify RUN_DIR --repair")
    rc, out = cli("verify", str(run_dir))
    assert rc == 1 and "damaged: sketch-pool shard 3 (pool)" in out and "1 damaged" in out, out
    rc, out = cli("verify", str(run_dir), "--repair")
    assert rc == 0 and "forgot 1 damaged item(s)" in out, out
    markers = run_dir / "completions" / "sketch-pool"
    before = {p.name: p.read_bytes() for p in markers.glob("[0-9]*.json")}
    assert "000003.json" not in before
    rc, out = cli("run", str(reference / "job.toml"), "--run-dir", str(run_dir), "-q")
    assert rc == 0, out[-3000:]
    assert all((markers / name).read_bytes() == data for name, data in before.items())  # only shard 3 redone
    ours, theirs = tree_digest(run_dir / "store.zarr" / "pool"), tree_digest(reference / "run" / "store.zarr" / "pool")
    assert ours == theirs
    assert (run_dir / "selections/main/selection.parquet").read_bytes() == \
        (reference / "run" / "selections/main/selection.parquet").read_bytes()
    rc, out = cli("verify", str(run_dir))
    assert rc == 0 and "0 damaged" in out


def test_a_store_without_root_metadata_is_refused_then_rebuilt(reference, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(reference / "run", run_dir)
    (run_dir / "store.zarr" / "zarr.json").unlink()
    (run_dir / "stages" / "score-main.json").unlink()  # so that the run must open the store
    rc, out = cli("run", str(reference / "job.toml"), "--run-dir", str(run_dir), "-q")
    assert_clean_error(rc, out, "has no zarr.json but holds data", "--repair")
    assert (run_dir / "store.zarr" / "pool" / "sketch").exists()  # nothing was deleted
    rc, out = cli("verify", str(run_dir), "--repair")
    assert rc == 0 and "rebuilt store metadata: store.zarr" in out, out
    rc, out = cli("run", str(reference / "job.toml"), "--run-dir", str(run_dir), "-q")
    assert rc == 0, out[-3000:]
    assert run_outputs(run_dir) == run_outputs(reference / "run")


def test_deleted_outputs_of_finished_stages_are_recreated(reference, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(reference / "run", run_dir)
    (run_dir / "selections" / "main" / "selection.parquet").unlink()
    shutil.rmtree(run_dir / "store.zarr" / "scores" / "main")
    rc, out = cli("run", str(reference / "job.toml"), "--run-dir", str(run_dir), "-q")
    assert rc == 0, out[-3000:]
    assert "score-main: its output store.zarr/scores/main is missing; redoing the stage" in out
    assert "select-main: its output selections/main/selection.parquet is missing" in out
    assert run_outputs(run_dir) == run_outputs(reference / "run")


def test_model_files_swapped_between_resumes_are_refused(reference, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(json.loads((reference / "run" / "config.json").read_text())["spec"]["model"]["path"], model)
    run_dir = tmp_path / "run"
    rc, out = cli("run", str(reference / "job.toml"), "--run-dir", str(run_dir), "-q", "--set", f'model.path="{model}"')
    assert rc == 0, out[-3000:]
    config = json.loads((model / "config.json").read_text())
    config["rms_norm_eps"] = config.get("rms_norm_eps", 1e-6) * 2
    (model / "config.json").write_text(json.dumps(config))
    rc, out = cli("run", str(reference / "job.toml"), "--run-dir", str(run_dir), "-q", "--set", f'model.path="{model}"')
    assert_clean_error(rc, out, "the model files changed", "model: config.json changed", "--force-new")
    rc, out = cli("score", str(run_dir), "--target", str(reference / "data" / "target.jsonl"), "--name", "t2", "-q")
    assert_clean_error(rc, out, "the model files changed since the pool was sketched")


def test_a_poisoned_weight_makes_rows_non_finite_counted_and_never_selected(reference, tmp_path):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    src = Path(json.loads((reference / "run" / "config.json").read_text())["spec"]["model"]["path"])
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(src))
    token = AutoTokenizer.from_pretrained(TOKENIZER).encode(" the", add_special_tokens=False)[0]
    with torch.no_grad():
        model.get_input_embeddings().weight[token] = float("nan")  # reached by the prose rows only
    model.save_pretrained(tmp_path / "poisoned")
    run_dir = tmp_path / "run"
    rc, out = cli("run", str(reference / "job.toml"), "--run-dir", str(run_dir),
                  "--set", f'model.path="{tmp_path}/poisoned"', "--set", 'model.init="pretrained"')
    assert rc == 0, out[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    bad = summary["rows_nonfinite"]["pool"]
    assert 0 < bad < 96 and f"{bad} non-finite under the model (never selected)" in out
    assert "warm-up: skipped" in out and "construction row(s) whose logits are not finite" in out
    import zarr

    pool = zarr.open_group(str(run_dir / "store.zarr" / "pool"), mode="r")
    written, ids = pool["written"][:], pool["sample_id"][:]
    nonfinite_ids = {str(i) for i, w in zip(ids, written) if w == 3}
    assert len(nonfinite_ids) == bad
    chosen = set(pq.read_table(run_dir / "selections/main/selection.parquet").column("sample_id").to_pylist())
    assert chosen and not chosen & nonfinite_ids


# ---------------------------------------------------------------- SIGKILL


# Runs the CLI with one product function wrapped to SIGKILL its own process group at a chosen call.
HARNESS = """
import os, signal, sys
from iprox_ray.cli.main import main
from iprox_ray.execution import context
from iprox_ray.store import markers
point, n = sys.argv[1], int(sys.argv[2])
calls = []
def die():
    os.killpg(os.getpgrp(), signal.SIGKILL)
if point.startswith("stage:"):  # after the stage's outputs, before its marker
    inner = context.RunContext.mark_stage_done
    def wrapped(self, stage, info, outputs=()):
        if stage == point[6:]:
            die()
        return inner(self, stage, info, outputs)
    context.RunContext.mark_stage_done = wrapped
else:  # shard: the n-th shard's rows are in the store, its marker is not
    inner = markers.ShardMarkers.mark_done
    def wrapped(self, shard_id, info):
        calls.append(shard_id)
        if len(calls) == n and self.done_dir.name == point:
            die()
        return inner(self, shard_id, info)
    markers.ShardMarkers.mark_done = wrapped
sys.exit(main(sys.argv[3:]))
"""


@pytest.mark.parametrize("point,n", [("stage:warmup", 0), ("stage:proxy", 0), ("sketch-pool", 5),
                                     ("stage:dedup-pool", 0), ("stage:score-main", 0), ("stage:select-main", 0)])
def test_a_driver_killed_at_any_point_resumes_to_identical_bytes(reference, tmp_path, point, n):
    run_dir = tmp_path / "run"
    args = ["run", str(reference / "job.toml"), "--run-dir", str(run_dir), "-q"]
    proc = subprocess.run([sys.executable, "-c", HARNESS, point, str(n), *args], capture_output=True, text=True,
                          timeout=600, cwd=REPO, start_new_session=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert not (run_dir / "summary.json").exists()
    rc, out = cli(*args)
    assert rc == 0, out[-3000:]
    assert "taking over the lock" in out
    assert run_outputs(run_dir) == run_outputs(reference / "run")


# Ray titles an actor's process `ray::<class>` (or `ray::<class>.<method>` while it runs one).
ACTOR_TITLE = f"ray::{ray_pool._Worker.__name__}"


def _ray_worker_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if cmd.startswith(ACTOR_TITLE):
                pids.append(int(entry.name))
    return pids


@pytest.mark.slow
def test_an_actor_killed_mid_run_is_replaced_and_the_result_is_unchanged(reference, tmp_path):
    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "iprox_ray.cli.main", "run", str(reference / "job.toml"), "--run-dir", str(run_dir),
            "-q", "--set", 'cluster.executor="ray"', "--set", "cluster.actors=2"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
                            start_new_session=True)
    inflight, deadline, victim = run_dir / "inflight" / "sketch-pool", time.time() + 300, None
    while victim is None and time.time() < deadline and proc.poll() is None:
        workers = _ray_worker_pids()
        if workers and inflight.exists() and list(inflight.glob("*.json")):
            victim = workers[0]
            os.kill(victim, signal.SIGKILL)
        time.sleep(0.02)
    out, _ = proc.communicate(timeout=600)
    assert victim is not None, "the run ended before an actor could be killed"
    assert proc.returncode == 0, out[-3000:]
    assert run_outputs(run_dir) == run_outputs(reference / "run")
