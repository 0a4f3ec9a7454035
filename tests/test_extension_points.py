"""Adding a scoring method or a launcher is one module plus one registry line: a toy of each, defined
here and registered by a line, runs a whole job (inline, tiny model) with nothing else changed.
(The sketch and embedding kinds have their own toy tests beside their numerics.)"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import pyarrow.parquet as pq
import pytest
import zarr

from iprox_ray.driver.pipeline import run_job
from iprox_ray.execution.launcher import LocalLauncher
from iprox_ray.execution.launchers import LAUNCHERS
from iprox_ray.methods.base import Needs, ScoringMethod, TargetInputs
from iprox_ray.methods.registry import METHODS
from iprox_ray.methods.scorers import Scorer, candidate_mask
from iprox_ray.spec import SpecError, load_job
from iprox_ray.store.sketch_store import CANDIDATES

FAST = ["warmup.enabled=false", 'proxy.method="none"', "fidelity.enabled=false", "output.plot=false"]


@dataclass
class FirstRowsScorer(Scorer):
    """Prefers earlier pool rows: score = −row, so the selection is the first k candidates."""

    def block(self, shard_id: int) -> np.ndarray:
        span = self.pool.shard_rows(shard_id)
        out = self._empty()
        ok = candidate_mask(self.pool, span, need_sketch=False)
        rows = np.arange(span.start, span.start + self.pool.rows_per_shard, dtype=np.float32)
        out[ok, 0] = -rows[ok]
        return out


class FirstRows(ScoringMethod):
    name = "toy-first-rows"
    needs = Needs(pool_sketch="none", target_sketch=False)
    single_score = True

    def build_scorer(self, inputs: TargetInputs) -> Scorer:
        return FirstRowsScorer(inputs.pool, 1, {})


class CountingLauncher(LocalLauncher):
    """This machine, but it counts the worker sessions it hands out and says a lock's owner is gone
    when the owner says so (the evidence a real launcher would get from its scheduler)."""

    name = "toy-counting"
    sessions = 0

    @contextlib.contextmanager
    def workers(self, job):
        type(self).sessions += 1
        with super().workers(job) as plan:
            yield plan

    def lock_probes(self):
        return (lambda owner: "the toy scheduler ended it" if owner.get("toy_gone") else None,)


@pytest.fixture
def registered():
    METHODS.add(FirstRows.name, f"{__name__}:FirstRows")  # the one registry line
    LAUNCHERS.add(CountingLauncher.name, f"{__name__}:CountingLauncher")  # the one registry line
    try:
        yield
    finally:
        METHODS.remove(FirstRows.name)
        LAUNCHERS.remove(CountingLauncher.name)


def test_a_toy_method_and_a_toy_launcher_run_a_job(registered, make_job, tmp_path):
    from iprox_ray.execution.launchers import lock_probes

    job = load_job(make_job(n_pool=48, k=5), [*FAST, f'scoring.method="{FirstRows.name}"',
                                              f'cluster.kind="{CountingLauncher.name}"'])
    run_job(job, tmp_path / "run", quiet=True)
    picked = pq.read_table(tmp_path / "run" / "selections/main/selection.parquet").column("store_row").to_pylist()
    written = zarr.open_group(str(tmp_path / "run" / "store.zarr"), mode="r")["pool"]["written"][:]
    assert picked == np.flatnonzero(np.isin(written, CANDIDATES))[:5].tolist()  # the toy scorer's choice
    assert CountingLauncher.sessions == 1  # the sharded stages asked the job's launcher for workers
    assert any(probe({"toy_gone": True}) for probe in lock_probes())  # its lock evidence reaches every lock


def test_unregistered_names_are_refused_when_the_job_is_checked(make_job):
    from iprox_ray.driver.run import check_names

    with pytest.raises(SpecError, match="unknown scoring method 'toy-first-rows'"):
        check_names(load_job(make_job(), [*FAST, f'scoring.method="{FirstRows.name}"']))
    with pytest.raises(SpecError, match="unknown launcher 'toy-counting'"):
        check_names(load_job(make_job(), [*FAST, f'cluster.kind="{CountingLauncher.name}"']))
