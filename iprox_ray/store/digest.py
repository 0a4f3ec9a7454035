"""Content digests of one corpus shard's rows: written beside its completion marker at write time,
recomputed from the store by `iprox-ray verify`."""

from __future__ import annotations

import hashlib
from typing import Callable, Mapping

import numpy as np

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
    """group[name][rows], with a damaged chunk reported by array, rows and shard."""
    try:
        return group[name][rows]
    except (ValueError, RuntimeError, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        where = f"shard {shard}" if shard is not None else (
            f"rows {rows.start or 0}:{'' if rows.stop is None else rows.stop}" if isinstance(rows, slice) else "rows")
        raise StoreDamagedError(
            f"{group.store_path}/{name} ({where}) cannot be read: {exc} Run `iprox-ray verify RUN_DIR --repair`, "
            "then rerun: only the damaged shards are redone", detail=f"{name}: {exc}") from exc
