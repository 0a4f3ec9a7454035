"""Rows, shards and tokens of a split without tokenising it all, and the bytes its sketch arrays
take on disk.

Rows come from the same manifest the run freezes (Parquet metadata, JSONL newline count); tokens
from a seeded sample encoded with the workers' encoder (corpus/formats.py); padding from the workers' batch plan.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from iprox_ray.corpus.batching import Batch, make_batches, plan_batches
from iprox_ray.corpus.encode import Encoded
from iprox_ray.corpus.formats import encode_all
from iprox_ray.corpus.manifest import Manifest, build_manifest
from iprox_ray.corpus.rows import RowError
from iprox_ray.corpus.shard_reader import read_shard
from iprox_ray.corpus.sources import discover
from iprox_ray.spec import JobSpec, SourceSpec
from iprox_ray.store.sketch_store import sketch_chunk_rows
from iprox_ray.tasks.inputs import sample_count, token_probe

# Zarr v3 sharding: each shard file ends with an index of (offset, nbytes) uint64 pairs per inner
# chunk plus the index's crc32c; each stored chunk carries its own crc32c (the sketch codec).
INDEX_BYTES_PER_CHUNK = 16
CRC_BYTES = 4
SYNTHETIC_SHARDS = 8  # length draws per shard size when the sample is not the whole split


def manifest_of(job: JobSpec, split: str, source: SourceSpec, encoder) -> Manifest:
    """The manifest a run would freeze for this source (nothing written; "auto" shard sizes from
    the run's own token probe)."""
    return build_manifest(discover(source.paths, source.format, job.base_dir), source.rows_per_shard,
                          token_probe(job, split, source, lambda: encoder))


@dataclass
class SplitSample:
    split: str
    manifest: Manifest
    sampled: int
    encoded: list[Encoded]
    lengths_by_shard: dict[int, list[int]] = field(default_factory=dict)
    read_seconds_per_row: float = 0.0
    encode_seconds_per_row: float = 0.0

    @property
    def whole(self) -> bool:
        return self.sampled == self.manifest.n_rows

    @property
    def usable_share(self) -> float:
        return len(self.encoded) / self.sampled if self.sampled else 0.0

    @property
    def mean_tokens(self) -> float:
        """Per sampled row; a quarantined row counts 0 (it is never sketched)."""
        return sum(e.n_tokens for e in self.encoded) / self.sampled if self.sampled else 0.0

    @property
    def tokens(self) -> int:
        return int(round(self.manifest.n_rows * self.mean_tokens))


def sample_split(split: str, manifest: Manifest, source: SourceSpec, encoder, count: int,
                 seed: int) -> SplitSample:
    """Encode a seeded uniform sample of `count` rows (all rows when the split is smaller)."""
    chosen = sample_count(manifest, count, seed)
    out = SplitSample(split, manifest, sum(len(local) for local in chosen.values()), [])
    read_s = encode_s = 0.0
    read_rows = 0
    for shard_id, local in sorted(chosen.items()):
        shard = manifest.shards[shard_id]
        t0 = time.perf_counter()
        rows = read_shard(split, shard, source, encoder, only=set(local), encode=False)  # encoding is timed below
        read_s += time.perf_counter() - t0
        read_rows += shard.n_rows  # the reader walks the whole shard
        lengths = out.lengths_by_shard.setdefault(shard_id, [])
        t0 = time.perf_counter()
        for conv in rows.conversations:
            try:
                rows_of = encode_all(encoder, conv)
            except RowError:
                continue  # quarantined by the worker too
            out.encoded += rows_of
            lengths += [enc.n_tokens for enc in rows_of]
        encode_s += time.perf_counter() - t0
    out.read_seconds_per_row = read_s / max(1, read_rows)
    out.encode_seconds_per_row = encode_s / max(1, out.sampled)
    return out


def shard_padded_tokens(sample: SplitSample, token_budget: int, max_rows: int, seed: int) -> dict[int, float]:
    """Padded tokens of each shard's batches as the worker packs them (length-sorted under the
    budget): exact when the whole split was sampled, else the mean over seeded draws of the
    sampled lengths for each distinct shard size."""
    def padded(lengths: list[int]) -> int:
        return sum(len(b) * max(lengths[i] for i in b) for b in plan_batches(lengths, token_budget, max_rows))

    if sample.whole:
        return {s.shard_id: float(padded(sample.lengths_by_shard.get(s.shard_id, []))) for s in sample.manifest.shards}
    pool = [e.n_tokens for e in sample.encoded]
    rng = np.random.default_rng(seed)
    by_size: dict[int, float] = {}
    for size in sorted({s.n_rows for s in sample.manifest.shards}):
        usable = int(round(size * sample.usable_share))
        draws = [padded(rng.choice(pool, size=usable).tolist()) if usable and pool else 0
                 for _ in range(SYNTHETIC_SHARDS)]
        by_size[size] = float(np.mean(draws))
    return {s.shard_id: by_size[s.n_rows] for s in sample.manifest.shards}


def sample_batches(sample: SplitSample, token_budget: int, max_rows: int, pad_id: int) -> list[Batch]:
    """The sample packed as one worker packs a shard (what gets timed)."""
    return make_batches(sample.encoded, token_budget, max_rows, pad_id)


def sketch_array_bytes(manifest: Manifest, dim: int, sketched_share: float, dtype: str) -> int:
    """Chunk files of one sketch array (one checkpoint) on disk, its rows kept in `dtype`
    (`store.sketch_dtype`: the chunking follows the item size too).

    Zarr writes no chunk that holds only the fill value (0): padding rows past a shard's end and
    unsketched rows cost nothing, so a chunk is stored when any of its rows is sketched. With a
    partial subset (landmarks) the expected count is used."""
    S = manifest.rows_per_shard
    itemsize = np.dtype(dtype).itemsize
    chunk_rows = sketch_chunk_rows(S, dim, itemsize)
    per_chunk = chunk_rows * dim * itemsize + CRC_BYTES
    index = (S // chunk_rows) * INDEX_BYTES_PER_CHUNK + CRC_BYTES
    if sketched_share <= 0:
        return 0
    total = 0.0
    for shard in manifest.shards:
        chunks = math.ceil(shard.n_rows / chunk_rows)
        if sketched_share < 1:
            full = shard.n_rows // chunk_rows
            tail = shard.n_rows - full * chunk_rows
            chunks = full * (1 - (1 - sketched_share) ** chunk_rows) + (1 - (1 - sketched_share) ** tail if tail else 0)
        total += chunks * per_chunk + index
    return int(round(total))
