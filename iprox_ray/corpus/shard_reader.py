"""Read one manifest shard into encoded rows (conversations or texts) plus quarantine records for
its bad rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from iprox_ray.corpus.encode import Encoded
from iprox_ray.corpus.manifest import Manifest, Shard
from iprox_ray.corpus.rows import Conversation, RowError, TextRow, parse_row
from iprox_ray.corpus.sources import InputFile, read_rows
from iprox_ray.spec import SourceSpec

QUARANTINE_SCHEMA = pa.schema(
    [
        ("split", pa.string()),
        ("shard_id", pa.int64()),
        ("file", pa.string()),
        ("row", pa.int64()),
        ("sample_id", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
    ]
)


@dataclass
class ShardRows:
    shard: Shard
    local_rows: list[int] = field(default_factory=list)  # row within the shard, per kept row
    conversations: list[Conversation | TextRow] = field(default_factory=list)  # the kept rows, parsed
    encoded: list[Encoded] = field(default_factory=list)
    quarantine: list[dict] = field(default_factory=list)

    def quarantine_table(self) -> pa.Table:
        return pa.Table.from_pylist(self.quarantine, schema=QUARANTINE_SCHEMA)


def read_shard(split: str, shard: Shard, spec: SourceSpec, encoder, only: set[int] | None = None,
               encode: bool = True) -> ShardRows:
    """Parse (and, given an encoder of corpus/formats.py and `encode`, tokenise) every row, or only
    the shard's local rows in `only`; bad rows are recorded, never raised. Without an encoder rows
    are parsed as conversations."""
    out = ShardRows(shard)
    parse = parse_row if encoder is None else encoder.parse
    source = InputFile(Path(shard.file), shard.format)
    for raw in read_rows(source, shard.row_start, shard.row_stop, shard.byte_start):
        if only is not None and raw.index - shard.row_start not in only:
            continue
        sample_id = ""
        try:
            if raw.error:
                reason, _, detail = raw.error.partition(": ")
                raise RowError(reason, detail)
            conv = parse(raw.values, spec)
            sample_id = conv.sample_id
            enc = encoder.encode_row(conv) if encoder is not None and encode else None
        except RowError as err:
            out.quarantine.append(
                {
                    "split": split,
                    "shard_id": shard.shard_id,
                    "file": shard.file,
                    "row": raw.index,
                    "sample_id": sample_id,
                    "reason": err.reason,
                    "detail": err.detail,
                }
            )
            continue
        out.local_rows.append(raw.index - shard.row_start)
        out.conversations.append(conv)
        out.encoded.append(enc)
    return out


TOKEN_SAMPLE_SHARDS = 32
TOKEN_SAMPLE_ROWS_PER_SHARD = 8


def estimate_tokens_per_row(manifest: Manifest, split: str, spec: SourceSpec, encoder, seed: int) -> float:
    """Mean templated tokens (after truncation) of the usable rows in a seeded sample: a few rows from each
    of up to TOKEN_SAMPLE_SHARDS shards, so a huge split costs a few dozen small reads. With no usable
    row sampled, max_length (the pre-flight check then reports the split)."""
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(manifest.n_shards, size=min(manifest.n_shards, TOKEN_SAMPLE_SHARDS), replace=False))
    tokens: list[int] = []
    for shard_id in picked.tolist():
        n = int(manifest.shard_n_rows[shard_id])
        only = set(rng.choice(n, size=min(n, TOKEN_SAMPLE_ROWS_PER_SHARD), replace=False).tolist())
        tokens += [e.n_tokens for e in read_shard(split, manifest.shards[shard_id], spec, encoder, only).encoded]
    return float(np.mean(tokens)) if tokens else float(encoder.max_length)
