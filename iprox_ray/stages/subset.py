"""Write the selected rows in the input's own format (Parquet, JSONL, or a save_to_disk folder).

Memory stays bounded whatever the pool size and k (k may be 5 % of 1e9 rows):
1. The selection Parquet is read a batch at a time, `source_file` dictionary-encoded (a file name
   is never decoded per row); each batch's (source row, output position) pairs are sorted by
   (input file, row) and appended to two flat files on disk (`SelectionKeys`).
2. Each input file is read once in row order, only where it holds selected rows (Parquet row
   groups, JSONL shards from their recorded byte offsets, Arrow stream batches), its pairs coming
   back from the sorted runs by a k-way merge in blocks of `block_rows`. Each gathered row is
   tagged with its output position (its rank order); past `memory_bytes` the gathered rows are
   sorted by position and spilled to an Arrow IPC file in batches of `SPILL_BATCH_ROWS`.
3. The output is written in windows of positions; each window reads only the spilled batches
   whose positions it covers, with plain reads (a memory map would keep every page it touched
   resident until the end, which grows with k).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from iprox_ray.corpus.manifest import Manifest
from iprox_ray.corpus.sources import CorpusError, InputFile, input_schema
from iprox_ray.store.atomic import atomic_output

LINE_SCHEMA = pa.schema([("line", pa.binary())])  # JSONL rows are copied byte for byte
DEFAULT_MEMORY_BYTES = 16 << 20  # gathered rows held before a spill; a window writes a quarter of it
SELECTION_BATCH_ROWS = 1 << 18  # selection rows sorted at a time (16 bytes of keys each)
BLOCK_ROWS = 1 << 18  # (row, position) pairs of one input file gathered at a time
SPILL_BATCH_ROWS = 8192  # most rows per record batch of a spilled run (the unit a window reads) ...
SPILL_BATCH_BYTES = 256 << 10  # ... and about this many bytes: a window's reads stay near its size
POSITION = "__position"  # the output position column of a spilled run


def write_subset(selection: Path, manifest: Manifest, out: Path, memory_bytes: int = DEFAULT_MEMORY_BYTES,
                 block_rows: int | None = None) -> Path:
    """The rows of the selection Parquet at `selection` (columns source_file and source_row), best
    first (its order), in the split's one input format, at `out` plus that format's suffix (a saved
    dataset: the folder `out`); returns the path written."""
    fmt = manifest.format
    if any(f.format != fmt for f in manifest.files):
        raise CorpusError(f"cannot write one subset from inputs of several formats ({manifest.files[0].file} is "
                          f"{fmt}); inputs of one split must share one format")
    schema = LINE_SCHEMA if fmt == "jsonl" else unified_schema(manifest)
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=out.parent, prefix=".subset-"))
    try:
        keys = SelectionKeys(scratch, manifest)
        for file_index, rows in selection_batches(selection, manifest, SELECTION_BATCH_ROWS):
            keys.add(file_index, rows)
        runs = _Runs(scratch, schema, memory_bytes)
        for f in range(len(manifest.files)):
            for table, at in _gather(manifest, f, keys.blocks(f, block_rows or BLOCK_ROWS)):
                runs.add(table, at)
        windows = runs.windows(keys.total)
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


def selection_batches(selection: Path, manifest: Manifest,
                      batch_rows: int = SELECTION_BATCH_ROWS) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(input file index, source row) of each selected row, a batch at a time, checked against the manifest."""
    names = pa.array([f.file for f in manifest.files], pa.string())
    n_rows = np.array([f.n_rows for f in manifest.files], dtype=np.int64)
    parquet = pq.ParquetFile(selection, read_dictionary=["source_file"])
    for batch in parquet.iter_batches(batch_size=batch_rows, columns=["source_file", "source_row"]):
        files = batch.column(0)
        if not isinstance(files, pa.DictionaryArray):
            files = files.dictionary_encode()
        known = pc.index_in(files.dictionary.cast(pa.string()), value_set=names)
        index = known.take(files.indices)
        if index.null_count:
            unknown = files.filter(pc.is_null(index))[0].as_py()
            raise CorpusError(f"the selection names {unknown}, which is not an input of this run's manifest")
        index = index.to_numpy().astype(np.int64)
        rows = batch.column(1).to_numpy().astype(np.int64)
        bad = np.flatnonzero((rows < 0) | (rows >= n_rows[index]))
        if len(bad):
            i = int(bad[0])
            raise CorpusError(f"the selection asks for row {rows[i]} of {manifest.files[index[i]].file}, "
                              f"which has {n_rows[index[i]]} rows")
        yield index, rows


