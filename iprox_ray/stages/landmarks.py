"""Stage: landmarks. Choose the L pool rows whose exact gradients Influence Distillation sketches.

Chosen on the driver from the pool's JVP embeddings (rows embedded without error), kept in the
store as `landmarks/pool` (sorted store rows) so later targets reuse the same landmarks.
"""

from __future__ import annotations

import numpy as np

from iprox_ray.execution.context import RunContext
from iprox_ray.influence import landmarks
from iprox_ray.methods.scorers import read_landmarks
from iprox_ray.spec import DataSpec
from iprox_ray.stages.sketch import RowSubset
from iprox_ray.store import driver_arrays
from iprox_ray.store.embedding_store import OK, EmbeddingStore
from iprox_ray.store.layout import LANDMARKS, LANDMARKS_STAGE
from iprox_ray.store.sketch_store import open_root
from iprox_ray.tasks.inputs import POOL

STAGE = LANDMARKS_STAGE  # stages/<STAGE>.json
ARRAY = LANDMARKS


def landmark_fingerprint(ctx: RunContext) -> str:
    return ctx.job.stage_fingerprint("run.seed", "model", "warmup", "proxy", *DataSpec.encoding_keys(True),
                                     "scoring.embed", "scoring.landmarks")


def run_landmarks(ctx: RunContext) -> RowSubset:
    if ctx.stage_done(STAGE):
        return RowSubset(STAGE, read_landmarks(ctx), landmark_fingerprint(ctx))
    spec = ctx.job.scoring.landmarks
    emb = EmbeddingStore.open(ctx.layout.store, "jvp", POOL)
    valid = np.concatenate([start + np.flatnonzero(block == OK) for start, block in emb.iter_blocks("written")])
    if len(valid) == 0:
        raise ValueError("no pool row has a JVP embedding: nothing to choose landmarks from")
    rows = landmarks.choose(spec.method, valid, spec.count, spec.seed, spec.candidates,
                            lambda r: emb.gather("embedding", r))
    root = open_root(ctx.layout.store)
    ctx.guard("replace the landmarks")
    arr = driver_arrays.create(root, ARRAY, shape=(len(rows),), chunks=(max(1, len(rows)),), dtype="int64")
    arr[:] = rows
    arr.attrs.update({"method": spec.method, "requested": spec.count, "seed": spec.seed,
                      "fingerprint": landmark_fingerprint(ctx)})
    ctx.say(f"landmarks: {len(rows)} of {len(valid)} embedded pool rows ({spec.method})")
    ctx.mark_stage_done(STAGE, {"count": int(len(rows)), "valid": int(len(valid)),
                                "arrays": driver_arrays.seal(root, [ARRAY])}, outputs=(ctx.layout.store / ARRAY,))
    return RowSubset(STAGE, rows, landmark_fingerprint(ctx))
