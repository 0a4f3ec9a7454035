"""Per-row embedding matrices (JVP for Influence Distillation, pooled hidden states for RDS+),
laid out like the split they embed: group `embeddings/<kind>/<split>`, corpus shard i owns rows
[i*S, (i+1)*S) as one whole Zarr shard, so workers never share a file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec

from iprox_ray.store.chunks import sync_shard
from iprox_ray.store.digest import read_span, shard_digest
from iprox_ray.store.layout import embedding_group
from iprox_ray.store.sharded_rows import ShardedRows
from iprox_ray.store.sketch_store import (
    StoreMismatchError,
    checked_codecs,
    open_root,
    refuse_lost_metadata,
    require_same_attrs,
)

EMBEDDING = "embedding"
WRITTEN = "written"  # 0 empty/padding, 1 ok, 2 not embedded (quarantined row), 3 non-finite
EMPTY, OK, SKIPPED, NONFINITE = 0, 1, 2, 3
CHUNK_BYTES = 4 << 20


def _chunk_rows(rows_per_shard: int, dim: int) -> int:
    limit = max(1, CHUNK_BYTES // max(1, dim * 4))
    return max(d for d in range(1, min(rows_per_shard, limit) + 1) if rows_per_shard % d == 0)


@dataclass
class EmbeddingStore(ShardedRows):
    """Row addressing and streaming are exactly the split store's."""

    @property
    def location(self) -> str:
        return embedding_group(self.group.attrs["kind"], self.group.attrs["split"])

    @property
    def dim(self) -> int:
        return int(self.group.attrs["dim"])

    @classmethod
    def create(cls, store_path: Path, kind: str, split: str, n_shards: int, rows_per_shard: int, dim: int,
               attrs: dict[str, Any]) -> "EmbeddingStore":
        """Create the arrays, or reopen them if they were made with identical attributes."""
        root = open_root(store_path)
        path = embedding_group(kind, split)
        refuse_lost_metadata(store_path, path)
        want = {**attrs, "kind": kind, "split": split, "n_shards": n_shards, "rows_per_shard": rows_per_shard,
                "dim": dim}
        if path in root:
            require_same_attrs(f"store group {path!r} at {store_path}", dict(root[path].attrs), want)
            return cls.open(store_path, kind, split)
        group = root.require_group(path)
        n_rows = n_shards * rows_per_shard
        group.create_array(EMBEDDING, shape=(n_rows, dim), chunks=(_chunk_rows(rows_per_shard, dim), dim),
                           shards=(rows_per_shard, dim), dtype="float32", fill_value=0, compressors=[Crc32cCodec()])
        group.create_array(WRITTEN, shape=(n_rows,), chunks=(rows_per_shard,), dtype="uint8", fill_value=0,
                           compressors=checked_codecs())
        group.attrs.update(want)
        return cls(group, rows_per_shard, n_shards)

    @classmethod
    def open(cls, store_path: Path, kind: str, split: str, mode: str = "r+") -> "EmbeddingStore":
        path = embedding_group(kind, split)
        refuse_lost_metadata(store_path, path)
        try:
            group = zarr.open_group(str(store_path / path), mode=mode)
        except FileNotFoundError as exc:
            raise StoreMismatchError(f"no {kind} embeddings for {split!r} in store {store_path}") from exc
        return cls(group, int(group.attrs["rows_per_shard"]), int(group.attrs["n_shards"]))

    def write_shard(self, shard_id: int, matrix: np.ndarray, written: np.ndarray) -> dict:
        """One corpus shard's rows, padded to the whole Zarr shard it owns, made durable; returns
        what its completion marker records (digest, chunk files)."""
        span = self.shard_rows(shard_id)
        n = len(written)
        if n > self.rows_per_shard or matrix.shape != (n, self.dim):
            raise ValueError(f"shard {shard_id}: matrix {matrix.shape} / {n} rows do not fit "
                             f"({self.rows_per_shard}, {self.dim})")
        block = np.zeros((self.rows_per_shard, self.dim), dtype=np.float32)
        block[:n] = matrix
        flags = np.zeros(self.rows_per_shard, dtype=np.uint8)
        flags[:n] = written
        self.group[EMBEDDING][span] = block
        self.group[WRITTEN][span] = flags
        return {"digest": shard_digest({EMBEDDING: block, WRITTEN: flags}),
                "chunks": sync_shard(self.group, (EMBEDDING, WRITTEN), shard_id, self.location)}

    def array_names(self) -> list[str]:
        return [EMBEDDING, WRITTEN]

    def stored_digest(self, shard_id: int) -> str:
        span = self.shard_rows(shard_id)
        return shard_digest({n: read_span(self.group, n, span, shard_id) for n in self.array_names()})
