"""Fast checks of the cluster bookkeeping: lock ownership, shard groups, in-flight records, SLURM
job states (against a scripted scontrol), the sacct stand-in, and the status report."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from iprox_ray.driver.submission import owns
from iprox_ray.execution.executors import InlineExecutor
from iprox_ray.execution.run_status import collect_status, format_status
from iprox_ray.execution.runner import StageWork, run_sharded_stages
from iprox_ray.execution.slurm_jobs import job_state, slurm_owner_gone
from iprox_ray.execution.task import Resources, ShardRef
from iprox_ray.store.layout import RunLayout
from iprox_ray.store.lock import RunLock, RunLockedError
from iprox_ray.store.markers import ShardMarkers

from conftest import REPO

SCONTROL = """#!/bin/sh
# scripted scontrol: `show job -o ID`
case "$4" in
  11) echo "JobId=11 JobName=x JobState=RUNNING NodeList=n1 ExitCode=0:0" ;;
  12) echo "JobId=12 JobName=x JobState=CANCELLED NodeList=n1 ExitCode=0:15" ;;
  20) echo "JobId=21 ArrayJobId=20 ArrayTaskId=0 JobState=COMPLETED NodeList=n1 ExitCode=0:0"
      echo "JobId=20 ArrayJobId=20 ArrayTaskId=1-3 JobState=PENDING NodeList=(null) ExitCode=0:0" ;;
  *) echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1 ;;
