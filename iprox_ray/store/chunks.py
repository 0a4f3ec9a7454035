"""Chunk files on disk: where a chunk lives, making written chunks durable, and noticing lost ones.

Zarr reads a missing chunk as fill values without a word (a lost `written` chunk would turn a
shard's rows into padding), so presence is checked here, never inferred from reads:
- a shard's arrays: Zarr writes no chunk that is all fill value, so the worker lists the chunk
  files that exist after its write (and fsyncs them) and the completion marker keeps that list;
- driver-written arrays (scores, candidates, landmarks) are written with EVERY_CHUNK, so every
  chunk of their grid must exist.
Keys are paths relative to the store root (`pool/written/c/3`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from iprox_ray.store.atomic import fsync_dir, fsync_path

# Array config of driver-written arrays: a chunk of fill values (NaN scores) still gets its file,
# so that a deleted file is noticed rather than read back as NaN.
EVERY_CHUNK = {"write_empty_chunks": True}


def store_root(node) -> Path:
    """The folder of the store holding a zarr array or group."""
    return Path(node.store.root)


def chunk_key(arr, coords: tuple[int, ...]) -> str:
    """The file of one chunk (a whole shard for sharded arrays), relative to the store root."""
    key = arr.metadata.encode_chunk_key(tuple(int(c) for c in coords))
    return f"{arr.path}/{key}" if arr.path else key


def row_chunk_keys(arr, row_chunk: int) -> list[str]:
    """The files holding row chunk `row_chunk` (every chunk along the other axes)."""
    return [chunk_key(arr, (row_chunk, *other)) for other in np.ndindex(*arr.cdata_shape[1:])]


def all_chunk_keys(arr, path: str | None = None) -> Iterator[str]:
    """Every chunk file of the array; `path`: its path in the store when it was opened at its own
    folder (its own `path` is then empty)."""
    base = arr.path if path is None else path
    for coords in np.ndindex(*arr.cdata_shape):
        yield f"{base}/{arr.metadata.encode_chunk_key(tuple(int(c) for c in coords))}"


def chunk_of_row(arr, row: int) -> int:
    return int(row) // int(arr.metadata.chunk_grid.chunk_shape[0])


def sync_files(root: Path, keys: Iterable[str]) -> list[str]:
    """fsync every listed file that exists, then each folder from its parent up to `root` (a new
    folder's entry must be durable too); returns the keys that exist."""
    root = Path(root)
    present, folders = [], set()
    for key in keys:
        path = root / key
        if not fsync_path(path):
            continue
        present.append(key)
        parent = path.parent
        while parent not in folders:
            folders.add(parent)
            if parent == root or parent == parent.parent:
                break
            parent = parent.parent
    for folder in sorted(folders, key=lambda p: -len(p.parts)):  # deepest first
        fsync_dir(folder)
    return present


def missing_keys(root: Path, keys: Iterable[str]) -> list[str]:
    root = Path(root)
    return [key for key in keys if not (root / key).is_file()]


def shard_keys(arrays: Mapping[str, Any], shard_id: int) -> list[str]:
    """The files of corpus shard `shard_id` (row chunk `shard_id`) of every array, keyed by its
    name under their group's folder."""
    return [f"{name}/{arr.metadata.encode_chunk_key((shard_id, *other))}"
            for name, arr in arrays.items() for other in np.ndindex(*arr.cdata_shape[1:])]


def sync_shard(group, names: Iterable[str], shard_id: int, location: str) -> list[str]:
    """After a worker wrote corpus shard `shard_id` (row chunk `shard_id` of every array in
    `names`): make its files durable and return the ones that exist (what the marker records), as
    keys under the store root; `location` is the group's path in the store (the group may have been
    opened at its own folder)."""
    folder = store_root(group) / group.path
    keys = shard_keys({name: group[name] for name in names}, shard_id)
    return [f"{location}/{key}" for key in sync_files(folder, keys)]
