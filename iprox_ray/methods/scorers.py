"""Per-method scorers: each turns one pool shard into a [rows, columns] block of scores.

Columns are target examples (round-robin needs them) or subtasks (their example means). Rows that
cannot be scored by the method are NaN: never selected, counted. Every scorer streams the pool
one corpus shard at a time; what it holds in memory is target- or landmark-sized, never
pool-sized (mid-ppl, in methods/mid_ppl.py, holds histograms and the selectable band).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from iprox_ray.execution.context import RunContext
from iprox_ray.influence import krr
from iprox_ray.influence.columns import Columns
from iprox_ray.influence.int8_scores import row_scores
from iprox_ray.influence.less import unit_rows
from iprox_ray.spec.scoring import LandmarkSpec, ScoringSpec
from iprox_ray.store.batched_reads import rows_with_status
from iprox_ray.store.digest import read_checked
from iprox_ray.store.embedding_store import OK as EMBED_OK
from iprox_ray.store.embedding_store import EmbeddingStore
from iprox_ray.store.layout import LANDMARKS
from iprox_ray.store.sketch_store import CANDIDATES, OK, SplitStore, checkpoint_array, open_root


def sketch_rows(store: SplitStore, rows: np.ndarray, checkpoint: int = 0) -> np.ndarray:
    """The fp32 gradient sketch rows (unit row × norm) at store rows, for one checkpoint."""
    return store.units(rows, checkpoint) * store.gather(checkpoint_array("sketch_norm", checkpoint), rows)[:, None]


def checkpoint_weights(store: SplitStore) -> list[float]:
    """η̄ per sketched checkpoint (sums to 1), as the sketch stage recorded them."""
    return [float(c["weight"]) for c in store.group.attrs.get("checkpoints", [{"weight": 1.0}])]


def landmark_features(pool: SplitStore, rows: np.ndarray) -> np.ndarray:
    """[L, D] unit-L2 gradient features of the landmark rows, as Influence Distillation uses them.

    The rows are what the sketch stage wrote: Adam-preconditioned (the factor a of docs/methods.md §5)
    when `sketch.optimizer = "influence-distillation"`, else plain gradients; projected by
    `sketch.kind` (Kronecker, or SRHT as in §5 step 3).
    """
    return unit_rows(pool.units(rows))


def candidate_mask(pool: SplitStore, span: slice, need_sketch: bool) -> np.ndarray:
    written = pool.read("written", span)
    return written == OK if need_sketch else np.isin(written, CANDIDATES)


@dataclass
class TargetFeatures:
    """Per-column target features: column means of per-example rows."""

    rows: np.ndarray  # [C, D] float32

    @classmethod
    def build(cls, per_example: np.ndarray, columns: Columns) -> "TargetFeatures":
        return cls(columns.reduce_rows(per_example))


@dataclass
class Scorer:
    """Base: `block(shard_id)` -> [S, C] scores for the pool shard (NaN where not a candidate)."""

    pool: SplitStore
    n_columns: int
    info: dict = field(default_factory=dict)

    def block(self, shard_id: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _empty(self) -> np.ndarray:
        return np.full((self.pool.rows_per_shard, self.n_columns), np.nan, dtype=np.float32)


@dataclass
class SketchScorer(Scorer):
    """less: cosine of unit rows; tracin: inner product of the raw sketches. With several
    checkpoints, Σ_c η̄_c · score_c (LESS eq. 2 / TracIn's sum over checkpoints)."""

    targets: list[TargetFeatures] = field(default_factory=list)  # one per checkpoint
    weights: list[float] = field(default_factory=lambda: [1.0])
    raw: bool = False

    def block(self, shard_id: int) -> np.ndarray:
        span = self.pool.shard_rows(shard_id)
        out = self._empty()
        ok = candidate_mask(self.pool, span, need_sketch=True)
        if ok.any():
            total = np.zeros((int(ok.sum()), self.n_columns), dtype=np.float32)
            for c, (target, weight) in enumerate(zip(self.targets, self.weights)):
                payload, scale = self.pool.payload(span, c)
                if not ok.all():  # a full shard is scored in place (no copy of its rows)
                    payload, scale = payload[ok], None if scale is None else scale[ok]
                norm = self.pool.read(checkpoint_array("sketch_norm", c), span)[ok] if self.raw else None
                total += np.float32(weight) * row_scores(payload, scale, target.rows, norm)
            out[ok] = total
        return out


@dataclass
class EmbeddingScorer(Scorer):
    """rds+: cosine of unit pooled embeddings; influence-distillation: KRR from landmarks."""

    embeddings: EmbeddingStore | None = None
    target: TargetFeatures | None = None
    model: krr.KernelRidge | None = None

    def block(self, shard_id: int) -> np.ndarray:
        span = self.pool.shard_rows(shard_id)
        out = self._empty()
        ok = candidate_mask(self.pool, span, need_sketch=False) & (self.embeddings.read("written", span) == EMBED_OK)
        if ok.any():
            emb = self.embeddings.read("embedding", span)[ok]
            out[ok] = self.model.predict(emb) if self.model is not None else unit_rows(emb) @ self.target.rows.T
        return out


def count_valid(pool: SplitStore) -> int:
    """Pool rows a selection may choose (sketched or not); read in batches of whole shards."""
    return rows_with_status(pool, CANDIDATES)


def usable_landmarks(pool: SplitStore, embeddings: EmbeddingStore, landmark_rows: np.ndarray) -> np.ndarray:
    """The landmarks with both a finite gradient sketch and an embedding (not duplicates)."""
    rows = np.asarray(landmark_rows, dtype=np.int64)
    rows = rows[(pool.gather("written", rows) == OK) & (embeddings.gather("written", rows) == EMBED_OK)]
    if len(rows) == 0:
        raise ValueError("no landmark has both a gradient sketch and an embedding")
    return rows


def fit_krr(embeddings: np.ndarray, scores: np.ndarray, lm: LandmarkSpec) -> krr.KernelRidge:
    """The KRR fit the landmark settings ask for."""
    return krr.fit(embeddings, scores, lm.kernel, lm.ridge, lm.bandwidth_sample, lm.seed, lm.bandwidth_scale, lm.center)


def landmark_holdout(embeddings: np.ndarray, scores: np.ndarray, lm: LandmarkSpec) -> dict | None:
    if not lm.holdout_folds:
        return None
    return krr.holdout(embeddings, scores, lm.holdout_folds, lm.seed, lambda e, p: fit_krr(e, p, lm))


def holdout_line(h: dict) -> str:
    """One line: how well the propagation reproduces held-out landmarks' exact scores."""
    if h.get("spearman") is None:
        return f"landmark hold-out: too few landmarks ({h['landmarks']}) for {h['folds']} folds"
    return (f"landmark hold-out ({h['folds']}-fold over {h['landmarks']} landmarks): propagated vs exact Spearman "
            f"{h['spearman']:.3f}, top-5 % share {h['top5']:.2f}")


def fit_landmark_model(pool: SplitStore, embeddings: EmbeddingStore, landmark_rows: np.ndarray,
                       target: TargetFeatures, spec: ScoringSpec) -> tuple[krr.KernelRidge, dict]:
    """Exact landmark scores P_L = G̃_L · target columns, then the KRR fit on their embeddings."""
    rows = usable_landmarks(pool, embeddings, landmark_rows)
    features = landmark_features(pool, rows)
    P_L = features @ target.rows.T  # [L, C] mean cosines per column
    lm = spec.landmarks
    E_L = embeddings.gather("embedding", rows)
    model = fit_krr(E_L, P_L, lm)
    info = {"landmarks_used": int(len(rows)), "landmarks_chosen": int(len(landmark_rows)), "kernel": lm.kernel,
            "sigma": model.sigma, "ridge": model.ridge, "holdout": landmark_holdout(E_L, P_L, lm)}
    return model, info


def read_landmarks(ctx: RunContext) -> np.ndarray:
    """The landmark rows the landmarks stage chose (sorted pool store rows)."""
    return np.asarray(read_checked(open_root(ctx.layout.store)[LANDMARKS]), dtype=np.int64)
