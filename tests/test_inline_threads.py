"""The inline executor's one worker uses every core its process may run on (a SLURM task's CPUs,
a container's cpuset), not a Ray actor's `threads_per_actor`."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from iprox_ray.execution.worker_layout import worker_layout
from iprox_ray.spec import load_job


def test_the_inline_worker_uses_every_core_it_is_given(make_job):
    from iprox_ray.execution.launchers import launcher_for
    from iprox_ray.execution.planning import plan_workers, usable_cores

    cores = len(os.sched_getaffinity(0))
    job = load_job(make_job(n_pool=16))
    with launcher_for(job).workers(job) as plan:  # what the pipeline's sketch stage gets
        assert plan.executor == "inline" and plan.resources.threads == cores
    assert usable_cores() == cores
    assert plan_workers("inline", "auto", None, 1, 6, 0).resources.threads == 6  # a SLURM task's CPUs
    job = load_job(make_job(n_pool=16))
    assert worker_layout(job).threads == cores  # and what plan times the inline worker with


def test_usable_cores_follows_the_process_affinity():
    """A process pinned to one core (a SLURM task, a cpuset) gets one thread, not the machine's count."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one core: nothing to restrict")
    code = ("import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
            "from iprox_ray.execution.planning import plan_workers; "
            "print(plan_workers('inline', 'auto', None, 1, 0, 0).resources.threads)")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.stdout.strip() == "1"
