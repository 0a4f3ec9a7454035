"""Stage: duplicate ids. Later occurrences of an id (in store row order) are quarantined; the first
one is kept.

Memory stays flat in the pool size (hash-partitioned, external):
1. The ids are streamed a batch of whole shards at a time; each candidate row's id becomes a 64-bit
   hash, and a fixed-width (hash, row) record goes to one of P partition files chosen by the hash.
2. One partition at a time (about N/P rows) is sorted by (hash, row); rows sharing a hash are
   checked as strings (a hash collision must never quarantine a distinct id), read back in
   batches of whole shards, once for as many partitions' such rows as fit `memory_bytes`.
P is chosen from the pool size so that one partition fits `memory_bytes`; with P = 1 the records
never leave memory.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numba
import numpy as np
import pyarrow as pa

from iprox_ray.corpus.manifest import Manifest
from iprox_ray.corpus.shard_reader import QUARANTINE_SCHEMA
from iprox_ray.execution.context import RunContext
from iprox_ray.store.atomic import atomic_parquet_writer
from iprox_ray.store.batched_reads import read_rows_at, shard_batches
from iprox_ray.store.chunks import row_chunk_keys, store_root, sync_files
from iprox_ray.store.digest import read_span
from iprox_ray.store.layout import dedup_stage
from iprox_ray.store.sketch_store import DUPLICATE, NONFINITE, NOT_SKETCHED, OK, SplitStore

CANDIDATE = (OK, NONFINITE, DUPLICATE, NOT_SKETCHED)  # rows that carry a parsed id
RECORD = np.dtype([("hash", "<u8"), ("row", "<i8")])
# Deduplicating one partition holds its records, a sort order and sorted copies: ~48 bytes a row.
BYTES_PER_ROW = 48
# 256 MiB: from ~5e6 rows on, every pool is partitioned, so the peak no longer grows with N
# (bench/scale/driver.py); below that the whole pool fits in one partition anyway.
DEFAULT_MEMORY_BYTES = 256 << 20
RECORD_BATCH = 1 << 20  # quarantine rows per parquet record batch


def partition_count(n_rows: int, memory_bytes: int = DEFAULT_MEMORY_BYTES) -> int:
    """Partitions P so that one partition's dedup (about n_rows / P rows) fits memory_bytes."""
    return max(1, math.ceil(n_rows * BYTES_PER_ROW / max(1, memory_bytes)))


@numba.njit(cache=True)
def _hash_codes(codes: np.ndarray) -> np.ndarray:
    """64-bit hash per row of a [n, L] uint32 code-point matrix (numpy 'U' strings): FNV-1a over
    the code points up to the last non-zero one (so the padding width does not matter), then the
    splitmix64 finaliser for well-spread high and low bits."""
    n, width = codes.shape
    out = np.empty(n, dtype=np.uint64)
    for i in range(n):
        end = width
        while end > 0 and codes[i, end - 1] == 0:
            end -= 1
        h = np.uint64(0xCBF29CE484222325) ^ np.uint64(end)
        for j in range(end):
            h = (h ^ np.uint64(codes[i, j])) * np.uint64(0x100000001B3)
        h ^= h >> np.uint64(30)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(27)
        h *= np.uint64(0x94D049BB133111EB)
        h ^= h >> np.uint64(31)
        out[i] = h
    return out


def id_hashes(sample_ids: np.ndarray) -> np.ndarray:
    """uint64 hash of each id string (equal strings, equal hashes)."""
    text = np.asarray(sample_ids, dtype=np.dtypes.StringDType())
    if text.size == 0:
        return np.empty(0, np.uint64)
    width = max(1, int(np.strings.str_len(text).max()))
    fixed = text.astype(f"<U{width}")
    return _hash_codes(fixed.view(np.uint32).reshape(len(fixed), width))


