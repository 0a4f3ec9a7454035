"""Stage: score. Stream the pool's sketches shard by shard against the target; write scores."""

from __future__ import annotations

import numpy as np

from iprox_ray.influence.less import cosine_scores, target_direction
from iprox_ray.stages.context import RunContext
from iprox_ray.store.sketch_store import OK, SplitStore, open_root

SCORES_GROUP = "scores"


def score_array_path(target_name: str) -> str:
    return f"{SCORES_GROUP}/{target_name}"


def run_score(ctx: RunContext, target_split: str, target_name: str) -> str:
    stage = f"score-{target_name}"
    name = score_array_path(target_name)
    if ctx.stage_done(stage):
        return name
    pool = SplitStore.open(ctx.layout.store, "pool")
    target = SplitStore.open(ctx.layout.store, target_split)
    valid = target.read("written") == OK
    direction = target_direction(target.read("sketch")[valid])
    root = open_root(ctx.layout.store)
    if name in root:
        del root[name]  # a half-written array from an interrupted run
    scores = root.create_array(name, shape=(pool.n_rows,), chunks=(pool.rows_per_shard,),
                               dtype="float32", fill_value=np.nan)
    scores.attrs.update({"method": ctx.job.scoring.method, "target": target_split,
                         "target_examples": int(valid.sum())})
    for start, block in pool.iter_blocks("sketch"):
        span = slice(start, start + pool.rows_per_shard)
        ok = pool.read("written", span) == OK
        values = np.full(pool.rows_per_shard, np.nan, dtype=np.float32)
        if ok.any():
            values[ok] = cosine_scores(block[ok], direction)
        scores[span] = values
    ctx.mark_stage_done(stage, {"array": name, "target_examples": int(valid.sum())})
    return name
