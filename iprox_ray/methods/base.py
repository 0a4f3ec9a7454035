"""What a scoring method is: what it needs from the pool and targets, and the scorer it builds.

Modelled on kronfluence's `Task`: the stages (embed, landmarks, sketch, score, select) and both
`iprox-ray run` and `iprox-ray score` ask the method, never test its name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np

from iprox_ray.store.embedding_store import OK as EMBED_OK
from iprox_ray.store.embedding_store import EmbeddingStore
from iprox_ray.store.layout import POOL
from iprox_ray.store.sketch_store import CANDIDATES, OK, SplitStore

if TYPE_CHECKING:
    from iprox_ray.execution.context import RunContext
    from iprox_ray.influence.columns import Columns
    from iprox_ray.methods.scorers import Scorer


@dataclass(frozen=True)
class Needs:
    """What a method reads, so that only that is computed."""

    pool_sketch: Literal["all", "landmarks", "none"]  # which pool rows get gradient sketches
    target_sketch: bool  # False: the targets' rows are read (metadata), not sketched
    embeddings: tuple[str, ...] = ()  # embedding passes over the pool ("jvp", "rds")
    target_embeddings: tuple[str, ...] = ()  # ... and over every target
    losses: bool = False  # per-row losses (the sketch pass writes them)


@dataclass(frozen=True)
class TargetInputs:
    """One target, ready to score: its usable rows and how they group into score columns."""

    ctx: RunContext
    pool: SplitStore
    target: SplitStore
    split: str
    rows: np.ndarray
    columns: Columns


class ScoringMethod:
    name: ClassVar[str]
    needs: ClassVar[Needs]
    single_score: ClassVar[bool] = False  # one score per row, no per-subtask or per-example columns
    default_aggregate: ClassVar[str] = "mean"  # scoring.aggregate = "auto"
    second_order: ClassVar[bool] = False  # accepts scoring.second_order

    @property
    def uses_landmarks(self) -> bool:
        return self.needs.pool_sketch == "landmarks"

    def validate(self, job) -> None:
        """Refuse, before any work, settings the spec types cannot rule out (registry.check_job
        calls it after the checks every method shares)."""

    def aggregate_for(self, scoring) -> str:
        """How per-target-example scores combine: scoring.aggregate, or this method's own rule under "auto"."""
        return self.default_aggregate if scoring.aggregate == "auto" else scoring.aggregate

    def embed_jobs(self, splits: list[str]) -> list[tuple[str, str]]:
        """(kind, split) embedding passes over these splits."""
        kinds = dict.fromkeys(self.needs.embeddings + self.needs.target_embeddings)

        def wanted(kind: str, split: str) -> bool:
            return kind in (self.needs.embeddings if split == POOL else self.needs.target_embeddings)

        return [(kind, split) for kind in kinds for split in splits if wanted(kind, split)]

    def usable_target_rows(self, ctx: RunContext, target: SplitStore, split: str) -> np.ndarray:
        """Mask of the target rows this method can score with."""
        written = target.read("written")
        ok = written == OK if self.needs.target_sketch else np.isin(written, CANDIDATES)
        for kind in self.needs.target_embeddings:
            ok &= EmbeddingStore.open(ctx.layout.store, kind, split).read("written") == EMBED_OK
        return ok

    def build_scorer(self, inputs: TargetInputs) -> Scorer:  # pragma: no cover - abstract
        raise NotImplementedError

    def summary_extra(self, ctx: RunContext, split: str, scores_name: str) -> dict:
        """Method-specific entries of a target's summary."""
        return {}