class _Partitions:
    """(hash, row) records spread over P partitions: in memory when P = 1, else append-only files."""

    def __init__(self, count: int, folder: Path | None):
        self.count = count
        self.folder = folder
        self.memory: list[np.ndarray] = []

    def add(self, hashes: np.ndarray, rows: np.ndarray) -> None:
        records = np.empty(len(rows), RECORD)
        records["hash"], records["row"] = hashes, rows
        if self.count == 1:
            self.memory.append(records)
            return
        part = (hashes % np.uint64(self.count)).astype(np.int64)
        order = np.argsort(part, kind="stable")
        bounds = np.r_[0, np.cumsum(np.bincount(part, minlength=self.count))]
        for p in np.flatnonzero(np.diff(bounds)):
            with open(self.folder / f"part-{p:05d}.bin", "ab") as fh:
                records[order[bounds[p] : bounds[p + 1]]].tofile(fh)

    def load(self, p: int) -> np.ndarray:
        if self.count == 1:
            return np.concatenate(self.memory) if self.memory else np.empty(0, RECORD)
        path = self.folder / f"part-{p:05d}.bin"
        return np.fromfile(path, RECORD) if path.exists() else np.empty(0, RECORD)


def _shared_hash_rows(records: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(hash, row) of the rows whose hash another row also has, sorted by (hash, row)."""
    order = np.lexsort((records["row"], records["hash"]))
    h, r = records["hash"][order], records["row"][order]
    same = h[1:] == h[:-1]
    shared = np.zeros(len(h), bool)
    shared[1:] |= same
    shared[:-1] |= same
    return h[shared], r[shared]


def _duplicates_in(store: SplitStore, h: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(duplicate rows, first row of the same id) among rows grouped in runs of one hash, sorted by
    (hash, row); their ids are read back (one batched read) so that a collision keeps distinct ids."""
    if not len(h):
        return np.empty(0, np.int64), np.empty(0, np.int64)
    run_start = np.r_[True, h[1:] != h[:-1]]
    run_first = np.maximum.accumulate(np.where(run_start, np.arange(len(h)), 0))
    by_row = np.argsort(r, kind="stable")
    ids = read_rows_at(store, "sample_id", r[by_row])[np.argsort(by_row)]  # back to hash order
    mismatch = ids != ids[run_first]
    run_id = np.cumsum(run_start) - 1
    colliding = np.zeros(int(run_id[-1]) + 1, bool)
    colliding[run_id[mismatch]] = True
    plain = ~run_start & ~colliding[run_id]  # later rows of a run that is one id
    dup, kept = [r[plain]], [r[run_first[plain]]]
    # A hash collision (never seen in practice): the first row of each distinct id in the run is kept.
    for start, stop in zip(*_runs(run_start)):
        if not colliding[run_id[start]]:
            continue
        firsts: dict = {}
        for i in range(start, stop):
            if ids[i] in firsts:
                dup.append(r[i : i + 1])
                kept.append(np.array([firsts[ids[i]]], np.int64))
            else:
                firsts[ids[i]] = r[i]
    return np.concatenate(dup), np.concatenate(kept)


def _runs(run_start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    starts = np.flatnonzero(run_start)
    return starts, np.r_[starts[1:], len(run_start)]


def _shared_groups(parts: _Partitions, memory_bytes: int):
    """The partitions' shared-hash rows, gathered over as many partitions as memory_bytes allows:
    each group's ids are read back once, not once per partition (P full re-reads at 1e8 rows).
    Partitions hold disjoint hashes, so concatenating them keeps every hash's run whole."""
    hs, rs, pending = [], [], 0
    for p in range(parts.count):
        h, r = _shared_hash_rows(parts.load(p))
        hs.append(h)
        rs.append(r)
        pending += len(h)
        if pending * BYTES_PER_ROW >= memory_bytes or p == parts.count - 1:
            yield np.concatenate(hs), np.concatenate(rs)
            hs, rs, pending = [], [], 0


def find_duplicates(store: SplitStore, memory_bytes: int = DEFAULT_MEMORY_BYTES,
                    spill_dir: Path | None = None, partitions: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(duplicate store rows, the first row holding the same id), ordered by store row.

    `partitions` (default: from the pool size and memory_bytes) sets P; partition files go to a
    temporary folder under spill_dir (default: the system's temporary folder), removed after."""
    count = partitions or partition_count(store.n_rows, memory_bytes)
    with tempfile.TemporaryDirectory(prefix="dedup-", dir=spill_dir) as folder:
        parts = _Partitions(count, Path(folder))
        for span in shard_batches(store):
            written = read_span(store.group, "written", span)
            local = np.flatnonzero(np.isin(written, CANDIDATE))
            if len(local):
                ids = read_span(store.group, "sample_id", span)[local]
                parts.add(id_hashes(ids), span.start + local)
        found = [_duplicates_in(store, h, r) for h, r in _shared_groups(parts, memory_bytes)]
    dup_rows = np.concatenate([d for d, _ in found]) if found else np.empty(0, np.int64)
    first_rows = np.concatenate([f for _, f in found]) if found else np.empty(0, np.int64)
    by_row = np.argsort(dup_rows, kind="stable")
    return dup_rows[by_row], first_rows[by_row]


def mark_duplicates(store: SplitStore, dup_rows: np.ndarray) -> None:
    """Set `written` to DUPLICATE at the (sorted) rows, rewriting whole shards in batches; the
    rewritten chunk files are durable when this returns (Zarr replaces each one atomically)."""
    arr = store.group["written"]
    for span in shard_batches(store):
        lo, hi = np.searchsorted(dup_rows, [span.start, span.stop])
        if hi > lo:
            written = read_span(store.group, "written", span)
            written[dup_rows[lo:hi] - span.start] = DUPLICATE
            arr[span] = written
            shards = np.unique(dup_rows[lo:hi] // store.rows_per_shard).tolist()
            sync_files(store_root(arr), [key for shard in shards for key in row_chunk_keys(arr, shard)])


def quarantine_batches(store: SplitStore, manifest: Manifest, split: str, dup_rows: np.ndarray,
                       first_rows: np.ndarray):
    """Quarantine records of the duplicates as Arrow record batches (bounded size each)."""
    files = np.array([f.file for f in manifest.files], dtype=object)
    for lo in range(0, len(dup_rows), RECORD_BATCH):
        dup, first = dup_rows[lo : lo + RECORD_BATCH], first_rows[lo : lo + RECORD_BATCH]
        dup_file, dup_row = manifest.locate(dup)
        first_file, first_row = manifest.locate(first)
        detail = [f"same id as row {r} of {f}" for r, f in zip(first_row.tolist(), files[first_file].tolist())]
        yield pa.RecordBatch.from_arrays([
            pa.array(np.full(len(dup), split, dtype=object), pa.string()),
            pa.array(dup // manifest.rows_per_shard), pa.array(files[dup_file], pa.string()),
            pa.array(dup_row),
            pa.array(read_rows_at(store, "sample_id", dup).astype(object), pa.string()),
            pa.array(np.full(len(dup), "duplicate-id", dtype=object), pa.string()),
            pa.array(detail, pa.string()),
        ], schema=QUARANTINE_SCHEMA)


def run_dedup(ctx: RunContext, split: str, manifest: Manifest) -> int:
    stage = dedup_stage(split)
    done = ctx.stage_done(stage)
    if done:
        return int(done["duplicates"])
    store = SplitStore.open(ctx.layout.store, split)
    dup_rows, first_rows = find_duplicates(store, spill_dir=ctx.layout.root)
    ctx.guard(f"rewrite the row status of {split}")
    mark_duplicates(store, dup_rows)
    out = ctx.layout.duplicates(split)
    with atomic_parquet_writer(out, QUARANTINE_SCHEMA) as writer:
        for batch in quarantine_batches(store, manifest, split, dup_rows, first_rows):
            writer.write_batch(batch)
    ctx.mark_stage_done(stage, {"duplicates": len(dup_rows)}, outputs=(out,))
    return len(dup_rows)
