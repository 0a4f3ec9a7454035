"""Arrays the driver writes (scores, score columns, round-robin candidates, landmarks).

They carry a crc32c per chunk (a damaged chunk fails its read, naming its file) and every chunk of
their grid has a file (EVERY_CHUNK: a chunk of NaN scores too), so a deleted file is noticed
rather than read back as NaN. Before the stage that wrote them is marked done they are made
durable and digested (`seal`); the digests go into the stage's marker, where `stage_done` finds a
lost chunk and `iprox-ray verify` a changed one.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import zarr

from iprox_ray.store.chunks import (
    EVERY_CHUNK,
    all_chunk_keys,
    missing_keys,
    store_root,
    sync_files,
)
from iprox_ray.store.digest import StoreDamagedError, array_digest
from iprox_ray.store.sketch_store import checked_codecs


def create(root: zarr.Group, path: str, **kwargs) -> zarr.Array:
    """A new driver-written array at `path` (one left by an interrupted run is replaced)."""
    if path in root:
        del root[path]
    return root.create_array(path, compressors=checked_codecs(), config=EVERY_CHUNK, **kwargs)


def reopen(root: zarr.Group, path: str) -> zarr.Array:
    """An existing driver-written array, to be rewritten (every chunk keeps its file)."""
    return root[path].with_config(EVERY_CHUNK)


def arrays_under(root: zarr.Group, path: str) -> list[zarr.Array]:
    """The array at `path`, or every array of the group at `path` (sorted by name)."""
    node = root[path]
    if isinstance(node, zarr.Array):
        return [node]
    return [node[name] for name in sorted(node.array_keys())]


def seal(root: zarr.Group, paths: list[str]) -> dict[str, str]:
    """fsync every chunk of these arrays (or groups of arrays); {array path: digest} for the marker."""
    digests = {}
    for path in paths:
        for arr in arrays_under(root, path):
            sync_files(store_root(arr), all_chunk_keys(arr))
            digests[arr.path] = array_digest(arr)
    return digests


def _open(store: Path, path: str) -> zarr.Array:
    """The array at `path` (through the root, so that errors name it by its store path; at its own
    folder when the root lost its metadata)."""
    try:
        node = zarr.open_group(str(store), mode="r")[path]
        if isinstance(node, zarr.Array):
            return node
    except (FileNotFoundError, KeyError, ValueError):
        pass
    return zarr.open_array(str(Path(store) / path), mode="r")


def lost_chunk(store: Path, paths) -> str | None:
    """The first missing chunk file (or array metadata) of recorded driver arrays, as a run-relative
    path; None when every one is there."""
    for path in paths:
        try:
            arr = _open(store, path)
        except (FileNotFoundError, KeyError, ValueError):
            return f"{Path(store).name}/{path}/zarr.json"
        missing = missing_keys(store, all_chunk_keys(arr, path))
        if missing:
            return f"{Path(store).name}/{missing[0]}"
    return None


def check_digest(store: Path, path: str, want: str) -> str | None:
    """Why the recorded array no longer matches its digest, or None."""
    lost = lost_chunk(store, [path])
    if lost:
        return f"{lost} is missing"
    try:
        have = array_digest(_open(store, path))
    except StoreDamagedError as exc:
        return f"cannot be read: {exc.detail}"
    return None if have == want else f"digest {have} != marker's {want}"


class RowWindows:
    """Writes consecutive row spans of a driver array a window of rows at a time, in a background
    thread: Zarr's cost per chunk file (~2–3 ms) exceeds a shard's few KB of scores, so a streaming
    stage that wrote per shard, in line, spent more time in Zarr than reading its input. Spans must
    arrive in order, without gaps; `close` waits for the last write (and raises its error)."""

    def __init__(self, arr: zarr.Array, window_rows: int = 1 << 16):
        self.arr = arr
        self.window_rows = max(window_rows, int(arr.metadata.chunk_grid.chunk_shape[0]))
        self._start = 0
        self._parts: list[np.ndarray] = []
        self._rows = 0
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="iprox-row-windows")
        self._last: Future | None = None

    def put(self, span: slice, values: np.ndarray) -> None:
        if span.start != self._start + self._rows:
            raise ValueError(f"rows {span.start}: expected {self._start + self._rows} (spans in order, no gaps)")
        self._parts.append(np.asarray(values))
        self._rows += span.stop - span.start
        if self._rows >= self.window_rows:
            self._flush()

    def _flush(self) -> None:
        if self._last is not None:
            self._last.result()  # one window in flight: memory stays bounded, an error surfaces here
            self._last = None
        if self._parts:
            rows, values = slice(self._start, self._start + self._rows), np.concatenate(self._parts)
            self._last = self._writer.submit(self.arr.__setitem__, rows, values)
        self._start += self._rows
        self._parts, self._rows = [], 0

    def close(self) -> None:
        try:
            self._flush()
            if self._last is not None:
                self._last.result()
        finally:
            self._writer.shutdown(wait=True)
