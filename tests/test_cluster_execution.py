"""The demo job (reduced) on a real SLURM cluster on localhost, through submitit.

One two-node cluster (slurm/cluster.sh: munged, slurmctld, two slurmd) serves every test here.
Each run is compared bitwise with one local run of the same job: the store, and the selection.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from test_end_to_end import tree_digest

from conftest import ASSETS, REPO

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

DEMO = REPO / "jobs" / "demo.toml"
PROFILE = REPO / "cluster" / "slurm-localhost.toml"
POOL_ROWS = 384
ROWS_PER_SHARD = 16
N_SHARDS = POOL_ROWS // ROWS_PER_SHARD


def _slurm_missing() -> str | None:
    if not all(Path("/usr/sbin", d).exists() for d in ("slurmctld", "slurmd", "munged")) or not shutil.which("sbatch"):
        return "SLURM is not installed (make test installs slurmctld slurmd slurm-client munge)"
    if os.geteuid() != 0:
        return "the local SLURM test cluster needs root"
    return None


@pytest.fixture(scope="module")
def cluster():
    """A two-node SLURM cluster on localhost for the whole module; yields the environment to use."""
    missing = _slurm_missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"{missing}: the SLURM tests must run in CI")
        pytest.skip(missing)
    folder = Path(tempfile.mkdtemp(prefix="iprox-slurm-", dir="/tmp"))  # short: munge socket path
    script = REPO / "slurm" / "cluster.sh"
    start = subprocess.run(["bash", str(script), "start", str(folder), "2", "2", "6000"],
                           capture_output=True, text=True, timeout=120)
    assert start.returncode == 0, start.stdout + start.stderr
    env = {**os.environ, "SLURM_CONF": str(folder / "slurm.conf"),
           "PATH": f"{folder / 'bin'}:{os.environ['PATH']}"}
    try:
        yield env
    finally:
        subprocess.run(["bash", str(script), "stop", str(folder)], capture_output=True, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def job_args(tmp_path_factory) -> list[str]:
    """The demo job reduced: the first rows of one pool file and a tiny model config."""
    folder = tmp_path_factory.mktemp("reduced-demo")
    table = pq.read_table(ASSETS / "pool" / "part-0000.parquet").slice(0, POOL_ROWS)
    pq.write_table(table, folder / "pool.parquet")
    config = json.loads((ASSETS / "model" / "config.json").read_text())
    config.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2)
    (folder / "model").mkdir()
    (folder / "model" / "config.json").write_text(json.dumps(config))
    sets = [f'data.pool.paths=["{folder / "pool.parquet"}"]', f"model.path={folder / 'model'}",
            f"data.pool.rows_per_shard={ROWS_PER_SHARD}", "data.max_length=128", "warmup.epochs=1",
            "selection.k=20", "cluster.actors=2",
            # execution is under test here, not the maths
            "fidelity.enabled=false", "proxy.align_epochs=0", 'proxy.method="ipsvd"']
    return [x for item in sets for x in ("--set", item)]


def iprox(*args: str, env=None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "iprox_ray.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def submit_cmd(run_dir: Path, job_args: list[str], logs: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "iprox_ray.cli.main", "submit", str(DEMO), "--cluster", str(PROFILE),
            "--run-dir", str(run_dir), *job_args, "--set", f"cluster.slurm.folder={logs}", "-q", *extra]


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, job_args) -> Path:
    run_dir = tmp_path_factory.mktemp("local") / "run"
    proc = iprox("run", str(DEMO), "--run-dir", str(run_dir), *job_args, "-q")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def assert_identical(run_dir: Path, reference: Path) -> None:
    assert tree_digest(run_dir / "store.zarr") == tree_digest(reference / "store.zarr")
    ours = pq.read_table(run_dir / "selections/main/selection.parquet")
    assert ours.equals(pq.read_table(reference / "selections/main/selection.parquet"))
    assert ours.num_rows == 20


def done_markers(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (run_dir / "completions" / "sketch-pool").glob("*.json")}


def wait_until(predicate, what: str, timeout: float = 300, proc: subprocess.Popen | None = None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"ended before {what}: {proc.stdout.read()[-3000:]}")
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def slurm(env, *args: str) -> str:
    proc = subprocess.run(list(args), capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def job_state(env, job_id: str) -> str:
    out = slurm(env, "scontrol", "show", "job", "-o", job_id)
    return out.split("JobState=")[1].split()[0]


def submitted_job(run_dir: Path) -> str:
    def first() -> str | None:
        records = sorted((run_dir / "slurm" / "jobs").glob("*.json")) if (run_dir / "slurm" / "jobs").exists() else []
        return records[0].stem if records else None

    return wait_until(first, "a submitted job record", timeout=60)


def job_processes(job_id: str) -> list[int]:
    """Processes (other than slurmstepd) whose environment says they belong to this SLURM job."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            env = (proc / "environ").read_bytes().split(b"\0")
            cmd = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if f"SLURM_JOB_ID={job_id}".encode() in env and b"slurmstepd" not in cmd:
            pids.append(int(proc.name))
    return pids


