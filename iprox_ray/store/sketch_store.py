"""The Zarr v3 store of per-row sketches and row metadata, laid out per storage_schema/v2.

Every corpus shard owns whole Zarr shards (rows [shard_id*S, (shard_id+1)*S)), so workers never
share a file; only the driver creates arrays or edits attributes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec

from iprox_ray.store.chunks import sync_shard
from iprox_ray.store.digest import StoreDamagedError, read_checked, shard_digest
from iprox_ray.store.quantize import dequantize_rows, quantize_rows
from iprox_ray.store.shard_file import shard_layout
from iprox_ray.store.sharded_rows import ShardedRows

# 2: every array carries a crc32c checksum, markers list the chunk files a shard wrote and the compute
# precision (version 1 stores are refused: their markers cannot show a lost chunk); sketch dtype per
# split (float16 | int8 + sketch_scale), re-projection, hashed small blocks.
SCHEMA_VERSION = 2

# Row status codes held in the `written` array.
EMPTY, OK, QUARANTINED, NONFINITE, DUPLICATE = 0, 1, 2, 3, 4
NOT_SKETCHED = 5  # a valid row outside the sketched subset (e.g. not an Influence Distillation landmark)
STATUS_NAMES = {EMPTY: "empty", OK: "ok", QUARANTINED: "quarantined", NONFINITE: "nonfinite", DUPLICATE: "duplicate",
                NOT_SKETCHED: "not-sketched"}
CANDIDATES = (OK, NOT_SKETCHED)  # rows a selection may choose (by scores that need no sketch)
# Dedup later turns OK into DUPLICATE: that edit is not damage, so digests see it as OK.
DIGEST_VIEWS = {"written": lambda w: np.where(w == DUPLICATE, OK, w)}

ROW_ARRAYS: dict[str, Any] = {
    "sample_id": str,
    "domain": str,
    "subtask": str,
    "n_tokens": np.dtype("int32"),
    "loss": np.dtype("float32"),
    "sketch_norm": np.dtype("float32"),  # L2 norm of the fp32 sketch; `sketch` holds the unit row
    "written": np.dtype("uint8"),
}
SKETCH = "sketch"
SKETCH_DTYPE = np.dtype("float16")  # a split that records no `sketch_dtype` (schema v1); new ones record theirs
SCALE = "sketch_scale"  # int8 splits: float32 per row, unit row ≈ scale · int8 row (store/quantize.py)
# With several checkpoints (TracIn / LESS), checkpoint c >= 1 has its own copy of these arrays.
PER_CHECKPOINT = ("sketch", "sketch_norm", "loss", SCALE)


def checkpoint_array(name: str, index: int) -> str:
    """Checkpoint `index`'s array: the plain name for the first, `<name>_ckpt<index>` after it."""
    return name if index == 0 else f"{name}_ckpt{index}"


def row_arrays(n_checkpoints: int = 1, sketch_dtype: str = "float16") -> dict[str, Any]:
    """Every one-value-per-row array of a split holding n_checkpoints sketches."""
    base = dict(ROW_ARRAYS)
    if sketch_dtype == "int8":
        base[SCALE] = np.dtype("float32")
    arrays = dict(base)
    for c in range(1, n_checkpoints):
        arrays.update({checkpoint_array(n, c): base[n] for n in PER_CHECKPOINT if n in base})
    return arrays


SKETCH_CHUNK_BYTES = 4 << 20
READ_AHEAD_SHARDS = 2  # sketch shards a streaming reader has in flight (SplitStore.advise)


class StoreMismatchError(RuntimeError):
    pass


def _fill(dtype: Any) -> Any:
    return "" if dtype is str else 0


def checked_codecs() -> list:
    """Compression plus a crc32c of every chunk: a damaged chunk fails its read (and names its file),
    never decodes into other values."""
    return [ZstdCodec(level=0), Crc32cCodec()]


