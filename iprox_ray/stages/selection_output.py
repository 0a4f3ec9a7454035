"""selection.parquet, written in record batches: never one Python object per selected row.

`write_ranked` writes rows already chosen (round-robin picks, λ-weighted top-k) a batch of ranks at
a time. `write_top_k` chooses and writes the plain top-k with memory independent of k (k may be 5 %
of 1e9 rows):
1. one pass over the scores histograms the top 16 bits of each finite score's order key (a 32-bit
   key whose ascending order is score descending); a bin among the best ones holding more than
   `batch_rows` rows is split by a second pass over its low 16 bits, so only rows of one exact score
   can share a partition beyond `batch_rows`;
2. the bins (and sub-bins) are grouped, best first, into key ranges of about `batch_rows` rows, up
   to the one holding the k-th best; one pass over scores, ids and domains spills those rows to one
   Arrow IPC file per range;
3. the files are read back best first, each sorted by (score descending, row ascending) -- the
   top-k tie rule of influence/topk.py -- and written, the last one cut at exactly k rows.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from iprox_ray.corpus.manifest import Manifest
from iprox_ray.store.atomic import atomic_parquet_writer
from iprox_ray.store.batched_reads import read_rows_at, shard_batches
from iprox_ray.store.digest import read_checked
from iprox_ray.store.sketch_store import SplitStore

SELECTION_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("score", pa.float64()),
        ("rank", pa.int64()),
        ("weight", pa.float64()),
        ("source_file", pa.string()),
        ("source_row", pa.int64()),
        ("domain", pa.string()),
        ("store_row", pa.int64()),
        ("picked_by", pa.string()),  # round-robin: the target example whose turn chose the row
    ]
)
BATCH_ROWS = 1 << 18  # selected rows per record batch and per spilled partition: the memory unit of top-k
SPILL = pa.schema([("score", pa.float32()), ("row", pa.int64()), ("sample_id", pa.string()), ("domain", pa.string())])


def descending_keys(values: np.ndarray) -> np.ndarray:
    """uint32 per float32 score, ascending in score descending order (-0.0 ties +0.0)."""
    bits = (values.astype(np.float32) + np.float32(0.0)).view(np.uint32)
    ascending = np.where(bits >> np.uint32(31), ~bits, bits | np.uint32(1 << 31))
    return ~ascending


def _text(values) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        return values.combine_chunks()
    if isinstance(values, pa.Array):
        return values
    values = np.asarray(values)
    return pa.array(values if values.dtype.kind == "T" else values.astype(np.dtypes.StringDType()), pa.string())


def _batch(manifest: Manifest, rows: np.ndarray, values, weights, first_rank: int, sample_ids, domains,
           picked_by=None) -> pa.RecordBatch:
    file_index, source_row = manifest.locate(rows)
    files = pa.array([f.file for f in manifest.files], pa.string())
    n = len(rows)
    return pa.RecordBatch.from_arrays([
        _text(sample_ids), pa.array(np.asarray(values, np.float64)),
        pa.array(np.arange(first_rank, first_rank + n, dtype=np.int64)), pa.array(np.asarray(weights, np.float64)),
        pc.take(files, pa.array(file_index)), pa.array(source_row.astype(np.int64)),
        _text(domains), pa.array(rows.astype(np.int64)),
        picked_by if picked_by is not None else pa.nulls(n, pa.string()),
    ], schema=SELECTION_SCHEMA)


def _strings_at(pool: SplitStore, rows: np.ndarray, name: str) -> np.ndarray:
    """Values of a text array at rows in any order (read in store order, one pass of whole shards)."""
    order = np.argsort(rows, kind="stable")
    out = np.empty(len(rows), dtype=np.dtypes.StringDType())
    out[order] = read_rows_at(pool, name, rows[order])
    return out


def write_ranked(path: Path, pool: SplitStore, manifest: Manifest, rows: np.ndarray, values: np.ndarray,
                 weights: np.ndarray, picked_by: pa.Array | None = None) -> None:
    """Rows in rank order (best first) with their scores and weights, a batch of ranks at a time."""
    with atomic_parquet_writer(path, SELECTION_SCHEMA) as writer:
        for lo in range(0, len(rows), BATCH_ROWS):
            r = np.asarray(rows[lo : lo + BATCH_ROWS], dtype=np.int64)
            writer.write_batch(_batch(manifest, r, values[lo : lo + len(r)], weights[lo : lo + len(r)], lo + 1,
                                      _strings_at(pool, r, "sample_id"), _strings_at(pool, r, "domain"),
                                      None if picked_by is None else picked_by[lo : lo + len(r)]))


def _pass(scores, pool: SplitStore):
    """(span, values, descending keys, finite mask) for every batch of whole shards."""
    for span in shard_batches(pool):
        values = read_checked(scores, span)
        yield span, values, descending_keys(values), np.isfinite(values)


def key_ranges(scores, pool: SplitStore, k: int, batch_rows: int) -> tuple[np.ndarray, int, int, int]:
    """(start key of each range, last key taken, rows with a key up to it, non-finite count): the
    ranges partition the keys up to the one holding the k-th best finite score."""
    hist = np.zeros(1 << 16, dtype=np.int64)
    non_finite = 0
    for _, _, keys, finite in _pass(scores, pool):
        non_finite += int(len(keys) - finite.sum())
        hist += np.bincount(keys[finite] >> np.uint32(16), minlength=1 << 16)
    want = int(min(k, hist.sum()))
    if want == 0:
        return np.empty(0, np.int64), -1, 0, non_finite
    cut = int(np.searchsorted(np.cumsum(hist), want))
    big = np.flatnonzero(hist[: cut + 1] > batch_rows)
    sub = np.zeros(len(big) << 16, dtype=np.int64)
    if len(big):  # split the crowded bins by their low bits
        for _, _, keys, finite in _pass(scores, pool):
            high = keys >> np.uint32(16)
            hit = finite & np.isin(high, big)
            cell = (np.searchsorted(big, high[hit]).astype(np.int64) << 16) | (keys[hit] & np.uint32(0xFFFF))
            sub += np.bincount(cell, minlength=len(sub))
    starts, ends, counts = [], [], []  # every non-empty bin or sub-bin, in key order
    for b in np.flatnonzero(hist[: cut + 1]).tolist():
        j = int(np.searchsorted(big, b))
        if j < len(big) and big[j] == b:
            cells = sub[j << 16 : (j + 1) << 16]
            low = np.flatnonzero(cells)
            starts += ((b << 16) | low).tolist()
            ends += ((b << 16) | low).tolist()
            counts += cells[low].tolist()
        else:
            starts.append(b << 16)
            ends.append((b << 16) | 0xFFFF)
            counts.append(int(hist[b]))
    cum = np.cumsum(counts)
    last = int(np.searchsorted(cum, want))  # the bin or sub-bin holding the want-th best
    before = np.r_[0, cum[:last]]
    new_range = np.r_[True, np.diff(before // batch_rows) > 0]
    return np.asarray(starts[: last + 1], np.int64)[new_range], int(ends[last]), int(cum[last]), non_finite


def write_top_k(path: Path, scores, pool: SplitStore, manifest: Manifest, k: int, total_weight: float,
                spill_dir: Path | None = None, batch_rows: int = BATCH_ROWS) -> dict:
    """The exact top-k of `scores` (a float32 array over the pool's rows) written to `path`, the
    selected rows sharing `total_weight` equally; memory independent of k. Returns {selected,
    cutoff, non_finite, weights_sum}."""
    ranges, last_key, spilled, non_finite = key_ranges(scores, pool, k, batch_rows)
    want = min(k, spilled)
    weight = total_weight / max(1, want)
    info = {"selected": want, "cutoff": None, "non_finite": non_finite, "weights_sum": weight * want}
    with tempfile.TemporaryDirectory(prefix="select-", dir=spill_dir) as folder, \
            atomic_parquet_writer(path, SELECTION_SCHEMA) as out:
        if want == 0:
            return info
        files = [Path(folder) / f"part-{p:05d}.arrow" for p in range(len(ranges))]
        _spill(scores, pool, ranges, last_key, files)
        done = 0
        for file in files:
            if not file.exists() or done == want:
                continue
            with pa.memory_map(str(file)) as source:
                table = pa.ipc.open_file(source).read_all()
            values = table.column("score").to_numpy()
            rows = table.column("row").to_numpy()
            order = np.lexsort((rows, descending_keys(values)))[: want - done]
            take = pa.array(order)
            out.write_batch(_batch(manifest, rows[order], values[order], np.full(len(order), weight), done + 1,
                                   table.column("sample_id").take(take), table.column("domain").take(take)))
            done += len(order)
            info["cutoff"] = float(values[order[-1]])
    return info


def _spill(scores, pool: SplitStore, ranges: np.ndarray, last_key: int, files: list[Path]) -> None:
    """Every finite row whose key is at most `last_key`, with its id and domain, into the file of
    its key range."""
    writers: dict[int, pa.ipc.RecordBatchFileWriter] = {}
    try:
        for span, values, keys, finite in _pass(scores, pool):
            local = np.flatnonzero(finite & (keys <= last_key))
            if not len(local):
                continue
            parts = np.searchsorted(ranges, keys[local].astype(np.int64), side="right") - 1
            ids = pool.read("sample_id", span)[local]
            domains = pool.read("domain", span)[local]
            for p in np.unique(parts).tolist():
                pick = parts == p
                if p not in writers:
                    writers[p] = pa.ipc.new_file(str(files[p]), SPILL)
                writers[p].write_batch(pa.RecordBatch.from_arrays([
                    pa.array(values[local[pick]].astype(np.float32)), pa.array(span.start + local[pick]),
                    _text(ids[pick]), _text(domains[pick])], schema=SPILL))
    finally:
        for writer in writers.values():
            writer.close()
