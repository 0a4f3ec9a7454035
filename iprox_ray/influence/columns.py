"""Score columns: one per target example, or one per subtask, and how they combine per pool row.

A method scores each pool row against C columns. With subtasks, a column holds the mean over the
subtask's examples (cosines and inner products are linear, so this is the mean of per-example
scores). The aggregated score is the example-weighted mean over columns (= the mean over all
target examples), or the max over subtask means (the LESS rule).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Columns:
    """How target examples map onto score columns."""

    kind: str  # "examples" | "subtasks"
    labels: tuple[str, ...]  # a label per column
    member: np.ndarray  # int64 [M]: the column of each target example
    sizes: np.ndarray  # int64 [C]: target examples per column

    @property
    def count(self) -> int:
        return len(self.labels)

    def mean_matrix(self) -> np.ndarray:
        """[M, C] averaging matrix: target rows @ it gives column means."""
        out = np.zeros((len(self.member), self.count), dtype=np.float64)
        out[np.arange(len(self.member)), self.member] = 1.0
        return out / self.sizes[None, :]

    def reduce_rows(self, target_rows: np.ndarray) -> np.ndarray:
        """[C, D] column means of per-example feature rows [M, D]."""
        return (self.mean_matrix().T @ np.asarray(target_rows, dtype=np.float64)).astype(np.float32)


def by_subtask(subtasks: list[str] | np.ndarray) -> Columns:
    """One column per distinct subtask label (sorted; '' is a label like any other)."""
    labels = sorted({str(s) for s in subtasks})
    pos = {label: i for i, label in enumerate(labels)}
    member = np.fromiter((pos[str(s)] for s in subtasks), dtype=np.int64, count=len(subtasks))
    return Columns("subtasks", tuple(labels), member, np.bincount(member, minlength=len(labels)))


def by_example(sample_ids: list[str] | np.ndarray) -> Columns:
    n = len(sample_ids)
    return Columns("examples", tuple(str(s) for s in sample_ids), np.arange(n, dtype=np.int64), np.ones(n, np.int64))


def aggregate(column_scores: np.ndarray, columns: Columns, how: str) -> np.ndarray:
    """[n, C] column scores -> [n] per-row score. NaN in any column propagates (never selected)."""
    column_scores = np.asarray(column_scores, dtype=np.float32)
    if how == "mean":
        weights = (columns.sizes / columns.sizes.sum()).astype(np.float32)
        return column_scores @ weights
    if how == "subtask-max":
        if columns.kind != "subtasks":
            # per-example columns: subtask means first, then the max
            raise ValueError("subtask-max needs subtask columns")
        out = column_scores.max(axis=1)
        out[np.isnan(column_scores).any(axis=1)] = np.nan
        return out
    raise ValueError(f"unknown aggregate {how!r}")
