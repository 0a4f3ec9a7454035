"""Write the selected rows in the input's own format (Parquet, JSONL, or a save_to_disk folder)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from iprox_ray.corpus.manifest import Manifest
from iprox_ray.corpus.sources import InputFile, _open_arrow_stream
from iprox_ray.store.atomic import atomic_write_bytes, atomic_write_parquet


def _jsonl_lines(path: Path, rows: list[int], manifest: Manifest) -> dict[int, bytes]:
    """Raw lines at the given rows, seeking to each shard's recorded byte offset."""
    by_shard: dict[int, list[int]] = {}
    shards = [s for s in manifest.shards if s.file == str(path)]
    for row in rows:
        shard = next(s for s in shards if s.row_start <= row < s.row_stop)
        by_shard.setdefault(shard.shard_id, []).append(row)
    out: dict[int, bytes] = {}
    with open(path, "rb") as fh:
        for shard_id, wanted in by_shard.items():
            shard = manifest.shards[shard_id]
            fh.seek(shard.byte_start)
            todo = set(wanted)
            for row in range(shard.row_start, max(wanted) + 1):
                line = fh.readline()
                if row in todo:
                    out[row] = line if line.endswith(b"\n") else line + b"\n"
    return out


def _table_rows(f: InputFile, rows: list[int]) -> pa.Table:
    table = pq.read_table(f.path) if f.format == "parquet" else _open_arrow_stream(f.path)
    return table.take(pa.array(rows, type=pa.int64()))


def write_subset(selection: pa.Table, manifest: Manifest, out_dir: Path) -> Path:
    """Selected rows, best first, in the format of the first input file (inputs share a format)."""
    files = selection.column("source_file").to_pylist()
    rows = selection.column("source_row").to_pylist()
    fmt = manifest.files[0].format
    order: dict[str, list[int]] = {}
    for f, r in zip(files, rows):
        order.setdefault(f, []).append(r)
    if fmt == "jsonl":
        lines = {f: _jsonl_lines(Path(f), rs, manifest) for f, rs in order.items()}
        path = out_dir / "selected.jsonl"
        atomic_write_bytes(path, b"".join(lines[f][r] for f, r in zip(files, rows)))
        return path
    pieces = {f: _table_rows(InputFile(Path(f), fmt), rs) for f, rs in order.items()}
    cursor = {f: 0 for f in pieces}
    slices = []
    for f in files:
        slices.append(pieces[f].slice(cursor[f], 1))
        cursor[f] += 1
    table = pa.concat_tables(slices, promote_options="default") if slices else pa.table({})
    if fmt == "parquet":
        path = out_dir / "selected.parquet"
        atomic_write_parquet(path, table)
        return path
    return _write_save_to_disk(table, Path(manifest.files[0].file).parent, out_dir / "selected")


def _write_save_to_disk(table: pa.Table, source_dir: Path, folder: Path) -> Path:
    """A folder `datasets.load_from_disk` opens: one Arrow stream file + state + info."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    name = "data-00000-of-00001.arrow"
    with pa.OSFile(str(folder / name), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    info = source_dir / "dataset_info.json"
    if info.exists():
        shutil.copy(info, folder / "dataset_info.json")
    state = {"_data_files": [{"filename": name}], "_fingerprint": "iprox-ray-selection",
             "_format_columns": None, "_format_kwargs": {}, "_format_type": None,
             "_output_all_columns": False, "_split": None}
    (folder / "state.json").write_text(json.dumps(state, indent=2))
    return folder
