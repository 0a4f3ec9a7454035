"""data.text_windows = "all": cut each document of a split into its windows, once per run.

A document longer than max_length becomes several rows, so the windows cannot be found from the
inputs' row counts alone: they are cut once, one Parquet file per document shard, and the
split's manifest is then frozen over those files like any input. Each window row holds its id
(`<doc id>#<k>`), its token ids (so it is never tokenised again, and a window's tokens are
exactly the document's), its text (what the selection output shows), where it came from
(source file, row, window k) and the document's domain / subtask labels. A document that
cannot be used becomes one row holding its error, quarantined when the split is read, so it
is counted like any bad row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from iprox_ray.corpus.manifest import Shard
from iprox_ray.corpus.rows import RowError
from iprox_ray.corpus.sources import InputFile, read_rows
from iprox_ray.corpus.text import TextEncoder, window_bounds, window_id
from iprox_ray.spec import SourceSpec

WINDOW_SCHEMA = pa.schema([
    ("id", pa.string()), ("text", pa.string()), ("input_ids", pa.list_(pa.int32())),
    ("source_file", pa.string()), ("source_row", pa.int64()), ("window", pa.int32()),
    ("domain", pa.string()), ("subtask", pa.string()), ("error", pa.string()),
])
WINDOW_FILES = "[0-9]*.parquet"  # beside them: the documents' manifest


def windows_source(source: SourceSpec, folder: Path) -> SourceSpec:
    """How the split reads its window files."""
    return source.model_copy(update={
        "paths": [str(folder / WINDOW_FILES)], "format": "parquet", "text_column": "text", "id_column": "id",
        "domain_column": "domain" if source.domain_column else None,
        "subtask_column": "subtask" if source.subtask_column else None,
        "messages_column": "messages", "system_column": None})


def _window_text(text: str, offsets: np.ndarray, n_bos: int, start: int, stop: int) -> str:
    first, last = max(start, n_bos) - n_bos, stop - 1 - n_bos
    return text[offsets[first][0]: offsets[last][1]] if last >= first else ""


def cut_shard(shard: Shard, source: SourceSpec, encoder: TextEncoder) -> pa.Table:
    """The window rows of one document shard."""
    out = {name: [] for name in WINDOW_SCHEMA.names}

    def add(sample_id, text, ids, row, k, domain="", subtask="", error=None):
        for name, value in zip(WINDOW_SCHEMA.names, (sample_id, text, ids, shard.file, row, k, domain, subtask, error)):
            out[name].append(value)

    items = []  # (file row, document or the reason it cannot be used), in file order
    for raw in read_rows(InputFile(Path(shard.file), shard.format), shard.row_start, shard.row_stop, shard.byte_start):
        try:
            if raw.error:
                reason, _, detail = raw.error.partition(": ")
                raise RowError(reason, detail)
            items.append((raw.index, encoder.parse(raw.values, source)))
        except RowError as err:
            items.append((raw.index, f"{err.reason}: {err.detail}"))
    texts = [doc.text for _, doc in items if not isinstance(doc, str)]
    encoded = encoder.tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True) if texts else None
    tokenized = iter(zip(encoded["input_ids"], encoded["offset_mapping"]) if texts else ())
    n_bos = len(encoder.bos)
    for row, doc in items:
        if isinstance(doc, str):
            add("", "", [], row, 0, error=doc)
            continue
        ids, offsets = next(tokenized)
        ids = encoder.bos + list(ids)
        if len(ids) <= n_bos:
            add(doc.sample_id, "", [], row, 0, doc.domain, doc.subtask, "empty-text: the text has no token")
            continue
        for k, (start, stop) in enumerate(window_bounds(len(ids), encoder.max_length)):
            add(window_id(doc.sample_id, k), _window_text(doc.text, offsets, n_bos, start, stop), ids[start:stop],
                row, k, doc.domain, doc.subtask)
    return pa.table(out, schema=WINDOW_SCHEMA)