esac
"""


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(SCONTROL)
    (bin_dir / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return bin_dir


def _write_lock(path: Path, **owner) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "slurm_job_id": None,
                                "since": time.time(), **owner}))


def test_a_live_owner_is_refused_by_name(tmp_path):
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        _write_lock(tmp_path / "LOCK", pid=sleeper.pid, slurm_job_id="4242")
        with pytest.raises(RunLockedError) as err:
            RunLock(tmp_path / "LOCK").acquire()
        text = str(err.value)
        assert f"host {socket.gethostname()}" in text and f"pid {sleeper.pid}" in text and "SLURM job 4242" in text
    finally:
        sleeper.kill()


def test_a_dead_owner_on_this_host_is_taken_over_with_a_message(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    _write_lock(tmp_path / "LOCK", pid=dead.pid)
    said = []
    with RunLock(tmp_path / "LOCK", report=said.append) as lock:
        assert lock.owner()["pid"] == os.getpid()
    assert said and f"pid {dead.pid} no longer runs" in said[0]
    assert not (tmp_path / "LOCK").exists()


def test_another_hosts_lock_needs_evidence_or_break_lock(tmp_path, fake_slurm, monkeypatch):
    _write_lock(tmp_path / "LOCK", host="elsewhere", pid=1, slurm_job_id="11")  # job RUNNING
    with pytest.raises(RunLockedError):
        RunLock(tmp_path / "LOCK", probes=(slurm_owner_gone,)).acquire()
    _write_lock(tmp_path / "LOCK", host="elsewhere", pid=1, slurm_job_id="12")  # job CANCELLED
    said = []
    RunLock(tmp_path / "LOCK", report=said.append, probes=(slurm_owner_gone,)).acquire()
    assert "SLURM job 12 is CANCELLED" in said[0]
    _write_lock(tmp_path / "LOCK", host="elsewhere", pid=1, slurm_job_id=None)
    with pytest.raises(RunLockedError):
        RunLock(tmp_path / "LOCK", probes=(slurm_owner_gone,)).acquire()
    said.clear()
    RunLock(tmp_path / "LOCK", force=True, report=said.append).acquire()
    assert "forced" in said[0]
    # A requeued job finds its own earlier lock (same job id, an earlier start) and resumes.
    _write_lock(tmp_path / "LOCK", host="elsewhere", pid=1, slurm_job_id="77", slurm_restart=0)
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    said.clear()
    RunLock(tmp_path / "LOCK", report=said.append).acquire()
    assert "requeued" in said[0]


def test_job_states_from_scontrol(fake_slurm):
    assert job_state("11") == "RUNNING"
    assert job_state("20_0") == "COMPLETED" or job_state("20") == "COMPLETED"
    assert job_state("99").startswith("unknown (not known")
    assert slurm_owner_gone({"slurm_job_id": "11"}) is None
    assert "no longer known" in slurm_owner_gone({"slurm_job_id": "99"})
    assert slurm_owner_gone({"slurm_job_id": None}) is None


def test_sacct_standin_speaks_submitits_format(fake_slurm):
    from submitit.slurm.slurm import SlurmInfoWatcher

    out = subprocess.run([str(REPO / "slurm" / "sacct-standin"), "-o", "JobID,State,NodeList", "--parsable2",
                          "-j", "11", "-j", "20", "-j", "99"], capture_output=True, text=True, check=True).stdout
    info = SlurmInfoWatcher().read_info(out)
    assert info["11"]["State"] == "RUNNING"
    assert info["20_0"]["State"] == "COMPLETED"
    assert info["20_2"]["State"] == "PENDING"  # a pending range expands to its tasks
    assert "99" not in info


@pytest.mark.parametrize("groups", [1, 2, 3, 7])
def test_array_groups_partition_the_shards(groups):
    refs = [ShardRef(stage, s) for stage in ("sketch-pool", "sketch-targets-main") for s in range(23)]
    owners = [[g for g in range(groups) if owns(groups, g)(ref)] for ref in refs]
    assert all(len(o) == 1 for o in owners)  # each shard has exactly one owner
    assert owners == [[g for g in range(groups) if owns(groups, g)(ref)] for ref in refs]  # deterministic


class RecordingTask:
    """Checks, inside process(), that the driver recorded the shard as in flight."""

    name = "rec"
    resources = Resources(threads=1)

    def __init__(self, inflight: Path):
        self.inflight = inflight
        self.seen: list[ShardRef] = []

    def setup(self) -> None: ...

    def teardown(self) -> None: ...

    def process(self, ref: ShardRef) -> dict:
        record = json.loads((self.inflight / f"{ref.shard:06d}.json").read_text())
        assert record["shard"] == ref.shard and record["driver"]["pid"] == os.getpid()
        self.seen.append(ref)
        return {"rows": 4, "seconds": 0.01}


def test_runner_runs_only_selected_shards_and_records_them_in_flight(tmp_path):
    layout = RunLayout(tmp_path)
    markers = ShardMarkers(layout.completions("s"), layout.failures("s"), layout.inflight("s"))
    markers.mark_started(5, {"attempt": 1})  # left by a dead driver of another part
    task = RecordingTask(layout.inflight("s"))
    report = run_sharded_stages([StageWork("s", 6, markers)], task, InlineExecutor(), show_progress=False,
                                select=owns(2, 1))
    assert [r.shard for r in task.seen] == [1, 3, 5]
    assert report.shards_run == 3 and markers.done_ids() == {1, 3, 5}
    assert markers.read_inflight() == []  # all ended; the stale record of shard 5 was replaced


def _fake_run(tmp_path: Path, owner_pid: int) -> RunLayout:
    layout = RunLayout(tmp_path / "run")
    layout.root.mkdir()
    layout.config.write_text("{}")
    (layout.root / "manifest").mkdir()
    pq.write_table(pa.table({"shard_id": [0, 1, 2, 3], "row_start": [0, 10, 20, 30], "row_stop": [10, 20, 30, 40]}),
                   layout.manifest("pool"))
    markers = ShardMarkers(layout.completions("sketch-pool"), layout.failures("sketch-pool"),
                           layout.inflight("sketch-pool"))
    now = time.time()
    for shard, finished in ((0, now - 20), (1, now - 10)):
        markers.mark_done(shard, {"rows": 10, "seconds": 10.0, "worker": {"node_ip": "127.0.0.2"}})
        data = json.loads(layout.completion("sketch-pool", shard).read_text())
        layout.completion("sketch-pool", shard).write_text(json.dumps({**data, "finished_at": finished}))
    markers.mark_started(2, {"attempt": 1, "worker": 0})
    markers.record_failure(3, "Traceback...\nValueError: bad shard", 3, True)
    _write_lock(layout.lock, pid=owner_pid, since=now - 60)
    return layout


def test_status_while_running_shows_in_flight_rate_and_eta(tmp_path):
    layout = _fake_run(tmp_path, os.getpid())
    status = collect_status(layout.root)
    pool = status["splits"]["pool"]
    assert status["live"] and pool["done"] == 2 and [r["shard"] for r in pool["in_flight"]] == [2]
    # 20 rows between shard 0's start (30 s ago) and shard 1's end (10 s ago); 20 rows remain
    assert pool["rows_per_s"] == pytest.approx(1.0, rel=0.01)
    assert pool["eta_s"] == pytest.approx(20.0, rel=0.01)
    text = format_status(status)
    assert "2/4 shards done, 2 pending, 1 failed, 0 rows quarantined, 1 in flight" in text
    assert "ValueError: bad shard" in text and "ETA" in text


def test_status_after_the_driver_died_reports_the_stale_lock_and_interrupted_shards(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    layout = _fake_run(tmp_path, dead.pid)
    text = format_status(collect_status(layout.root))
    assert "STALE" in text and "shard 2 was in flight when its driver stopped" in text and "ETA" not in text
    cli = subprocess.run([sys.executable, "-m", "iprox_ray.cli.main", "status", str(layout.root), "--json"],
                         capture_output=True, text=True)
    assert cli.returncode == 0 and json.loads(cli.stdout)["splits"]["pool"]["done"] == 2


def test_a_whole_run_waits_for_live_array_tasks(make_job, tmp_path):
    from iprox_ray.driver.pipeline import run_job
    from iprox_ray.spec import load_job

    layout = RunLayout(tmp_path / "run")
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        _write_lock(layout.group_lock(1), pid=sleeper.pid, slurm_job_id="500_1")
        with pytest.raises(RunLockedError, match="SLURM job 500_1"):
            run_job(load_job(make_job()), layout.root, quiet=True)
        assert not layout.lock.exists()  # refused before doing anything, lock released
    finally:
        sleeper.kill()