def busy_actor(node_ip: str) -> int | None:
    """PID of a sketch actor in the middle of a shard, on the Ray node with this address."""
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            if not cmd.startswith("ray::_Worker.process"):
                continue
            parent = (proc / "stat").read_text().rsplit(")", 1)[1].split()[1]
            raylet = Path(f"/proc/{parent}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError):
            continue
        if f"--node_ip_address={node_ip}" in raylet:
            return int(proc.name)
    return None


def test_gang_job_on_slurm_matches_the_local_run(cluster, job_args, local_run, tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.run(submit_cmd(run_dir, job_args, tmp_path / "logs", "--wait"), capture_output=True,
                          text=True, env=cluster, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_identical(run_dir, local_run)
    status = iprox("status", str(run_dir), env=cluster)
    assert "gang" in status.stdout and "COMPLETED" in status.stdout, status.stdout
    assert f"{N_SHARDS}/{N_SHARDS} shards done" in status.stdout


def ray_node_group(node_ip: str) -> int | None:
    """Process group of the `ray start --block` daemon serving this node address (one per node)."""
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if " start --block " in cmd and f"--node-ip-address={node_ip}" in cmd:
            return os.getpgid(int(proc.name))
    return None


def test_two_node_gang_survives_a_killed_actor_and_a_dead_node(cluster, job_args, local_run, tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(submit_cmd(run_dir, job_args, tmp_path / "logs", "--wait",
                                       "--set", "cluster.slurm.nodes=2"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=cluster)
    job_id = submitted_job(run_dir)

    def both_nodes_worked() -> bool:
        nodes = {json.loads(b)["worker"]["node_ip"] for b in done_markers(run_dir).values()}
        return nodes == {"127.0.0.2", "127.0.0.3"}

    # Freeze the job once both nodes finished shards and the head node's actor is inside one.
    for _ in range(50):
        wait_until(lambda: both_nodes_worked() and busy_actor("127.0.0.2"), "work on both nodes", proc=proc)
        freeze(cluster, job_id)
        victim = busy_actor("127.0.0.2")
        if victim:
            break
        slurm(cluster, "scontrol", "resume", job_id)
    assert victim, "never caught the head node's actor inside a shard"
    before = done_markers(run_dir)
    assert len(before) < N_SHARDS
    os.kill(victim, signal.SIGKILL)  # an actor dies mid-shard
    os.killpg(ray_node_group("127.0.0.3"), signal.SIGKILL)  # the second node's Ray dies whole
    slurm(cluster, "scontrol", "resume", job_id)

    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert_identical(run_dir, local_run)
    after = done_markers(run_dir)
    assert all(after[name] == data for name, data in before.items())
    log = next((tmp_path / "logs").rglob("*_0_log.err")).read_text()
    died = re.findall(r"actor died on ShardRef\(stage='([\w-]+)', shard=(\d+)\)", log)
    assert len(died) >= 2, log[-3000:]  # the killed actor's shard and the dead node's
    for stage, shard in died:
        redone = json.loads((run_dir / "completions" / stage / f"{int(shard):06d}.json").read_text())
        assert redone["worker"]["node_ip"] == "127.0.0.2" and redone["worker"]["pid"] != victim


def start_and_freeze(cluster, run_dir: Path, job_args, logs: Path) -> tuple[subprocess.Popen, str]:
    """Submit (waiting in the background), and suspend the job once three pool shards are done.

    A suspended job (SIGSTOP on all its processes) is frozen mid-run: its lock stays held by a
    live process and its in-flight shards stay in flight, whatever the machine's load.
    """
    proc = subprocess.Popen(submit_cmd(run_dir, job_args, logs, "--wait"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=cluster)
    job_id = submitted_job(run_dir)
    wait_until(lambda: len(done_markers(run_dir)) >= 3, "three finished shards", proc=proc)
    freeze(cluster, job_id)
    return proc, job_id


def freeze(cluster, job_id: str) -> None:
    slurm(cluster, "scontrol", "suspend", job_id)
    wait_until(lambda: job_state(cluster, job_id) == "SUSPENDED", "the job to be suspended", timeout=60)


def test_scancel_then_resubmit_is_bitwise_identical_and_the_lock_names_its_owner(cluster, job_args, local_run,
                                                                                  tmp_path):
    run_dir = tmp_path / "run"
    proc, job_id = start_and_freeze(cluster, run_dir, job_args, tmp_path / "logs")
    before = done_markers(run_dir)
    assert 3 <= len(before) < N_SHARDS, len(before)

    # While it holds the directory: a second run refuses and names the owner; so does a second submit.
    second = iprox("run", str(DEMO), "--run-dir", str(run_dir), *job_args, "-q", env=cluster)
    assert second.returncode == 1, second.stdout[-2000:]
    assert "in use by another run" in second.stderr and f"SLURM job {job_id}" in second.stderr
    assert "pid " in second.stderr and "host " in second.stderr
    again = subprocess.run(submit_cmd(run_dir, job_args, tmp_path / "logs"), capture_output=True, text=True,
                           env=cluster, timeout=120)
    assert again.returncode == 1 and job_id in again.stderr, again.stderr
    status = iprox("status", str(run_dir), env=cluster)
    assert "SUSPENDED" in status.stdout and "lock: held by" in status.stdout, status.stdout
    assert "in flight for" in status.stdout, status.stdout

    slurm(cluster, "scancel", job_id)
    wait_until(lambda: job_state(cluster, job_id) == "CANCELLED" and not job_processes(job_id),
               "the cancelled job and all its processes to be gone", timeout=120)
    assert proc.wait(timeout=120) == 1  # --wait reports the cancelled job
    assert done_markers(run_dir) == before
    status = iprox("status", str(run_dir), env=cluster)
    assert "STALE" in status.stdout and "CANCELLED" in status.stdout, status.stdout
    assert "was in flight when its driver stopped" in status.stdout, status.stdout

    resumed = subprocess.run(submit_cmd(run_dir, job_args, tmp_path / "logs", "--wait"), capture_output=True,
                             text=True, env=cluster, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    after = done_markers(run_dir)
    assert len(after) == N_SHARDS and all(after[name] == data for name, data in before.items())
    assert_identical(run_dir, local_run)


def release(cluster, job_id: str) -> None:
    """SLURM holds a requeued job back two minutes (BeginTime), a suspended one also held: let it go."""
    wait_until(lambda: job_state(cluster, job_id) == "PENDING", "the requeued job to pend", timeout=120)
    if "JobHeldAdmin" in slurm(cluster, "scontrol", "show", "job", "-o", job_id):
        slurm(cluster, "scontrol", "release", job_id)
    slurm(cluster, "scontrol", "update", f"JobId={job_id}", "StartTime=now")


def test_preemption_and_scontrol_requeue_resume_to_bitwise_identical_results(cluster, job_args, local_run,
                                                                             tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(submit_cmd(run_dir, job_args, tmp_path / "logs", "--wait"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=cluster)
    job_id = submitted_job(run_dir)
    wait_until(lambda: len(done_markers(run_dir)) >= 3, "three finished shards", proc=proc)
    # Preemption as SLURM announces it: USR2 to the job's tasks. submitit calls the job's
    # checkpoint() and requeues it itself.
    slurm(cluster, "scancel", "--signal=USR2", job_id)
    release(cluster, job_id)
    first = done_markers(run_dir)
    assert len(first) < N_SHARDS
    wait_until(lambda: len(done_markers(run_dir)) >= len(first) + 3, "three more shards after preemption",
               proc=proc)
    freeze(cluster, job_id)
    second = done_markers(run_dir)
    assert len(second) < N_SHARDS
    # An administrator's requeue (of the frozen job: it comes back held).
    slurm(cluster, "scontrol", "requeue", job_id)
    release(cluster, job_id)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    after = done_markers(run_dir)
    assert len(after) == N_SHARDS and all(after[name] == data for name, data in second.items())
    record = json.loads((run_dir / "slurm" / "jobs" / f"{job_id}.json").read_text())
    assert [a["restart"] for a in record["attempts"]] == [0, 1, 2]
    log = "".join(p.read_text() for p in (tmp_path / "logs").rglob("*_0_log.*"))
    assert "this job is preempted" in log and "Calling checkpoint method" in log, log[-3000:]
    assert "taking over the lock" in log and f"SLURM job {job_id} was requeued since (restart 0 -> 1)" in log
    assert_identical(run_dir, local_run)


def test_array_mode_sketches_fixed_shard_groups_then_selects(cluster, job_args, local_run, tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.run(submit_cmd(run_dir, job_args, tmp_path / "logs", "--wait",
                                     "--set", "cluster.slurm.mode=array", "--set", "cluster.slurm.array_jobs=2"),
                          capture_output=True, text=True, env=cluster, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_identical(run_dir, local_run)
    records = [json.loads(p.read_text()) for p in (run_dir / "slurm" / "jobs").glob("*.json")]
    assert sorted(r["role"] for r in records) == ["array", "array", "prepare", "select"]
    assert json.loads((run_dir / "manifest" / "array-groups.json").read_text())["groups"] == 2
    # Each group's shards were sketched by its own job: two distinct worker processes, split by parity.
    by_pid: dict[int, set[int]] = {}
    for marker in done_markers(run_dir).values():
        m = json.loads(marker)
        by_pid.setdefault(m["worker"]["pid"], set()).add(m["shard"] % 2)
    assert all(len(parities) == 1 for parities in by_pid.values()), by_pid
    # --wait returns once the select job's result is written; SLURM marks the job COMPLETED a
    # moment later, when its process has exited.
    deadline = time.monotonic() + 60
    while True:
        status = iprox("status", str(run_dir), env=cluster)
        if status.stdout.count("COMPLETED") == 4 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert status.stdout.count("COMPLETED") == 4, status.stdout
