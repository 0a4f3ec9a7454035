"""Fault injection, the command line (issue 24 item 8): a user error is one `error:` line, never a
traceback; a bug is one line naming the file that holds its traceback (`--debug` prints it)."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from iprox_ray.cli import cmd_status
from iprox_ray.cli.common import KnownFailure, known_failures
from iprox_ray.cli.main import main
from iprox_ray.execution.task import Resources, ShardRef, WorkersLostError

from fault_tools import assert_clean_error, cli


def test_a_job_path_that_is_a_folder_is_one_line(tmp_path):
    rc, out = cli("run", str(tmp_path), "--run-dir", str(tmp_path / "run"))
    assert_clean_error(rc, out, f"error: {tmp_path} is a folder, not a spec file")
    assert rc == 2


def test_a_spec_that_is_not_utf8_is_one_line(job_file):
    job_file.write_bytes(job_file.read_bytes().replace(b'name = "t"', b'name = "caf\xe9"'))
    rc, out = cli("run", str(job_file), "--run-dir", str(job_file.parent / "run"))
    assert_clean_error(rc, out, "is not UTF-8 text", "TOML files are UTF-8")


@pytest.fixture
def job_file(make_job):
    return make_job(n_pool=16, rows_per_shard=8)


def test_force_new_twice_in_one_second_keeps_both_old_runs(job_file, tmp_path, monkeypatch):
    from iprox_ray.driver.rundir import check_run_dir
    from iprox_ray.driver.rundir import time as pipeline_time
    from iprox_ray.spec import load_job
    from iprox_ray.store.layout import RunLayout

    monkeypatch.setattr(pipeline_time, "strftime", lambda fmt, *a: "20260101-000000")  # one second
    job = load_job(job_file)
    layout = RunLayout(tmp_path / "run")
    for attempt in range(2):
        layout.root.mkdir(exist_ok=True)
        layout.config.write_text(json.dumps({"schema_version": 2, "fingerprint": f"other-{attempt}"}))
        check_run_dir(job, layout, force_new=True)
    asides = sorted(p.name for p in tmp_path.glob("run.replaced-*"))
    assert asides == ["run.replaced-20260101-000000", "run.replaced-20260101-000000-2"]
    assert [json.loads((tmp_path / a / "config.json").read_text())["fingerprint"] for a in asides] == \
        ["other-0", "other-1"]


def test_an_internal_error_is_one_line_and_its_traceback_is_kept(tmp_path, monkeypatch, capsys):
    def broken(args):
        raise KeyError("a bug deep inside")

    monkeypatch.setattr(cmd_status, "handle", broken)
    assert main(["status", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("error: internal error (KeyError: 'a bug deep inside'); the full traceback is in ")
    saved = Path(err.split("the full traceback is in ")[1].split(" (--debug")[0])
    try:
        assert "Traceback" in saved.read_text() and "a bug deep inside" in saved.read_text()
        assert saved.stat().st_mode & 0o077 == 0  # private: a traceback may show paths and data
    finally:
        saved.unlink()
    with pytest.raises(KeyError):
        main(["--debug", "status", str(tmp_path)])


@dataclass
class DyingTask:
    """Every process() kills its own worker process (an OOM kill, a crashed node)."""

    name: str = "sketch"
    resources: Resources = field(default_factory=lambda: Resources(cpus=1, threads=1))

    def setup(self) -> None:
        pass

    def process(self, ref: ShardRef) -> dict:
        os._exit(1)

    def teardown(self) -> None:
        pass


@pytest.mark.slow
def test_more_actor_deaths_than_the_pool_replaces_is_one_line():
    from ray import cloudpickle

    from iprox_ray.execution.executors import Callbacks
    from iprox_ray.execution.ray_pool import RayActorPoolExecutor
    from iprox_ray.execution.ray_session import ray_session

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the actors cannot import this module
    with ray_session("local", num_cpus=1):
        pool = RayActorPoolExecutor(num_actors=1, max_actor_deaths=1)
        with pytest.raises(KnownFailure) as err, known_failures():
            pool.run(DyingTask(), [ShardRef("sketch-pool", 0)], Callbacks(lambda *a: None, lambda *a: None), 2)
    assert isinstance(err.value.__cause__, WorkersLostError)
    message = str(err.value)
    assert "2 Ray actor deaths in one stage (at most 1 are replaced)" in message and "sketch-pool shard 0" in message
    assert "rerun to resume" in message and "\n" not in message
