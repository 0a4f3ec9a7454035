"""The Ray actor pool on a real local Ray: kept actors serve the next stage's task in the same
processes (old task torn down first), and an actor that cannot switch is replaced."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from iprox_ray.execution.executors import Callbacks
from iprox_ray.execution.planning import WorkerPlan, make_executor, shared_workers
from iprox_ray.execution.task import Resources, ShardRef

pytestmark = pytest.mark.slow


@dataclass
class LoggingTask:
    """Appends its lifecycle to a file per worker process; process() returns the pid."""

    name: str
    log_dir: str
    fail_setup_in: frozenset = frozenset()
    resources: Resources = field(default_factory=lambda: Resources(cpus=1, threads=1))

    def _log(self, event: str) -> None:
        with open(Path(self.log_dir) / f"{os.getpid()}.log", "a") as f:
            f.write(f"{event} {self.name}\n")

    def setup(self) -> None:
        if os.getpid() in self.fail_setup_in:
            raise RuntimeError("setup refused in this process")
        self._log("setup")

    def process(self, ref: ShardRef) -> dict:
        return {"pid": os.getpid()}

    def teardown(self) -> None:
        self._log("teardown")


def _run(executor, task, n=4) -> set[int]:
    seen: dict[ShardRef, dict] = {}
    failed = executor.run(task, [ShardRef(task.name, i) for i in range(n)],
                          Callbacks(lambda ref, stats: seen.__setitem__(ref, stats), lambda *a: None), 0)
    assert not failed and len(seen) == n
    return {stats["pid"] for stats in seen.values()}


def test_kept_actors_switch_tasks_in_place_and_a_failed_switch_is_replaced(tmp_path):
    from ray import cloudpickle

    from iprox_ray.execution.ray_session import ray_session

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the actors cannot import this test module
    logs = tmp_path / "logs"
    logs.mkdir()
    plan = WorkerPlan("ray", 2, Resources(cpus=1, threads=1))
    with ray_session("local", num_cpus=2):
        with shared_workers(plan) as shared:
            executor = make_executor(shared)
            assert make_executor(shared) is executor  # every stage gets the same pool
            first = _run(executor, LoggingTask("embed", str(logs)))
            second = _run(executor, LoggingTask("sketch", str(logs)))
            assert second == first and len(first) == 2  # the same two processes
            for pid in first:
                assert (logs / f"{pid}.log").read_text().splitlines() == [
                    "setup embed", "teardown embed", "setup sketch"]
            third = _run(executor, LoggingTask("score", str(logs), fail_setup_in=frozenset(first)))
            assert len(third) == 2 and not third & first  # fresh processes replaced both
        for pid in first:  # the refused switch had already torn the old task down
            assert (logs / f"{pid}.log").read_text().splitlines()[-1] == "teardown sketch"
        for pid in third:  # closing the plan tears the last task down
            assert (logs / f"{pid}.log").read_text().splitlines() == ["setup score", "teardown score"]
        # Without a shared pool, a run's workers end with it.
        fresh = make_executor(plan)
        _run(fresh, LoggingTask("alone", str(logs)))
        assert fresh.actors == []
