"""The fidelity report's Influence Distillation section: does landmark propagation work here?

On the report's probe sample (fidelity.pool_rows pool rows, seeded), with the model the run scores
with: every probe row's JVP embedding (the job's [scoring.embed]) and its exact first-order score
p (cosine of its sketch to the mean unit target sketch: plain gradients, as the rest of the
report). The probe rows then play the landmarks: k-fold KRR with the job's [scoring.landmarks]
settings predicts each fold from the others, and the report gives Spearman / top-5 % share of the
held-out predictions against p, beside the same fit on random Gaussian embeddings (the control:
skill above it comes from the embeddings). Costs a sketch and an embedding of the probe rows,
before any pool-wide pass.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch

from iprox_ray.corpus.batching import make_batches
from iprox_ray.diagnostics.proxy_fidelity import influence_scores, probe_data
from iprox_ray.execution.context import RunContext
from iprox_ray.methods.scorers import landmark_holdout
from iprox_ray.spec.base import fingerprint
from iprox_ray.store.atomic import atomic_write_json, read_json
from iprox_ray.tasks.embed_task import make_embedder
from iprox_ray.tasks.model_ref import ModelRef
from iprox_ray.tasks.sketch_budget import sketch_spec

DEFAULT_FOLDS = 5  # when scoring.landmarks.holdout_folds = 0 (the run's own check off)


def embed_rows(model: torch.nn.Module, encoded, ctx: RunContext, pad_id: int) -> np.ndarray:
    spec = ctx.job.scoring.embed
    embedder = make_embedder("jvp", model, spec)
    out = np.zeros((len(encoded), embedder.dim), dtype=np.float32)
    try:
        for batch in make_batches(encoded, spec.token_budget, spec.max_batch_rows, pad_id):
            out[batch.rows] = embedder.embed(torch.from_numpy(batch.input_ids),
                                             torch.from_numpy(batch.attention_mask)).cpu().numpy()
    finally:
        embedder.close()
    return out


def landmark_section(ctx: RunContext, ref: ModelRef) -> dict:
    """The section, computed once per settings (fidelity/landmarks.json carries its key)."""
    path = ctx.layout.landmark_fidelity
    key = fingerprint({"job": ctx.job.fingerprint(), "fidelity": ctx.job.fidelity.model_dump(mode="json"),
                       "model": ref.identity()})
    earlier = read_json(path) if path.exists() else {}
    if earlier.get("key") == key:
        return {**earlier, "reused": True}
    pool, target, pad_id = probe_data(ctx)
    model = dataclasses.replace(ref, attn="eager").load()  # forward-mode AD needs eager attention
    start = time.perf_counter()
    embeddings = embed_rows(model, pool, ctx, pad_id)  # before sketching: the sketcher freezes the weights
    embed_seconds = time.perf_counter() - start
    p, _ = influence_scores(model, pool, target, sketch_spec(ctx, ref), pad_id)
    ok = np.isfinite(p) & np.isfinite(embeddings).all(axis=1)
    lm = ctx.job.scoring.landmarks
    if not lm.holdout_folds:
        lm = lm.model_copy(update={"holdout_folds": DEFAULT_FOLDS})
    noise = np.random.default_rng(lm.seed).standard_normal(embeddings[ok].shape).astype(np.float32)
    section = {"rows": int(ok.sum()), "embed_seconds": embed_seconds,
               "holdout": landmark_holdout(embeddings[ok], p[ok], lm),
               "random_embedding_control": landmark_holdout(noise, p[ok], lm), "key": key}
    atomic_write_json(path, section)
    return section


def format_landmark_section(s: dict) -> str:
    h, c = s["holdout"], s["random_embedding_control"]
    if h.get("spearman") is None:
        return f"  landmark propagation: too few probe rows ({s['rows']}) for {h['folds']} folds"
    train = round(s["rows"] * (h["folds"] - 1) / h["folds"])
    return (f"  landmark propagation (Influence Distillation; {h['folds']}-fold over {s['rows']} probe rows, "
            f"~{train} landmarks per fit): held-out Spearman {h['spearman']:.3f}, top-5 % share {h['top5']:.2f}; "
            f"random-embedding control {c['spearman']:.3f}")
