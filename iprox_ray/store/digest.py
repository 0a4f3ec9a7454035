"""Content digests of one corpus shard's rows: written beside its completion marker at write time,
recomputed from the store by `iprox-ray verify`."""

from __future__ import annotations

import hashlib
from typing import Callable, Mapping

import numpy as np

from iprox_ray.store.chunks import chunk_key, store_root
from iprox_ray.store.shard_file import read_whole_shards

# Per-array views applied before hashing (e.g. a later stage's legitimate edits that are not damage).
Views = Mapping[str, Callable[[np.ndarray], np.ndarray]]


class StoreDamagedError(RuntimeError):
    """A stored shard cannot be read back, or no longer matches its digest."""

    def __init__(self, message: str, detail: str = ""):
        super().__init__(message)
        self.detail = detail or message


def _value_bytes(values: np.ndarray) -> bytes:
    if values.dtype.kind in "OUT":  # text: the same bytes whichever numpy string dtype holds it
        return b"".join(str(v).encode() + b"\0" for v in values.ravel().tolist())
    return np.ascontiguousarray(values).tobytes()


def shard_digest(arrays: Mapping[str, np.ndarray], views: Views | None = None) -> str:
    """sha256 over (name, dtype kind, shape, values) of every array, names in sorted order."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        values = np.asarray(arrays[name])
        if views and name in views:
            values = views[name](values)
        kind = "text" if values.dtype.kind in "OUT" else values.dtype.str
        h.update(f"{name}|{kind}|{values.shape}|".encode())
        h.update(_value_bytes(values))
    return "sha256:" + h.hexdigest()


def read_span(group, name: str, rows, shard: int | None = None):
    """group[name][rows], with a damaged chunk reported by its file, array and shard."""
    return read_checked(group[name], rows, shard)


def read_checked(arr, rows=slice(None), shard: int | None = None):
    """arr[rows] (a slice of rows, or sorted row indices); a chunk that cannot be decoded (checksum,
    codec) is reported in one line naming its file, never as a codec traceback."""
    try:
        if isinstance(rows, slice):
            whole = read_whole_shards(arr, rows)  # the sketch's whole shards, without Zarr's codec pipeline
            return whole if whole is not None else arr[rows]
        return arr.get_orthogonal_selection(np.asarray(rows))
    except (ValueError, RuntimeError, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        key, cause = _failing_chunk(arr, rows, exc)
        where = f"shard {shard}" if shard is not None else (
            f"rows {rows.start or 0}:{'' if rows.stop is None else rows.stop}" if isinstance(rows, slice) else "rows")
        raise StoreDamagedError(
            f"{store_root(arr) / key} ({arr.path}, {where}) cannot be read: {cause} Run `iprox-ray verify RUN_DIR "
            "--repair`, then rerun: only what is damaged is redone", detail=f"{key}: {cause}") from exc


def _failing_chunk(arr, rows, exc: BaseException) -> tuple[str, BaseException]:
    """The first chunk file among those `rows` touch that does not decode (and its error)."""
    size = int(arr.metadata.chunk_grid.chunk_shape[0])
    if isinstance(rows, slice):
        start, stop, _ = rows.indices(arr.shape[0])
        chunks = range(start // size, -(-stop // size))
    else:
        chunks = np.unique(np.asarray(rows, dtype=np.int64) // size).tolist()
    for i in chunks:
        for other in np.ndindex(*arr.cdata_shape[1:]):
            coords = (int(i), *other)
            try:
                arr.get_block_selection(coords)
            except (ValueError, RuntimeError, OSError) as bad:
                return chunk_key(arr, coords), bad
    return f"{arr.path} (chunk unknown)", exc


def array_digest(arr, batch_bytes: int = 64 << 20) -> str:
    """sha256 over a whole array (shape, dtype, values), read a batch of whole row chunks at a time."""
    h = hashlib.sha256()
    kind = "text" if arr.dtype.kind in "OUT" or str(arr.dtype).startswith("<U") else str(arr.dtype)
    h.update(f"{kind}|{tuple(arr.shape)}|".encode())
    size = int(arr.metadata.chunk_grid.chunk_shape[0])
    row_bytes = max(1, int(np.prod(arr.shape[1:], dtype=np.int64)) * max(1, arr.dtype.itemsize))
    step = size * max(1, batch_bytes // (size * row_bytes))
    for start in range(0, arr.shape[0], step):
        h.update(_value_bytes(np.asarray(read_checked(arr, slice(start, start + step)))))
    return "sha256:" + h.hexdigest()
