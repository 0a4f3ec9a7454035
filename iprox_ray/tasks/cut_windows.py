"""Stage: cut a text split's documents into window rows (data.text_windows = "all"), once per run.

The documents get a manifest of their own (frozen and checked on every resume like any input
manifest); each document shard's windows go to one Parquet file, written atomically and
skipped when present, so an interrupted pass resumes. The split's manifest is then frozen over
the window files (tasks/inputs.py). Runs on the driver: tokenising is a small fraction of
sketching the same tokens.
"""

from __future__ import annotations

from typing import Callable

from iprox_ray.corpus.manifest import freeze_manifest
from iprox_ray.corpus.text import TextEncoder
from iprox_ray.corpus.windows import cut_shard
from iprox_ray.execution.context import RunContext
from iprox_ray.spec import SourceSpec
from iprox_ray.store.atomic import atomic_write_parquet
from iprox_ray.store.layout import shard_file, windows_stage

DOCUMENT_SHARD_ROWS = 1024  # documents per window file when the split's shards are sized "auto"


def cut_windows(ctx: RunContext, split: str, source: SourceSpec, documents_encoder: Callable[[], TextEncoder]) -> None:
    """Cut the documents of `source` (read with documents_encoder()) once; a resume checks them."""
    stage = windows_stage(split)
    folder = ctx.layout.windows_dir(split)
    table, info = ctx.layout.window_documents(split)
    per_shard = source.rows_per_shard if isinstance(source.rows_per_shard, int) else DOCUMENT_SHARD_ROWS
    documents = freeze_manifest(source.paths, source.format, ctx.job.base_dir, per_shard, table, info,
                                source.model_dump(mode="json"))
    if ctx.stage_done(stage):
        return
    encoder = documents_encoder()
    windows = 0
    for shard in documents.shards:
        path = shard_file(folder, shard.shard_id)
        if not path.exists():
            atomic_write_parquet(path, cut_shard(shard, source, encoder))
        windows += _rows(path)
    ctx.say(f"{split}: {documents.n_rows} document(s) cut into {windows} window row(s) of at most "
            f"{encoder.max_length} tokens")
    ctx.mark_stage_done(stage, {"documents": documents.n_rows, "windows": windows}, outputs=(folder,))


def _rows(path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows
