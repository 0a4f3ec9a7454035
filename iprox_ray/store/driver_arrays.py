"""Arrays the driver writes (scores, score columns, round-robin candidates, landmarks).

They carry a crc32c per chunk (a damaged chunk fails its read, naming its file) and every chunk of
their grid has a file (EVERY_CHUNK: a chunk of NaN scores too), so a deleted file is noticed
rather than read back as NaN. Before the stage that wrote them is marked done they are made
durable and digested (`seal`); the digests go into the stage's marker, where `stage_done` finds a
lost chunk and `iprox-ray verify` a changed one.
"""

from __future__ import annotations

from pathlib import Path

import zarr

from iprox_ray.store.chunks import EVERY_CHUNK, all_chunk_keys, missing_keys, store_root, sync_files
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