def sketch_chunk_rows(rows_per_shard: int, dim: int, itemsize: int = SKETCH_DTYPE.itemsize) -> int:
    """Largest divisor of the shard's row count whose chunk stays under SKETCH_CHUNK_BYTES."""
    limit = max(1, SKETCH_CHUNK_BYTES // max(1, dim * itemsize))
    best = 1
    for d in range(1, min(rows_per_shard, limit) + 1):
        if rows_per_shard % d == 0:
            best = d
    return best


def refuse_lost_metadata(store: Path, path: str = "") -> None:
    """Refuse a group folder (and each folder above it in the store) that holds data but lost its
    zarr.json: creating it anew would hide or delete the arrays under it."""
    parts = path.split("/") if path else []
    for folder in [store] + [store.joinpath(*parts[: i + 1]) for i in range(len(parts))]:
        if folder.is_dir() and any(folder.iterdir()) and not (folder / "zarr.json").exists():
            raise StoreDamagedError(f"{folder} has no zarr.json but holds data; run `iprox-ray verify RUN_DIR "
                                    "--repair` to rebuild the store metadata")


def open_root(path: Path, config_fingerprint: str | None = None) -> zarr.Group:
    """Open (or create) the root group; refuses a store written under another schema, and one
    whose root metadata is gone (creating it anew would delete the arrays under it)."""
    refuse_lost_metadata(path)
    if (path / "zarr.json").exists():
        root = zarr.open_group(str(path), mode="r+")
        version = root.attrs.get("schema_version")
        if version != SCHEMA_VERSION:
            raise StoreMismatchError(f"{path} has schema version {version}, this build reads {SCHEMA_VERSION}")
        return root
    root = zarr.open_group(str(path), mode="w")
    root.attrs.update({"schema_version": SCHEMA_VERSION, "config_fingerprint": config_fingerprint})
    return root


@dataclass
class SplitStore(ShardedRows):
    """One split (the pool, or one named target set) of the store."""

    @property
    def location(self) -> str:
        """The group's path inside the store (what completion markers record)."""
        return str(self.group.attrs["split"])

    @property
    def sketch_dim(self) -> int:
        return int(self.group.attrs["sketch_dim"])

    @property
    def n_checkpoints(self) -> int:
        return len(self.group.attrs.get("checkpoints") or [None])

    @property
    def sketch_dtype(self) -> str:
        return str(self.group.attrs.get("sketch_dtype", SKETCH_DTYPE.name))

    def row_arrays(self) -> dict[str, Any]:
        return row_arrays(self.n_checkpoints, self.sketch_dtype)

    @classmethod
    def create(
        cls,
        store_path: Path,
        split: str,
        n_shards: int,
        rows_per_shard: int,
        sketch_dim: int,
        attrs: dict[str, Any],
    ) -> "SplitStore":
        """Create the split's arrays, or reopen them if they were made with identical attributes.

        `attrs["checkpoints"]` (a list, default one) sets how many sketch arrays the split holds;
        `attrs["sketch_dtype"]` (default float16) how their rows are kept (store/quantize.py)."""
        root = open_root(store_path)
        refuse_lost_metadata(store_path, split)
        want = {
            **attrs,
            "split": split,
            "n_shards": n_shards,
            "rows_per_shard": rows_per_shard,
            "sketch_dim": sketch_dim,
        }
        if split in root:
            require_same_attrs(f"store split {split!r} at {store_path}", dict(root[split].attrs), want)
            return cls.open(store_path, split)
        group = root.create_group(split)
        n_rows = n_shards * rows_per_shard
        n_checkpoints = len(attrs.get("checkpoints") or [None])
        dtype_name = attrs.get("sketch_dtype", SKETCH_DTYPE.name)
        for name, dtype in row_arrays(n_checkpoints, dtype_name).items():
            group.create_array(name, shape=(n_rows,), chunks=(rows_per_shard,), dtype=dtype, fill_value=_fill(dtype),
                               compressors=checked_codecs())
        chunk_rows = sketch_chunk_rows(rows_per_shard, sketch_dim, np.dtype(dtype_name).itemsize)
        for c in range(n_checkpoints):
            group.create_array(
                checkpoint_array(SKETCH, c),
                shape=(n_rows, sketch_dim),
                chunks=(chunk_rows, sketch_dim),
                shards=(rows_per_shard, sketch_dim),
                dtype=dtype_name,
                fill_value=0,
                compressors=[Crc32cCodec()],  # integrity check; sketches do not compress
            )
        group.attrs.update(want)
        return cls(group, rows_per_shard, n_shards)

    @classmethod
    def open(cls, store_path: Path, split: str, mode: str = "r+") -> "SplitStore":
        refuse_lost_metadata(store_path, split)
        try:
            group = zarr.open_group(str(store_path / split), mode=mode)
        except FileNotFoundError as exc:
            raise StoreMismatchError(f"no split {split!r} in store {store_path}") from exc
        return cls(group, int(group.attrs["rows_per_shard"]), int(group.attrs["n_shards"]))

    def write_shard(self, shard_id: int, sketch: np.ndarray | list[np.ndarray], rows: dict[str, np.ndarray]) -> dict:
        """Write one corpus shard's rows, padded to the whole Zarr shard it owns, and make them
        durable; returns what its completion marker records: the rows' digest and chunk files.

        `sketch` is one array per checkpoint (a bare array when there is one) of float unit rows
        (zero rows where nothing was sketched); they are kept in the split's dtype, and for int8
        the per-row scale is written beside them (`rows` need not hold it)."""
        sketches = sketch if isinstance(sketch, (list, tuple)) else [sketch]
        if len(sketches) != self.n_checkpoints:
            raise ValueError(f"shard {shard_id}: {len(sketches)} sketch arrays for {self.n_checkpoints} checkpoints")
        span = self.shard_rows(shard_id)
        written: dict[str, np.ndarray] = {}
        n = sketches[0].shape[0]
        if n > self.rows_per_shard:
            raise ValueError(f"shard {shard_id} has {n} rows > rows_per_shard {self.rows_per_shard}")
        dtype_name = self.sketch_dtype
        payloads = []
        rows = dict(rows)
        for c, values in enumerate(sketches):
            payload, scale = quantize_rows(values, dtype_name)
            payloads.append(payload)
            if scale is not None:
                rows[checkpoint_array(SCALE, c)] = scale
        for name, dtype in self.row_arrays().items():
            values = np.asarray(rows[name])
            if len(values) != n:
                raise ValueError(f"shard {shard_id}: {name} has {len(values)} rows, sketch has {n}")
            padded = np.full(self.rows_per_shard, _fill(dtype), dtype=object if dtype is str else dtype)
            padded[:n] = values
            written[name] = padded.astype(str) if dtype is str else padded
            self.array(name)[span] = written[name]
        for c, values in enumerate(payloads):
            block = np.zeros((self.rows_per_shard, self.sketch_dim), dtype=dtype_name)
            block[:n] = values
            written[checkpoint_array(SKETCH, c)] = block
            self.array(checkpoint_array(SKETCH, c))[span] = block
        return {"digest": shard_digest(written, DIGEST_VIEWS),
                "chunks": sync_shard(self.group, written, shard_id, self.location)}

    def array_names(self) -> list[str]:
        """Every array a shard writes."""
        return [*self.row_arrays(), *(checkpoint_array(SKETCH, c) for c in range(self.n_checkpoints))]

    def stored_digest(self, shard_id: int) -> str:
        """The digest of what the store holds now for this shard (StoreDamagedError if unreadable)."""
        span = self.shard_rows(shard_id)
        return shard_digest({n: read_checked(self.array(n), span, shard_id) for n in self.array_names()}, DIGEST_VIEWS)

    def advise(self, shard_id: int) -> None:
        """Start reading a shard in the background (a no-op past the last shard): a streaming reader
        advises shard i + 1 before it works on shard i, and promises not to write the split
        meanwhile. Reader threads (store/read_ahead.py) read the sketch rows of this shard and the
        READ_AHEAD_SHARDS - 1 after it (two reads in flight keep the disk busier than one); the
        small per-row numeric arrays are read a window of shards at a time (Zarr's cost is per
        call, not per byte, for them). Text arrays are not read ahead."""
        if not 0 <= shard_id < self.n_shards:
            return
        window = shard_id // self._shards_per_window
        first = window * self._shards_per_window * self.rows_per_shard
        rows = slice(first, min(self.n_rows, first + self._shards_per_window * self.rows_per_shard))
        self._ahead.drop_before(shard_id - 1)  # the caller may still be working on shard_id - 1
        self._windows.drop_before(window - 1)
        for name in self.array_names():
            arr = self.array(name)
            if shard_layout(arr) is not None:
                for ahead in range(shard_id, min(self.n_shards, shard_id + READ_AHEAD_SHARDS)):
                    self._ahead.start(name, ahead, partial(read_checked, arr, self.shard_rows(ahead), ahead))
            elif arr.dtype.kind in "biuf":
                self._windows.start(name, window, partial(read_checked, arr, rows))

    def payload(self, rows: slice, checkpoint: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
        """(the sketch rows as stored, their int8 scales or None) of a span: what the scorers read
        without making a float copy (influence/int8_scores.py)."""
        payload = self.read(checkpoint_array(SKETCH, checkpoint), rows)
        scale = self.read(checkpoint_array(SCALE, checkpoint), rows) if self.sketch_dtype == "int8" else None
        return payload, scale

    def units(self, rows: slice | np.ndarray, checkpoint: int = 0) -> np.ndarray:
        """Float32 unit sketch rows at a span or at arbitrary rows (small reads: landmarks, targets)."""
        fetch = self.read if isinstance(rows, slice) else self.gather
        scale = fetch(checkpoint_array(SCALE, checkpoint), rows) if self.sketch_dtype == "int8" else None
        return dequantize_rows(fetch(checkpoint_array(SKETCH, checkpoint), rows), scale)



def require_same_attrs(what: str, have: dict, want: dict) -> None:
    """Refuse to reopen a group whose recorded attributes differ from what this run would write."""
    diff = sorted(k for k in set(want) | set(have) if _jsonable(want.get(k)) != _jsonable(have.get(k)))
    if diff:
        details = "; ".join(f"{k}: store has {have.get(k)!r}, run wants {want.get(k)!r}" for k in diff)
        raise StoreMismatchError(f"{what} was written with other settings: {details}")


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value
