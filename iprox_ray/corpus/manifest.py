"""The frozen shard manifest: written once per run, checked on every rerun.

Shard i covers rows [row_start, row_stop) of one file and owns store rows
[i*rows_per_shard, (i+1)*rows_per_shard). Shards never span files.

Shards are held as numpy columns (one entry per shard, nothing per row), so a 1e8-row split
costs megabytes; `manifest.shards[i]` still gives a `Shard` when one is wanted.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from iprox_ray.corpus.shard_size import AUTO, GRANULARITY, MAX_SHARDS, TARGET_SHARD_TOKENS, auto_rows_per_shard
from iprox_ray.corpus.sources import CorpusError, InputFile, count_rows, discover, input_schema
from iprox_ray.store.atomic import atomic_write_json, atomic_write_parquet, read_json


class ManifestMismatchError(RuntimeError):
    pass


@dataclass(frozen=True)
class Shard:
    shard_id: int
    file: str
    format: str
    row_start: int
    row_stop: int
    byte_start: int  # JSONL: offset of row_start; else 0

    @property
    def n_rows(self) -> int:
        return self.row_stop - self.row_start


@dataclass(frozen=True)
class FileInfo:
    file: str
    format: str
    size: int
    mtime_ns: int
    checksum: str
    n_rows: int


def file_checksum(path: Path, block: int = 8 << 20) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()


class ShardTable(Sequence):
    """The manifest's shards as a read-only sequence of `Shard`, built on access from the columns."""

    def __init__(self, manifest: "Manifest"):
        self._m = manifest

    def __len__(self) -> int:
        return len(self._m.row_start)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        i = int(index)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"shard {index} out of range ({len(self)} shards)")
        m = self._m
        info = m.files[m.file_index[i]]
        return Shard(i, info.file, info.format, int(m.row_start[i]), int(m.row_stop[i]), int(m.byte_start[i]))

    def __eq__(self, other) -> bool:
        return isinstance(other, Sequence) and len(self) == len(other) and all(a == b for a, b in zip(self, other))


@dataclass(eq=False)
class Manifest:
    rows_per_shard: int
    files: list[FileInfo]
    file_index: np.ndarray  # int32 [n_shards]: index into files
    row_start: np.ndarray  # int64 [n_shards]
    row_stop: np.ndarray  # int64 [n_shards]
    byte_start: np.ndarray  # int64 [n_shards]: JSONL offset of row_start; else 0
    sizing: dict | None = field(default=None)  # how an auto rows_per_shard was chosen

    @property
    def shards(self) -> ShardTable:
        return ShardTable(self)

    @property
    def n_shards(self) -> int:
        return len(self.row_start)

    @property
    def shard_n_rows(self) -> np.ndarray:
        return self.row_stop - self.row_start

    @property
    def n_rows(self) -> int:
        return int(self.shard_n_rows.sum())

    @property
    def format(self) -> str:
        """The split's one input format (build_manifest refuses mixed formats)."""
        return self.files[0].format

    def file_shards(self, file_index: int) -> slice:
        """The shard ids of one file (shards are laid out file by file)."""
        lo, hi = np.searchsorted(self.file_index, [file_index, file_index + 1])
        return slice(int(lo), int(hi))

    def locate(self, store_rows) -> tuple[np.ndarray, np.ndarray]:
        """(file index, row within that file) of each store row (shard*rows_per_shard + local)."""
        rows = np.asarray(store_rows, dtype=np.int64)
        shard = rows // self.rows_per_shard
        return self.file_index[shard], self.row_start[shard] + rows % self.rows_per_shard

    # -- persistence ----------------------------------------------------------------------
    def save(self, table_path: Path, info_path: Path, source: dict) -> None:
        # Same columns as always (strings on disk; Parquet dictionary-encodes them).
        names = pa.array([f.file for f in self.files], pa.string())
        formats = pa.array([f.format for f in self.files], pa.string())
        index = pa.array(self.file_index.astype(np.int32))
        table = pa.table({
            "shard_id": pa.array(np.arange(self.n_shards, dtype=np.int64)),
            "file": pa.DictionaryArray.from_arrays(index, names).cast(pa.string()),
            "format": pa.DictionaryArray.from_arrays(index, formats).cast(pa.string()),
            "row_start": pa.array(self.row_start), "row_stop": pa.array(self.row_stop),
            "byte_start": pa.array(self.byte_start),
        })
        atomic_write_parquet(table_path, table)
        info = {"rows_per_shard": self.rows_per_shard, "files": [asdict(f) for f in self.files], "source": source}
        if self.sizing is not None:
            info["sizing"] = self.sizing
        atomic_write_json(info_path, info)

    @classmethod
    def load(cls, table_path: Path, info_path: Path) -> "Manifest":
        info = read_json(info_path)
        files = [FileInfo(**f) for f in info["files"]]
        table = pq.read_table(table_path, columns=["shard_id", "file", "row_start", "row_stop", "byte_start"])
        names = pa.array([f.file for f in files], pa.string())
        index = pc.index_in(table.column("file").cast(pa.string()), value_set=names)
        if index.null_count or not np.array_equal(table.column("shard_id").to_numpy(), np.arange(table.num_rows)):
            raise ManifestMismatchError(f"manifest {table_path} does not match {info_path}; use --force-new")
        column = lambda name: table.column(name).to_numpy().astype(np.int64)  # noqa: E731
        return cls(int(info["rows_per_shard"]), files, index.to_numpy().astype(np.int32), column("row_start"),
                   column("row_stop"), column("byte_start"), info.get("sizing"))


