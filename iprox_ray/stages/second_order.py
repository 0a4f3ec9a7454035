"""Influence Distillation's optional second-order term, on the driver (see influence/second_order.py).

Per iteration: first-order support and λ-weights from the current scores; the support rows'
gradient norms (their Kronecker sketches, as the pool's were made); u = Σ w_i g_i/‖g_i‖ by one
weighted backward; h = H_T u by Hessian-vector products over the target examples; P h in sketch
space; c_L = G̃_L·P h on the landmarks, propagated to the pool by KRR like p; finally
p' = p − (η/N)·ĉ. Costs one backward over k support rows and one double backward over the
target set per iteration (not over the pool). The first-order scores are kept in
`scores_first_order/<target>`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from iprox_ray.corpus.batching import make_batches
from iprox_ray.corpus.encode import Encoded
from iprox_ray.corpus.manifest import Manifest
from iprox_ray.corpus.shard_reader import read_shard
from iprox_ray.execution.context import RunContext
from iprox_ray.influence.second_order import kron_project, target_hvp, weighted_gradient
from iprox_ray.influence.topk import topk_stream
from iprox_ray.influence.weights import lambda_bisection
from iprox_ray.methods.scorers import fit_krr, landmark_features, usable_landmarks
from iprox_ray.models.lowrank import densify
from iprox_ray.sketch.factory import make_sketcher
from iprox_ray.sketch.vectors import vector_project
from iprox_ray.spec import SketchSpec
from iprox_ray.store import driver_arrays
from iprox_ray.store.embedding_store import EmbeddingStore
from iprox_ray.store.layout import first_order_scores
from iprox_ray.store.sketch_store import SplitStore, open_root
from iprox_ray.tasks.inputs import POOL, make_encoder, source_for
from iprox_ray.tasks.model_ref import ModelRef
from iprox_ray.tasks.sketch_budget import sketch_spec


def encode_rows(ctx: RunContext, split: str, store_rows: np.ndarray, rows_per_shard: int) -> list[Encoded]:
    """The encoded rows at `store_rows` of a split, in that order (they must be valid rows)."""
    manifest = Manifest.load(ctx.layout.manifest(split), ctx.layout.manifest_info(split))
    encoder = make_encoder(ctx, split)
    by_row: dict[int, Encoded] = {}
    for shard_id in np.unique(np.asarray(store_rows) // rows_per_shard).tolist():
        rows = read_shard(split, manifest.shards[shard_id], source_for(ctx, split), encoder)
        for local, enc in zip(rows.local_rows, rows.encoded):
            by_row[shard_id * rows_per_shard + local] = enc
    return [by_row[int(r)] for r in store_rows]


def _batches(encoded: list[Encoded], s: SketchSpec, pad_id: int):
    for b in make_batches(encoded, s.token_budget, s.max_batch_rows, pad_id):
        yield b.rows, (torch.from_numpy(b.input_ids), torch.from_numpy(b.attention_mask), torch.from_numpy(b.trainable))


def second_order_direction(ctx: RunContext, ref: ModelRef, pool: SplitStore, target: SplitStore, target_split: str,
                           target_rows: np.ndarray, support: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """P h (sketch space) with h = H_T Σ_i w_i g_i/‖g_i‖ over the support rows."""
    modules = pool.group.attrs["modules"]
    vectors = pool.group.attrs["vectors"]
    names = [f"{m[0]}.weight" for m in modules] + [key for key, _ in vectors["params"]]
    projection = pool.group.attrs["projection"]
    model = dataclasses.replace(ref, attn="eager").load()  # double backward: no fused attention
    if ctx.job.sketch.lowrank == "product":  # the sketched weights are the products A·B
        densify(model)
    pad_id = make_encoder(ctx, POOL).tokenizer.pad_token_id
    support_rows = encode_rows(ctx, "pool", support, pool.rows_per_shard)
    s = sketch_spec(ctx, ref)
    sketcher = make_sketcher(model, s)
    norms = np.zeros(len(support), dtype=np.float64)
    try:
        for rows, (ids, mask, trainable) in _batches(support_rows, s, pad_id):
            norms[rows] = sketcher.sketch(ids, mask, trainable).sketch.norm(dim=1).double().numpy()
    finally:
        sketcher.close()
    for weight in (model.get_parameter(n) for n in names):
        weight.requires_grad_(True)
    coef = torch.from_numpy(np.where(norms > 0, weights / np.where(norms > 0, norms, 1.0), 0.0))
    u = weighted_gradient(model, names, ((batch, coef[rows]) for rows, batch in _batches(support_rows, s, pad_id)))
    targets = encode_rows(ctx, target_split, target_rows, target.rows_per_shard)
    h = target_hvp(model, names, (batch for _, batch in _batches(targets, s, pad_id)), u, len(targets))
    linear = kron_project(h[: len(modules)], modules, projection["seed"], projection["distribution"])
    return np.concatenate([linear, vector_project(h[len(modules) :], vectors)])


def apply_second_order(ctx: RunContext, ref: ModelRef, scores_name: str, target_name: str, target_split: str,
                       target_rows: np.ndarray, landmark_rows: np.ndarray, embeddings: EmbeddingStore, k: int,
                       n_valid: int) -> dict:
    """Rewrite `scores_name` as p − (η/N)·ĉ (iterated); the first-order p is kept beside it."""
    spec = ctx.job.scoring.second_order
    lm = ctx.job.scoring.landmarks
    root = open_root(ctx.layout.store)
    pool = SplitStore.open(ctx.layout.store, "pool")
    target = SplitStore.open(ctx.layout.store, target_split)
    scores = driver_arrays.reopen(root, scores_name)  # rewritten below: every chunk keeps its file
    S = pool.rows_per_shard
    first_name = first_order_scores(target_name)
    first = driver_arrays.create(root, first_name, shape=scores.shape, chunks=scores.chunks, dtype="float32",
                                 fill_value=np.nan)
    for start in range(0, pool.n_rows, S):
        first[start : start + S] = scores[start : start + S]
    landmark_rows = usable_landmarks(pool, embeddings, landmark_rows)
    features = landmark_features(pool, landmark_rows)
    E_L = embeddings.gather("embedding", landmark_rows)
    history = []
    for _ in range(spec.iterations):
        rows, values, _ = topk_stream(((o, scores[o : o + S]) for o in range(0, pool.n_rows, S)), k + 1)
        k_eff = min(k, len(rows))
        res = lambda_bisection(values, k_eff, float(n_valid))
        direction = second_order_direction(ctx, ref, pool, target, target_split, target_rows, rows[:k_eff], res.weights)
        model = fit_krr(E_L, features @ direction.astype(np.float32), lm)
        scale = spec.lr / n_valid
        shift = []
        for shard_id in range(pool.n_shards):
            span = pool.shard_rows(shard_id)
            p = first[span]
            ok = np.isfinite(p)
            out = np.full(S, np.nan, dtype=np.float32)
            if ok.any():
                c_hat = model.predict(embeddings.read("embedding", span)[ok])[:, 0]
                out[ok] = p[ok] - np.float32(scale) * c_hat
                shift.append(np.abs(np.float32(scale) * c_hat))
            scores[span] = out
        history.append({"support": int(k_eff), "mean_abs_shift": float(np.concatenate(shift).mean()) if shift else 0.0})
    return {"second_order": {"lr": spec.lr, "iterations": spec.iterations, "history": history,
                             "first_order_array": first_name}}
