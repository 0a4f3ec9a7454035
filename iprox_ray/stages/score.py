"""Stage: score. Stream the pool shard by shard against one target; write its score arrays.

`scores/<target>` holds one aggregated score per pool row (what top-k, the λ-weights and the plot
use); `score_columns/<target>` holds the per-subtask scores when there is more than one subtask;
round-robin keeps only each target example's best k rows (`score_candidates/<target>`, see
rr_candidates.py), never a rows × examples matrix. Non-candidates are NaN.
"""

from __future__ import annotations

import numpy as np

from iprox_ray.execution.context import RunContext
from iprox_ray.influence.column_topk import ColumnTopK
from iprox_ray.influence.columns import Columns, aggregate, by_example, by_subtask
from iprox_ray.methods.base import ScoringMethod, TargetInputs
from iprox_ray.methods.scorers import count_valid, holdout_line, read_landmarks
from iprox_ray.spec import SpecError
from iprox_ray.stages.preflight import NoUsableRowsError
from iprox_ray.stages.rr_candidates import check_round_robin_budget, write_candidates
from iprox_ray.stages.second_order import apply_second_order
from iprox_ray.store import driver_arrays
from iprox_ray.store.layout import POOL, score_array, score_candidates, score_columns, score_stage
from iprox_ray.store.read_ahead import threads_beside_readers
from iprox_ray.store.sketch_store import EMPTY, STATUS_NAMES, SplitStore, open_root
from iprox_ray.tasks.model_ref import ModelRef

SINGLE = Columns("single", ("all",), np.zeros(0, np.int64), np.ones(1, np.int64))


def _target_rows(ctx: RunContext, method: ScoringMethod, target: SplitStore, target_split: str) -> np.ndarray:
    rows = np.flatnonzero(method.usable_target_rows(ctx, target, target_split))
    if len(rows) == 0:
        written = target.read("written")
        counts = {STATUS_NAMES[int(c)]: int(n) for c, n in zip(*np.unique(written, return_counts=True)) if c != EMPTY}
        hint = ("; non-finite rows mean the model gives NaN/inf on them (a damaged weight?)"
                if counts.get("nonfinite") else "")
        raise NoUsableRowsError(f"no usable example in target {target_split!r}: rows by status "
                                f"{', '.join(f'{k} {v}' for k, v in sorted(counts.items()))}{hint}")
    return rows


def run_score(ctx: RunContext, method: ScoringMethod, target_split: str, target_name: str,
              ref: ModelRef | None = None) -> str:
    """Score the pool against `target_split` with `method`; returns the path of the aggregated score
    array. `ref` (the sketched model) is needed only by the second-order term."""
    stage = score_stage(target_name)
    name = score_array(target_name)
    if ctx.stage_done(stage):
        return name
    spec = ctx.job.scoring
    pool = SplitStore.open(ctx.layout.store, POOL)
    target = SplitStore.open(ctx.layout.store, target_split)
    t_rows = _target_rows(ctx, method, target, target_split)
    subtasks = by_subtask(target.gather("subtask", t_rows))
    single = method.single_score
    per_example = ctx.job.selection.strategy == "round-robin" and not single
    columns = SINGLE if single else by_example(target.gather("sample_id", t_rows)) if per_example else subtasks
    how = "mean" if single else method.aggregate_for(spec)
    round_robin = per_example and columns.count > 1  # per-example candidates instead of a rows × C matrix
    if round_robin:
        k = ctx.job.selection.size_for(count_valid(pool))
        check_round_robin_budget(columns.count, k, ctx.job.selection.round_robin_memory_gib)
    scorer = method.build_scorer(TargetInputs(ctx, pool, target, target_split, t_rows, columns))
    to_subtasks = subtasks.mean_matrix().astype(np.float32) if per_example else None
    second_order = spec.second_order.enabled
    if second_order and (not method.second_order or per_example or ref is None):
        raise SpecError(f"scoring.second_order needs a method that has it (not {method.name!r}), one aggregated "
                         "score (selection.strategy 'topk' or 'weights') and the model")

    root = open_root(ctx.layout.store)
    col_name = score_columns(target_name)
    cand_name = score_candidates(target_name)
    ctx.guard(f"replace the score arrays of target {target_name!r}")
    for path in (name, col_name, cand_name):
        if path in root:
            del root[path]  # a half-written array from an interrupted run
    S = pool.rows_per_shard
    scores = driver_arrays.create(root, name, shape=(pool.n_rows,), chunks=(S,), dtype="float32", fill_value=np.nan)
    col_arr = None
    candidates = ColumnTopK(columns.count, max(1, k)) if round_robin else None
    if columns.count > 1 and not round_robin:
        col_arr = driver_arrays.create(root, col_name, shape=(pool.n_rows, columns.count), chunks=(S, columns.count),
                                       dtype="float32", fill_value=np.nan)
        col_arr.attrs.update({"columns": columns.kind, "labels": list(columns.labels)})
    attrs = {"method": method.name, "target": target_split, "target_examples": int(len(t_rows)), "aggregate": how,
             "columns": columns.kind, "subtasks": list(subtasks.labels), **scorer.info}
    scores.attrs.update(attrs)
    if scorer.info.get("holdout"):
        ctx.say(holdout_line(scorer.info["holdout"]))
    score_out = driver_arrays.RowWindows(scores)
    col_out = driver_arrays.RowWindows(col_arr) if col_arr is not None else None
    pool.advise(0)
    try:
        with threads_beside_readers():
            for shard_id in range(pool.n_shards):
                pool.advise(shard_id + 1)  # the next shards are read while this one is scored
                block = scorer.block(shard_id)
                span = pool.shard_rows(shard_id)
                by_subtask_block = block @ to_subtasks if to_subtasks is not None else block
                score_out.put(span, aggregate(by_subtask_block, SINGLE if single else subtasks, how))
                if col_out is not None:
                    col_out.put(span, block)
                if candidates is not None:
                    candidates.push(block, span.start)
    finally:
        for out in (score_out, col_out):
            if out is not None:
                out.close()
    if candidates is not None:
        write_candidates(root, cand_name, *candidates.result(), candidates.k, list(columns.labels))
    if second_order:
        valid = count_valid(pool)
        attrs.update(apply_second_order(ctx, ref, name, target_name, target_split, t_rows, read_landmarks(ctx),
                                        scorer.embeddings, ctx.job.selection.size_for(valid), valid))
        scores.attrs.update(attrs)
    extra = col_name if col_arr is not None else cand_name if candidates is not None else None
    written = [name, *([extra] if extra else []),
               *([attrs["second_order"]["first_order_array"]] if second_order else [])]
    ctx.mark_stage_done(stage, {"array": name, "columns_array": col_name if col_arr is not None else None,
                                "candidates": cand_name if candidates is not None else None, **attrs,
                                "arrays": driver_arrays.seal(root, written)},
                        outputs=(ctx.layout.store / name,) + ((ctx.layout.store / extra,) if extra else ()))
    return name