def manifest_from_files(files: Sequence[FileInfo], rows_per_shard: int, offsets: Sequence[np.ndarray] | None = None,
                        offsets_stride: int = 1) -> Manifest:
    """Cut files into shards from their row counts alone (no I/O: also for synthetic benchmarks).

    offsets[i], for a JSONL file i, holds the byte offsets of its rows 0, stride, 2*stride, ...;
    rows_per_shard must then be a multiple of offsets_stride."""
    if offsets is not None and rows_per_shard % offsets_stride:
        raise ValueError(f"rows_per_shard {rows_per_shard} is not a multiple of the offset stride {offsets_stride}")
    counts = np.array([f.n_rows for f in files], dtype=np.int64)
    per_file = -(-counts // rows_per_shard)
    file_index = np.repeat(np.arange(len(files), dtype=np.int32), per_file)
    first_of_file = np.cumsum(per_file) - per_file
    local = np.arange(len(file_index), dtype=np.int64) - np.repeat(first_of_file, per_file)
    row_start = local * rows_per_shard
    row_stop = np.minimum(row_start + rows_per_shard, counts[file_index])
    byte_start = np.zeros(len(file_index), dtype=np.int64)
    for i, found in enumerate(offsets or []):
        if len(found):
            shards = slice(first_of_file[i], first_of_file[i] + per_file[i])
            byte_start[shards] = found[row_start[shards] // offsets_stride]
    return Manifest(int(rows_per_shard), list(files), file_index, row_start, row_stop, byte_start)


def check_inputs_agree(files: list[InputFile]) -> None:
    """One format per split, and Parquet/Arrow columns whose types agree: refused here, before any compute,
    rather than when the subset is written at the very end."""
    first_of: dict[str, Path] = {}
    for f in files:
        first_of.setdefault(f.format, f.path)
    if len(first_of) > 1:
        found = ", ".join(f"{path} ({fmt})" for fmt, path in first_of.items())
        raise CorpusError(f"inputs of one split must share one format, found {found}; convert them to one format")
    unified, origin = None, {}
    for f in files:
        schema = input_schema(f)
        if schema is None:
            return
        try:
            unified = schema if unified is None else pa.unify_schemas([unified, schema], promote_options="default")
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            name = next((n for n in schema.names if n in origin and not _agree(origin[n][0], schema.field(n).type)),
                        None)
            if name is None:
                raise CorpusError(f"the columns of {f.path} do not agree with those of {files[0].path}") from None
            raise CorpusError(f"input column {name!r} is {origin[name][0]} in {origin[name][1]} but "
                              f"{schema.field(name).type} in {f.path}; make the column types agree") from None
        for name in schema.names:
            if name not in origin or pa.types.is_null(origin[name][0]):
                origin[name] = (schema.field(name).type, f.path)


def _agree(a: pa.DataType, b: pa.DataType) -> bool:
    try:
        pa.unify_schemas([pa.schema([("c", a)]), pa.schema([("c", b)])], promote_options="default")
        return True
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return False


def scan_inputs(files: list[InputFile], stride: int) -> tuple[list[FileInfo], list[np.ndarray]]:
    """Per file: size, mtime, checksum and row count, plus (JSONL) every stride-th row offset.
    JSONL files are read once: the checksum is fed by the same scan."""
    infos, offsets = [], []
    for f in files:
        stat = f.path.stat()
        digest = hashlib.blake2b(digest_size=16) if f.format == "jsonl" else None
        n_rows, found = count_rows(f, stride, digest)
        checksum = digest.hexdigest() if digest is not None else file_checksum(f.path)
        infos.append(FileInfo(str(f.path), f.format, stat.st_size, stat.st_mtime_ns, checksum, n_rows))
        offsets.append(found)
    return infos, offsets


def build_manifest(files: list[InputFile], rows_per_shard: int | str,
                   tokens_per_row: Callable[[Manifest], float] | None = None) -> Manifest:
    """Scan the inputs and cut them into shards. rows_per_shard = "auto" sizes shards by tokens:
    tokens_per_row(probe) estimates the mean from a probe manifest (at most MAX_SHARDS shards)."""
    check_inputs_agree(files)
    auto = rows_per_shard == AUTO
    if auto and tokens_per_row is None:
        raise ValueError('rows_per_shard = "auto" needs a tokens_per_row estimator')
    stride = GRANULARITY if auto else int(rows_per_shard)
    infos, offsets = scan_inputs(files, stride)
    if not sum(f.n_rows for f in infos):
        raise CorpusError("the inputs hold no rows: " + ", ".join(str(f.path) for f in files))
    if not auto:
        return manifest_from_files(infos, stride, offsets, stride)
    # The estimator samples a few rows of a few shards: probe shards as coarse as MAX_SHARDS allows,
    # so the probe's per-shard columns stay small at 1e8+ rows (GRANULARITY-row shards: 1.6M at 1e8).
    total = sum(f.n_rows for f in infos)
    probe = manifest_from_files(infos, GRANULARITY * max(1, -(-total // (MAX_SHARDS * GRANULARITY))), offsets, stride)
    per_row = float(tokens_per_row(probe))
    chosen = auto_rows_per_shard(probe.n_rows, per_row, max(f.n_rows for f in infos))
    manifest = manifest_from_files(infos, chosen, offsets, stride)
    manifest.sizing = {"mode": AUTO, "tokens_per_row": per_row, "target_shard_tokens": TARGET_SHARD_TOKENS,
                       "max_shards": MAX_SHARDS}
    return manifest


def verify_inputs(manifest: Manifest, files: list[InputFile]) -> None:
    """Refuse if the inputs differ from those the manifest froze (cheap stat check, then checksum)."""
    now = [str(f.path) for f in files]
    then = [fi.file for fi in manifest.files]
    if now != then:
        added, removed = sorted(set(now) - set(then)), sorted(set(then) - set(now))
        raise ManifestMismatchError(
            f"the input file list changed since this run's manifest was frozen (added {added}, removed {removed}); "
            "use a new run directory or --force-new"
        )
    for fi in manifest.files:
        try:
            stat = os.stat(fi.file)
        except OSError as exc:
            raise ManifestMismatchError(f"input {fi.file} is gone: {exc}") from exc
        if stat.st_size != fi.size:
            raise ManifestMismatchError(
                f"input {fi.file} changed since the manifest was frozen (size {fi.size} -> {stat.st_size}); "
                "use a new run directory or --force-new"
            )
        if stat.st_mtime_ns != fi.mtime_ns and file_checksum(Path(fi.file)) != fi.checksum:
            raise ManifestMismatchError(
                f"input {fi.file} changed since the manifest was frozen (checksum differs); "
                "use a new run directory or --force-new"
            )


def freeze_manifest(
    patterns: list[str], fmt: str, base_dir: Path, rows_per_shard: int | str, table_path: Path, info_path: Path,
    source: dict, tokens_per_row: Callable[[Manifest], float] | None = None,
) -> Manifest:
    """Load the run's manifest (checking the inputs did not change) or build and save it once.
    A resume always keeps the recorded rows_per_shard: an auto size is never estimated again."""
    files = discover(patterns, fmt, base_dir)
    if table_path.exists() and info_path.exists():
        manifest = Manifest.load(table_path, info_path)
        verify_inputs(manifest, files)
        return manifest
    manifest = build_manifest(files, rows_per_shard, tokens_per_row)
    manifest.save(table_path, info_path, source)
    return manifest
