"""How well landmark propagation reproduces exact scores (Influence Distillation diagnostics).

Needs a run that sketched every pool row (`scoring.landmarks.sketch = "all"`). The exact score of
a row is what propagation approximates: the mean cosine of its gradient features to the target
examples' (the first-order p of docs/methods.md §5, per target column, aggregated like the run). The
control propagates the same landmark scores through random Gaussian embeddings of the same
dimension: any skill above it comes from the JVP embeddings.
"""

from __future__ import annotations

import numpy as np

from iprox_ray.execution.context import RunContext
from iprox_ray.influence.agreement import correlations
from iprox_ray.influence.columns import aggregate, by_subtask
from iprox_ray.influence.less import unit_rows
from iprox_ray.methods.scorers import fit_krr, landmark_features, read_landmarks
from iprox_ray.store.embedding_store import OK as EMBED_OK
from iprox_ray.store.embedding_store import EmbeddingStore
from iprox_ray.store.layout import POOL
from iprox_ray.store.sketch_store import OK, SplitStore, open_root


def landmark_fidelity(ctx: RunContext, target_split: str, scores_name: str, how: str, control_seed: int = 0) -> dict:
    """Correlation of propagated vs exact scores on the non-landmark rows, and the control's; `how`
    aggregates per-target scores as the method does (mean or subtask-max)."""
    store = ctx.layout.store
    pool = SplitStore.open(store, POOL, mode="r")
    if pool.group.attrs.get("sketched_rows", "all") != "all":
        raise ValueError("landmark fidelity needs every pool row sketched (scoring.landmarks.sketch = 'all')")
    target = SplitStore.open(store, target_split, mode="r")
    emb = EmbeddingStore.open(store, "jvp", POOL, mode="r")
    t_rows = np.flatnonzero(target.read("written") == OK)
    subtasks = by_subtask(target.gather("subtask", t_rows))
    columns = subtasks.reduce_rows(unit_rows(target.units(t_rows)))  # [J, D]
    propagated = open_root(store)[scores_name]
    landmarks = read_landmarks(ctx)
    rows, exact, approx = [], [], []
    for shard_id in range(pool.n_shards):
        span = pool.shard_rows(shard_id)
        ok = (pool.read("written", span) == OK) & (emb.read("written", span) == EMBED_OK)
        local = np.flatnonzero(ok)
        if not len(local):
            continue
        units = unit_rows(pool.units(span)[local])
        rows.append(span.start + local)
        exact.append(aggregate(units @ columns.T, subtasks, how))
        approx.append(propagated[span][local])
    rows, exact, approx = np.concatenate(rows), np.concatenate(exact), np.concatenate(approx)
    held_out = ~np.isin(rows, landmarks) & np.isfinite(approx)
    usable = landmarks[(pool.gather("written", landmarks) == OK) & (emb.gather("written", landmarks) == EMBED_OK)]
    P_L = landmark_features(pool, usable) @ columns.T
    # A diagnostic: it holds one random embedding per valid row (valid rows × dim floats).
    noise = np.random.default_rng(control_seed).standard_normal((len(rows), emb.dim), dtype=np.float32)
    lm = ctx.job.scoring.landmarks
    control_model = fit_krr(noise[np.searchsorted(rows, usable)], P_L, lm)
    control = aggregate(control_model.predict(noise), subtasks, how)
    return {"rows": int(held_out.sum()), "landmarks": int(len(usable)),
            "propagated": correlations(approx[held_out], exact[held_out]),
            "random_embedding_control": correlations(control[held_out], exact[held_out])}
