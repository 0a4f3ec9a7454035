"""Write the selected rows in the input's own format (Parquet, JSONL, or a save_to_disk folder).

Memory stays bounded whatever the pool size and k. Pass 1 reads each input once, and only what
holds selected rows (Parquet row groups, JSONL shards from their recorded byte offsets, Arrow
stream batches); each gathered row is tagged with its output position (its rank order). When the
gathered rows pass `memory_bytes` they are sorted by position and spilled to an Arrow IPC file.
Pass 2 writes the output in windows of positions, each cut from every spilled run by binary
search (zero-copy slices of memory-mapped files).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from iprox_ray.corpus.manifest import Manifest
from iprox_ray.corpus.sources import CorpusError, InputFile, input_schema
from iprox_ray.store.atomic import atomic_output

LINE_SCHEMA = pa.schema([("line", pa.binary())])  # JSONL rows are copied byte for byte
DEFAULT_MEMORY_BYTES = 256 << 20


def write_subset(selection: pa.Table, manifest: Manifest, out: Path,
                 memory_bytes: int = DEFAULT_MEMORY_BYTES) -> Path:
    """Selected rows, best first (selection order), in the split's one input format, at `out` plus
    that format's suffix (a saved dataset: the folder `out`); returns the path written."""
    fmt = manifest.format
    if any(f.format != fmt for f in manifest.files):
        raise CorpusError(f"cannot write one subset from inputs of several formats ({manifest.files[0].file} is "
                          f"{fmt}); inputs of one split must share one format")
    schema = LINE_SCHEMA if fmt == "jsonl" else unified_schema(manifest)
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=out.parent, prefix=".subset-"))
    try:
        runs = _Runs(scratch, schema, memory_bytes)
        for file_index, rows, positions in selected_rows(selection, manifest):
            for table, at in _gather(manifest, file_index, rows, positions):
                runs.add(table, at)
        windows = runs.windows(selection.num_rows)
        if fmt == "jsonl":
            return _write_jsonl(windows, out.with_name(out.name + ".jsonl"))
        if fmt == "parquet":
            return _write_parquet(windows, schema, out.with_name(out.name + ".parquet"))
        return _write_save_to_disk(windows, schema, Path(manifest.files[0].file).parent, out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def unified_schema(manifest: Manifest) -> pa.Schema:
    """Every input's columns (types promoted as build_manifest checked), with the first file's metadata."""
    schemas = [input_schema(InputFile(Path(f.file), f.format)) for f in manifest.files]
    unified = pa.unify_schemas(schemas, promote_options="default")
    return unified.with_metadata(schemas[0].metadata) if schemas[0].metadata else unified.remove_metadata()


def selected_rows(selection: pa.Table, manifest: Manifest) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(file index, sorted source rows, their output positions) for each input file with selected rows."""
    names = pa.array([f.file for f in manifest.files], pa.string())
    files = selection.column("source_file").cast(pa.string())
    index = pc.index_in(files, value_set=names)
    if index.null_count:
        unknown = files.filter(pc.is_null(index))[0].as_py()
        raise CorpusError(f"the selection names {unknown}, which is not an input of this run's manifest")
    index = index.to_numpy().astype(np.int64)
    rows = selection.column("source_row").to_numpy().astype(np.int64)
    n_rows = np.array([f.n_rows for f in manifest.files], dtype=np.int64)
    bad = np.flatnonzero((rows < 0) | (rows >= n_rows[index]))
    if len(bad):
        i = int(bad[0])
        raise CorpusError(f"the selection asks for row {rows[i]} of {manifest.files[index[i]].file}, "
                          f"which has {n_rows[index[i]]} rows")
    order = np.lexsort((rows, index))
    index, rows = index[order], rows[order]
    bounds = np.searchsorted(index, np.arange(len(manifest.files) + 1))
    for f in np.flatnonzero(np.diff(bounds)).tolist():
        lo, hi = bounds[f], bounds[f + 1]
        yield f, rows[lo:hi], order[lo:hi]


def _gather(manifest: Manifest, file_index: int, rows: np.ndarray, positions: np.ndarray):
    info = manifest.files[file_index]
    if info.format == "jsonl":
        return _jsonl_pieces(manifest, file_index, rows, positions)
    if info.format == "parquet":
        return _parquet_pieces(Path(info.file), rows, positions)
    return _arrow_stream_pieces(Path(info.file), rows, positions)


def _runs_of(keys: np.ndarray) -> Iterator[tuple[int, int]]:
    """[lo, hi) spans of equal values in a sorted array."""
    edges = np.flatnonzero(np.diff(keys)) + 1
    yield from zip([0, *edges.tolist()], [*edges.tolist(), len(keys)])


def _parquet_pieces(path: Path, rows: np.ndarray, positions: np.ndarray):
    """Only the row groups that hold selected rows are read, one at a time."""
    parquet = pq.ParquetFile(path)
    sizes = [parquet.metadata.row_group(g).num_rows for g in range(parquet.num_row_groups)]
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    groups = np.searchsorted(starts, rows, side="right") - 1
    for lo, hi in _runs_of(groups):
        group = int(groups[lo])
        table = parquet.read_row_groups([group])
        yield table.take(pa.array(rows[lo:hi] - starts[group])), positions[lo:hi]


def _arrow_stream_pieces(path: Path, rows: np.ndarray, positions: np.ndarray):
    """Batch by batch through the memory-mapped stream; `take` copies, so nothing outlives the map."""
    with pa.memory_map(str(path)) as source:
        start, lo = 0, 0
        for batch in pa.ipc.open_stream(source):
            stop = start + batch.num_rows
            hi = int(np.searchsorted(rows, stop))
            if hi > lo:
                table = pa.Table.from_batches([batch]).take(pa.array(rows[lo:hi] - start))
                yield table, positions[lo:hi]
            start, lo = stop, hi
            if lo == len(rows):
                return


def _jsonl_pieces(manifest: Manifest, file_index: int, rows: np.ndarray, positions: np.ndarray):
    """Raw lines, one touched shard at a time: read from its recorded byte offset to the next shard's."""
    shards = manifest.file_shards(file_index)
    shard_ids = shards.start + np.searchsorted(manifest.row_start[shards], rows, side="right") - 1
    file_size = manifest.files[file_index].size
    with open(manifest.files[file_index].file, "rb") as fh:
        for lo, hi in _runs_of(shard_ids):
            shard = int(shard_ids[lo])
            begin = int(manifest.byte_start[shard])
            end = int(manifest.byte_start[shard + 1]) if shard + 1 < shards.stop else file_size
            fh.seek(begin)
            data = fh.read(end - begin)
            ends = np.concatenate([np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10) + 1, [len(data)]])
            starts = np.concatenate([[0], ends[:-1]])
            lines = []
            for local in (rows[lo:hi] - manifest.row_start[shard]).tolist():
                line = data[starts[local]:ends[local]]
                lines.append(line if line.endswith(b"\n") else line + b"\n")
            yield pa.table({"line": pa.array(lines, pa.binary())}), positions[lo:hi]


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """The table with exactly the output's columns and types (absent columns become nulls)."""
    columns = [table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(len(table), f.type)
               for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


class _Runs:
    """Gathered rows: in memory up to a byte budget, then as position-sorted Arrow IPC runs on disk."""

    def __init__(self, scratch: Path, schema: pa.Schema, memory_bytes: int):
        self.scratch, self.schema, self.memory_bytes = scratch, schema, memory_bytes
        self.pending: list[tuple[pa.Table, np.ndarray]] = []
        self.pending_bytes = self.total_bytes = 0
        self.runs: list[tuple[pa.Table, np.ndarray]] = []  # (rows sorted by position, those positions)

    def add(self, table: pa.Table, positions: np.ndarray) -> None:
        table = _conform(table, self.schema)
        self.pending.append((table, positions))
        self.pending_bytes += table.nbytes
        self.total_bytes += table.nbytes
        if self.pending_bytes > self.memory_bytes:
            self._spill()

    def _sorted_pending(self) -> tuple[pa.Table, np.ndarray]:
        table = pa.concat_tables([t for t, _ in self.pending])
        positions = np.concatenate([p for _, p in self.pending])
        order = np.argsort(positions, kind="stable")
        self.pending, self.pending_bytes = [], 0
        return table.take(pa.array(order)), positions[order]

    def _spill(self) -> None:
        table, positions = self._sorted_pending()
        path = self.scratch / f"run-{len(self.runs):05d}.arrow"
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        del table
        # Not closed here: the mapping stays alive as long as the table's buffers use it.
        self.runs.append((pa.ipc.open_file(pa.memory_map(str(path))).read_all(), positions))

    def windows(self, n_positions: int) -> Iterator[pa.Table]:
        """The output in position order, a window of rows at a time (about memory_bytes each)."""
        if self.pending:
            self.runs.append(self._sorted_pending())
        per_row = self.total_bytes / max(1, n_positions)
        step = int(min(1 << 20, max(1024, self.memory_bytes // max(1.0, per_row))))
        for first in range(0, n_positions, step):
            last = min(n_positions, first + step)
            parts, where = [], []
            for table, positions in self.runs:
                lo, hi = np.searchsorted(positions, [first, last])
                if hi > lo:
                    parts.append(table.slice(lo, hi - lo))
                    where.append(positions[lo:hi])
            window = pa.concat_tables(parts)
            yield window.take(pa.array(np.argsort(np.concatenate(where), kind="stable")))


def _write_jsonl(windows: Iterator[pa.Table], path: Path) -> Path:
    with atomic_output(path) as tmp, open(tmp, "wb") as fh:
        for window in windows:
            fh.write(b"".join(window.column("line").to_pylist()))
    return path


def _write_parquet(windows: Iterator[pa.Table], schema: pa.Schema, path: Path) -> Path:
    with atomic_output(path) as tmp, pq.ParquetWriter(str(tmp), schema) as writer:
        for window in windows:
            writer.write_table(window)
    return path


def _write_save_to_disk(windows: Iterator[pa.Table], schema: pa.Schema, source_dir: Path, folder: Path) -> Path:
    """A folder `datasets.load_from_disk` opens: one Arrow stream file + state + info."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    name = "data-00000-of-00001.arrow"
    with pa.OSFile(str(folder / name), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        for window in windows:
            writer.write_table(window)
    info = source_dir / "dataset_info.json"
    if info.exists():
        shutil.copy(info, folder / "dataset_info.json")
    state = {"_data_files": [{"filename": name}], "_fingerprint": "iprox-ray-selection",
             "_format_columns": None, "_format_kwargs": {}, "_format_type": None,
             "_output_all_columns": False, "_split": None}
    (folder / "state.json").write_text(json.dumps(state, indent=2))
    return folder
