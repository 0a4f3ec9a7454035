"""Row addressing and reading shared by the stores whose corpus shard i owns rows
[i·S, (i+1)·S) of every array (the sketch store's splits, the embedding store)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import zarr

from iprox_ray.store.digest import read_checked
from iprox_ray.store.read_ahead import ReadAhead

WINDOW_ROWS = 1 << 16  # rows of the small per-row arrays a streaming reader reads ahead in one call


@dataclass
class ShardedRows:
    group: zarr.Group
    rows_per_shard: int
    n_shards: int
    _arrays: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    # What a streaming reader asked for ahead (SplitStore.advise): whole shards, windows of shards.
    _ahead: ReadAhead = field(default_factory=ReadAhead, init=False, repr=False, compare=False)
    _windows: ReadAhead = field(default_factory=ReadAhead, init=False, repr=False, compare=False)

    @property
    def n_rows(self) -> int:
        return self.rows_per_shard * self.n_shards

    def shard_rows(self, shard_id: int) -> slice:
        start = shard_id * self.rows_per_shard
        return slice(start, start + self.rows_per_shard)

    def array(self, name: str) -> zarr.Array:
        """The split's array `name`, opened once (Zarr reads its metadata file at every open)."""
        if name not in self._arrays:
            self._arrays[name] = self.group[name]
        return self._arrays[name]

    def read(self, name: str, rows: slice | None = None) -> np.ndarray:
        rows = rows if rows is not None else slice(None)
        shard = self._shard_of(rows)
        if shard is not None:
            ahead = self._ahead.take(name, shard)
            if ahead is not None:
                return ahead
            window = self._windows.take(name, shard // self._shards_per_window, keep=True)
            if window is not None:
                first = (shard % self._shards_per_window) * self.rows_per_shard
                return window[first:first + self.rows_per_shard].copy()
        return read_checked(self.array(name), rows, shard)

    def _shard_of(self, rows: slice) -> int | None:
        """The corpus shard `rows` is exactly, if it is one."""
        start, stop, step = rows.indices(self.n_rows)
        whole = step == 1 and start % self.rows_per_shard == 0 and stop - start == self.rows_per_shard
        return start // self.rows_per_shard if whole else None

    @property
    def _shards_per_window(self) -> int:
        return max(1, WINDOW_ROWS // self.rows_per_shard)

    def gather(self, name: str, rows: np.ndarray) -> np.ndarray:
        """Values at arbitrary store rows, reading each touched shard once."""
        rows = np.asarray(rows, dtype=np.int64)
        out = None
        shard_of = rows // self.rows_per_shard
        for shard_id in np.unique(shard_of):
            pick = np.flatnonzero(shard_of == shard_id)
            block = read_checked(self.array(name), self.shard_rows(int(shard_id)), int(shard_id))
            if out is None:
                out = np.empty((len(rows),) + block.shape[1:], dtype=block.dtype)
            out[pick] = block[rows[pick] - shard_id * self.rows_per_shard]
        return out if out is not None else np.empty(0)

    def iter_blocks(self, name: str, shard_ids: list[int] | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (first global row, block) one corpus shard at a time: memory is O(rows_per_shard)."""
        for shard_id in shard_ids if shard_ids is not None else range(self.n_shards):
            span = self.shard_rows(shard_id)
            yield span.start, read_checked(self.array(name), span, shard_id)
