"""Rows the report shows: quarantine records (counted by reason, a few examples each) and the text
of example pool rows, read from the inputs the frozen manifest names.

Both stream: quarantine files a batch at a time; example rows one touched shard at a time.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from iprox_ray.corpus.manifest import Manifest
from iprox_ray.corpus.shard_reader import read_shard
from iprox_ray.corpus.sources import CorpusError
from iprox_ray.spec import SourceSpec
from iprox_ray.store.layout import RunLayout

TEXT_CHARS = 360  # characters of a conversation the report shows
EXAMPLES_PER_REASON = 3
QUARANTINE_COLUMNS = ["split", "reason", "sample_id", "file", "row", "detail"]


@dataclass
class Quarantine:
    counts: Counter  # (split, reason) -> rows
    examples: dict  # (split, reason) -> a few records

    def total(self, split: str) -> int:
        return sum(n for (s, _), n in self.counts.items() if s == split)


def read_quarantine(layout: RunLayout, per_reason: int = EXAMPLES_PER_REASON) -> Quarantine:
    """Every per-shard quarantine file and duplicates file (what merge_quarantine joins into
    quarantine.parquet), counted by (split, reason)."""
    counts: Counter = Counter()
    examples: dict = {}
    folder = layout.quarantine_root
    for path in sorted(folder.rglob("*.parquet")) if folder.exists() else []:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1 << 16, columns=QUARANTINE_COLUMNS):
            keys = list(zip(batch.column("split").to_pylist(), batch.column("reason").to_pylist()))
            counts.update(keys)
            for i, key in enumerate(keys):
                kept = examples.setdefault(key, [])
                if len(kept) < per_reason:
                    kept.append({c: batch.column(c)[i].as_py() for c in QUARANTINE_COLUMNS})
    return Quarantine(counts, examples)


def excerpt(messages: list[dict], limit: int = TEXT_CHARS) -> list[tuple[str, str]]:
    """(role, text) of the conversation's first `limit` characters of message text, "…" where cut."""
    out, left = [], limit
    for m in messages:
        if left <= 0:
            break
        text = m["content"]
        out.append((m["role"], text if len(text) <= left else text[: max(0, left - 1)] + "…"))
        left -= len(text)
    return out


def _changed(manifest: Manifest, file: str) -> str | None:
    """Why the text of `file` cannot be trusted to be the row that was scored, if it cannot."""
    info = next((f for f in manifest.files if f.file == file), None)
    try:
        st = os.stat(file)
    except OSError:
        return f"input {file} is no longer there"
    if info is not None and os.path.isfile(file) and (st.st_size != info.size or st.st_mtime_ns != info.mtime_ns):
        return f"input {file} changed since the run read it"
    return None


def row_texts(manifest: Manifest, spec: SourceSpec | None, store_rows: list[int],
              limit: int = TEXT_CHARS) -> dict[int, tuple[list | None, str]]:
    """store row -> (its conversation's first `limit` characters as (role, text), or None; a note
    when None),
    reading each touched shard once."""
    out: dict[int, tuple[list | None, str]] = {}
    if spec is None:
        return {r: (None, "the job's pool settings could not be read") for r in store_rows}
    S = manifest.rows_per_shard
    by_shard: dict[int, set[int]] = {}
    for row in sorted(set(store_rows)):
        by_shard.setdefault(row // S, set()).add(row % S)
    for shard_id, local in by_shard.items():
        if shard_id >= manifest.n_shards:
            out.update({shard_id * S + r: (None, "row outside the manifest") for r in local})
            continue
        shard = manifest.shards[shard_id]
        why = _changed(manifest, shard.file)
        if why is None:
            try:
                rows = read_shard("pool", shard, spec, None, only=local)
            except (CorpusError, OSError) as exc:
                why = f"input {shard.file} cannot be read: {exc}"
        if why is not None:
            out.update({shard_id * S + r: (None, why) for r in local})
            continue
        for r, conv in zip(rows.local_rows, rows.conversations):
            out[shard_id * S + r] = (excerpt(conv.messages, limit), "")
        for r in local - set(rows.local_rows):
            out[shard_id * S + r] = (None, "the row no longer parses")
    return out


def locate(manifest: Manifest, rows: np.ndarray) -> list[tuple[str, int]]:
    """(source file, row in that file) of store rows."""
    files, local = manifest.locate(rows)
    return [(manifest.files[f].file, int(r)) for f, r in zip(files.tolist(), local.tolist())]


def load_manifest(layout: RunLayout, split: str) -> Manifest | None:
    if not (layout.manifest(split).exists() and layout.manifest_info(split).exists()):
        return None
    return Manifest.load(layout.manifest(split), layout.manifest_info(split))


def pool_source_spec(config: dict) -> SourceSpec | None:
    try:
        return SourceSpec.model_validate(config["spec"]["data"]["pool"])
    except (KeyError, ValueError):
        return None


def short_path(path: str | Path) -> str:
    return Path(path).name
