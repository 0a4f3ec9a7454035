"""How many rows a corpus shard holds when `rows_per_shard = "auto"`.

A shard is the unit of work and of storage: every split array has one file per shard (see
storage_schema/README.md, "How many files"). Auto sizing aims each shard at TARGET_SHARD_TOKENS
templated tokens (so shards cost about the same whatever the row length), then clamps so a split
never has more than MAX_SHARDS shards (file counts stay sane at 1e8+ rows) nor fewer than
MIN_ROWS rows per shard. The result is a multiple of GRANULARITY, which lets the JSONL scan keep
only every GRANULARITY-th row offset before the final size is known.
"""

from __future__ import annotations

import math

AUTO = "auto"
GRANULARITY = 64  # auto sizes are multiples of this; the offset scan's stride while sizing
MIN_ROWS = GRANULARITY
MAX_ROWS_BY_TOKENS = 16384  # short rows: keep a shard's sketch block (S x D fp16) modest
TARGET_SHARD_TOKENS = 1 << 20
MAX_SHARDS = 20_000  # per split; wins over the token target when the two disagree
MAX_ROWS_PER_SHARD = 1 << 20  # the spec's upper bound for an explicit rows_per_shard


def auto_rows_per_shard(n_rows: int, tokens_per_row: float, largest_file: int | None = None,
                        target_tokens: int = TARGET_SHARD_TOKENS, max_shards: int = MAX_SHARDS) -> int:
    """Rows per shard for a split of n_rows rows averaging tokens_per_row templated tokens, whose
    largest input file holds largest_file rows (shards never span files: more would be padding)."""
    if n_rows < 1:
        raise ValueError("a split needs at least one row to size its shards")
    by_tokens = min(MAX_ROWS_BY_TOKENS, math.ceil(target_tokens / max(float(tokens_per_row), 1.0)))
    by_files = math.ceil(n_rows / max_shards)
    rows = min(max(MIN_ROWS, by_tokens, by_files), largest_file or n_rows)  # small files: one shard each
    rows = -(-rows // GRANULARITY) * GRANULARITY
    return min(rows, MAX_ROWS_PER_SHARD)
