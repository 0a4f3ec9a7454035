"""Stage: select. Streams the score arrays with Numba; selection.parquet with weights and provenance.

Strategies: `topk` (global top-k of the aggregated score), `round-robin` (target examples take
turns, each taking its best unselected row, from the per-example top-k lists the score stage
kept in `score_candidates/<target>`), `weights` (top-k with Influence Distillation's λ-bisection weights).
Uniform strategies give every selected row the weight N/k, so weights always sum to N (the valid
pool size), as the Influence Distillation objective normalises them. The plain top-k is chosen and
written with memory independent of k (stages/selection_output.py); the others write their picks a
batch of ranks at a time.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from iprox_ray.corpus.manifest import Manifest
from iprox_ray.execution.context import RunContext
from iprox_ray.influence.roundrobin import round_robin
from iprox_ray.influence.topk import topk_stream
from iprox_ray.influence.weights import lambda_bisection
from iprox_ray.methods.scorers import count_valid
from iprox_ray.stages.rr_candidates import read_candidates
from iprox_ray.stages.selection_output import SELECTION_SCHEMA, write_ranked, write_top_k  # noqa: F401 (schema)
from iprox_ray.store.digest import read_checked
from iprox_ray.store.layout import score_candidates, select_stage
from iprox_ray.store.sketch_store import SplitStore, open_root


def _chunks(arr, n_rows: int, S: int):
    return ((start, read_checked(arr, slice(start, start + S))) for start in range(0, n_rows, S))


def select_round_robin(scores, candidates, k: int, seed: int, S: int) -> tuple[np.ndarray, np.ndarray, int, list[str]]:
    """(rows in pick order, picking column per row, non-finite aggregated scores, column labels), from
    the per-example candidate lists the score stage kept (`candidates`: its zarr group)."""
    non_finite = sum(int((~np.isfinite(chunk)).sum()) for _, chunk in _chunks(scores, scores.shape[0], S))
    per_column, labels = read_candidates(candidates, k)
    picked, by = round_robin(per_column, k, seed)
    return picked, by, non_finite, labels


def _picked_values(scores, rows: np.ndarray) -> np.ndarray:
    """The scores of rows in pick order (read in store order)."""
    if not len(rows):
        return np.empty(0, np.float64)
    order = np.argsort(rows)
    values = np.empty(len(rows), np.float64)
    values[order] = read_checked(scores, rows[order])
    return values


def _picked_by(labels: list[str], by: np.ndarray) -> pa.Array:
    """The label of the target example whose turn chose each row (its index past the labels)."""
    names = [*labels, *map(str, range(len(labels), int(by.max(initial=0)) + 1))]
    return pc.take(pa.array(names, pa.string()), pa.array(by.astype(np.int64)))


def run_select(ctx: RunContext, scores_name: str, manifest: Manifest, target_name: str) -> dict:
    stage = select_stage(target_name)
    done = ctx.stage_done(stage)
    if done:
        return done
    spec = ctx.job.selection
    pool = SplitStore.open(ctx.layout.store, "pool")
    root = open_root(ctx.layout.store)
    scores = root[scores_name]
    valid = count_valid(pool)
    k = spec.size_for(valid)
    S = pool.rows_per_shard
    strategy = spec.strategy
    cand_path = score_candidates(target_name)
    if strategy == "round-robin" and cand_path not in root:
        strategy = "topk"  # one column (random, mid-ppl, or a single target example): round-robin is top-k
    path = ctx.layout.selection(target_name)
    ctx.guard(f"write {path}")
    info_extra: dict = {}
    if strategy == "topk" and scores.dtype == np.float32:  # memory independent of k
        top = write_top_k(path, scores, pool, manifest, k, float(valid), spill_dir=ctx.layout.root)
        selected, non_finite = top["selected"], top["non_finite"]
        cutoff, weights_sum = top["cutoff"], top["weights_sum"]
    else:
        picked_by = None
        if strategy == "round-robin":
            rows, by, non_finite, labels = select_round_robin(scores, root[cand_path], k, spec.seed, S)
            values, picked_by = _picked_values(scores, rows), _picked_by(labels, by)
        else:
            want = k + 1 if strategy == "weights" else k
            rows, values, non_finite = topk_stream(_chunks(scores, pool.n_rows, S), want)
        if strategy == "weights" and len(rows):
            k_eff = min(k, len(rows))
            res = lambda_bisection(values, k_eff, float(valid))
            rows, values, weights = rows[:k_eff], values[:k_eff], res.weights
            info_extra = {"lambda": res.lam, "tau": res.tau, "bisection_iterations": res.iterations}
        else:
            weights = np.full(len(rows), valid / max(1, len(rows)))
        write_ranked(path, pool, manifest, rows, values, weights, picked_by)
        selected, weights_sum = len(rows), float(np.sum(weights))
        cutoff = float(values.min()) if len(values) and strategy != "round-robin" else None
    info = {"selection": str(path), "k": k, "selected": selected, "strategy": strategy, "valid_rows": valid,
            "non_finite_scores": int(non_finite - (pool.n_rows - valid)), "cutoff": cutoff,
            "weights_sum": float(weights_sum), **info_extra}
    ctx.mark_stage_done(stage, info, outputs=(path,))
    return info