class SelectionKeys:
    """(source row, output position) pairs on disk, in runs sorted by (input file, row): one run per
    selection batch; `blocks(f)` merges one file's slices of every run back in row order."""

    def __init__(self, folder: Path, manifest: Manifest):
        self.rows_path, self.positions_path = folder / "rows.i64", folder / "positions.i64"
        self.n_files = len(manifest.files)
        self.bounds: list[np.ndarray] = []  # per run: where each file's pairs start in the flat files
        self.total = 0
        self.rows_path.touch()
        self.positions_path.touch()

    def add(self, file_index: np.ndarray, rows: np.ndarray) -> None:
        order = np.lexsort((rows, file_index))
        with open(self.rows_path, "ab") as fh:
            rows[order].tofile(fh)
        with open(self.positions_path, "ab") as fh:
            (order + self.total).astype(np.int64).tofile(fh)
        self.bounds.append(self.total + np.searchsorted(file_index[order], np.arange(self.n_files + 1)))
        self.total += len(rows)

    def blocks(self, f: int, block_rows: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """File f's (rows, positions) in row order, about `block_rows` pairs at a time."""
        spans = [[int(b[f]), int(b[f + 1])] for b in self.bounds if b[f + 1] > b[f]]
        if not spans:
            return
        per = max(1, block_rows // len(spans))
        held = [(np.empty(0, np.int64), np.empty(0, np.int64)) for _ in spans]  # read, not yet given out
        with open(self.rows_path, "rb") as rows_fh, open(self.positions_path, "rb") as pos_fh:
            while True:
                for j, (cursor, stop) in enumerate(spans):
                    count = min(per - len(held[j][0]), stop - cursor)
                    if count > 0:
                        more = _read_i64(rows_fh, cursor, count), _read_i64(pos_fh, cursor, count)
                        held[j] = np.concatenate([held[j][0], more[0]]), np.concatenate([held[j][1], more[1]])
                        spans[j][0] += count
                if not any(len(r) for r, _ in held):
                    return
                # Every row up to the smallest last-read row of a run with more on disk has been read.
                open_ends = [held[j][0][-1] for j, (c, s) in enumerate(spans) if c < s]
                frontier = min(open_ends) if open_ends else np.iinfo(np.int64).max
                cut = [int(np.searchsorted(r, frontier, side="right")) for r, _ in held]
                rows = np.concatenate([r[:c] for (r, _), c in zip(held, cut)])
                positions = np.concatenate([p[:c] for (_, p), c in zip(held, cut)])
                held = [(r[c:], p[c:]) for (r, p), c in zip(held, cut)]
                order = np.argsort(rows, kind="stable")
                yield rows[order], positions[order]


def _read_i64(fh, start: int, count: int) -> np.ndarray:
    fh.seek(start * 8)
    return np.fromfile(fh, dtype=np.int64, count=count)


def _gather(manifest: Manifest, file_index: int, blocks: Iterable[tuple[np.ndarray, np.ndarray]]):
    """(rows as a table, their output positions) for one input file's blocks of selected rows."""
    info = manifest.files[file_index]
    if info.format == "jsonl":
        return _jsonl_pieces(manifest, file_index, blocks)
    if info.format == "parquet":
        return _parquet_pieces(Path(info.file), blocks)
    return _arrow_stream_pieces(Path(info.file), blocks)


def _runs_of(keys: np.ndarray) -> Iterator[tuple[int, int]]:
    """[lo, hi) spans of equal values in a sorted array."""
    edges = np.flatnonzero(np.diff(keys)) + 1
    yield from zip([0, *edges.tolist()], [*edges.tolist(), len(keys)])


def _parquet_pieces(path: Path, blocks):
    """Only the row groups that hold selected rows are read, one at a time (a group that two blocks
    share is read by each)."""
    parquet = pq.ParquetFile(path)
    sizes = [parquet.metadata.row_group(g).num_rows for g in range(parquet.num_row_groups)]
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    for rows, positions in blocks:
        groups = np.searchsorted(starts, rows, side="right") - 1
        for lo, hi in _runs_of(groups):
            group = int(groups[lo])
            table = parquet.read_row_groups([group])
            yield table.take(pa.array(rows[lo:hi] - starts[group])), positions[lo:hi]


def _arrow_stream_pieces(path: Path, blocks):
    """Batch by batch through the memory-mapped stream, once for all blocks (their rows ascend);
    `take` copies, so nothing outlives the map."""
    with pa.memory_map(str(path)) as source:
        stream = iter(pa.ipc.open_stream(source))
        batch, start = next(stream, None), 0
        for rows, positions in blocks:
            lo = 0
            while lo < len(rows) and batch is not None:
                stop = start + batch.num_rows
                hi = int(np.searchsorted(rows, stop))
                if hi > lo:
                    yield pa.Table.from_batches([batch]).take(pa.array(rows[lo:hi] - start)), positions[lo:hi]
                    lo = hi
                if lo < len(rows):
                    batch, start = next(stream, None), stop


def _jsonl_pieces(manifest: Manifest, file_index: int, blocks):
    """Raw lines, one touched shard at a time: read from its recorded byte offset to the next shard's."""
    shards = manifest.file_shards(file_index)
    file_size = manifest.files[file_index].size
    with open(manifest.files[file_index].file, "rb") as fh:
        for rows, positions in blocks:
            shard_ids = shards.start + np.searchsorted(manifest.row_start[shards], rows, side="right") - 1
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
        self.spilled: list[tuple[pa.ipc.RecordBatchFileReader, np.ndarray, np.ndarray]] = []  # reader, first/last
        # position of each batch

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
        table = table.append_column(POSITION, pa.array(positions, pa.int64()))
        path = self.scratch / f"run-{len(self.spilled):05d}.arrow"
        firsts, lasts, at = [], [], 0
        per_row = max(1, table.nbytes // max(1, table.num_rows))
        rows = int(min(SPILL_BATCH_ROWS, max(16, SPILL_BATCH_BYTES // per_row)))
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            for batch in table.to_batches(max_chunksize=rows):
                writer.write_batch(batch)
                firsts.append(positions[at])
                lasts.append(positions[at + batch.num_rows - 1])
                at += batch.num_rows
        del table
        reader = pa.ipc.open_file(pa.OSFile(str(path), "rb"))  # plain reads: nothing stays resident
        self.spilled.append((reader, np.asarray(firsts, np.int64), np.asarray(lasts, np.int64)))

    def windows(self, n_positions: int) -> Iterator[pa.Table]:
        """The output in position order, a window of rows at a time (about memory_bytes / 4 each)."""
        if self.pending and self.spilled:
            self._spill()  # the windows then hold only what they write
        resident = self._sorted_pending() if self.pending else None
        # A window is read, concatenated, put in order and encoded: a few copies of its rows.
        per_row = self.total_bytes / max(1, n_positions)
        step = int(min(1 << 20, max(256, self.memory_bytes // 4 // max(1.0, per_row))))
        for first in range(0, n_positions, step):
            last = min(n_positions, first + step)
            parts = list(self._spilled_parts(first, last))
            if resident is not None:
                lo, hi = np.searchsorted(resident[1], [first, last])
                parts.append(resident[0].slice(lo, hi - lo).append_column(POSITION, pa.array(resident[1][lo:hi])))
            window = pa.concat_tables(parts)
            order = np.argsort(window.column(POSITION).to_numpy(), kind="stable")
            yield window.drop_columns([POSITION]).take(pa.array(order))

    def _spilled_parts(self, first: int, last: int) -> Iterator[pa.Table]:
        """The rows of every spilled run with a position in [first, last)."""
        for reader, firsts, lasts in self.spilled:
            for b in range(int(np.searchsorted(lasts, first)), int(np.searchsorted(firsts, last))):
                batch = reader.get_batch(b)
                at = batch.column(POSITION).to_numpy()
                lo, hi = np.searchsorted(at, [first, last])
                if hi > lo:
                    yield pa.Table.from_batches([batch.slice(lo, hi - lo)])


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
