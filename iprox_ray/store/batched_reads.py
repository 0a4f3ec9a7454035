"""Reading a split's row arrays in batches of whole shards: few large reads instead of one per
shard or per row, with memory bounded by the batch, never by the pool."""

from __future__ import annotations

from typing import Iterator

import numpy as np

from iprox_ray.store.sketch_store import SplitStore

READ_ROWS = 1 << 20  # rows per batched read (rounded to whole shards)


def shard_batches(store: SplitStore, read_rows: int | None = None) -> Iterator[slice]:
    """Row spans of whole shards, about read_rows rows each, in store order."""
    step = max(1, (read_rows or READ_ROWS) // store.rows_per_shard)
    for first in range(0, store.n_shards, step):
        stop = min(store.n_shards, first + step)
        yield slice(first * store.rows_per_shard, stop * store.rows_per_shard)


def read_rows_at(store: SplitStore, name: str, rows: np.ndarray, read_rows: int | None = None) -> np.ndarray:
    """Values of `name` at sorted store rows, read in batches of whole shards (never row by row)."""
    rows = np.asarray(rows, dtype=np.int64)
    S = store.rows_per_shard
    parts = []
    for span in shard_batches(store, read_rows):
        lo, hi = np.searchsorted(rows, [span.start, span.stop])
        if hi > lo:
            first = int(rows[lo]) // S * S  # from the first touched shard to the last: whole shards
            last = (int(rows[hi - 1]) // S + 1) * S
            parts.append(store.read(name, slice(first, last))[rows[lo:hi] - first])
    return np.concatenate(parts) if parts else store.read(name, slice(0, 0))


def rows_with_status(store: SplitStore, statuses) -> int:
    """Rows whose `written` code is `statuses` (one code or several), counted a batch of whole
    shards at a time."""
    codes = np.atleast_1d(statuses)
    return sum(int(np.isin(store.read("written", span), codes).sum()) for span in shard_batches(store))
