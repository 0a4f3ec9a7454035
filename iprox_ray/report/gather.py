"""Everything one report shows, gathered from a run directory in bounded memory."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from iprox_ray.corpus.manifest import Manifest
from iprox_ray.report.rows import Quarantine, load_manifest, locate, pool_source_spec, read_quarantine, row_texts
from iprox_ray.report.run_files import RunFiles
from iprox_ray.report.stats import PoolStats, SelectionStats, pool_stats, read_selection, split_status
from iprox_ray.store.layout import POOL, target_split
from iprox_ray.store.sketch_store import SplitStore, StoreMismatchError

EXAMPLES = 10  # rows per table: top, bottom and just below the cut


@dataclass
class ExampleRow:
    store_row: int
    sample_id: str
    domain: str
    score: float
    rank: int | None
    source_file: str
    source_row: int
    text: list[tuple[str, str]] | None = None  # (role, text) of the first characters
    note: str = ""


@dataclass
class TargetView:
    name: str
    selection: SelectionStats | None = None
    top: list[ExampleRow] = field(default_factory=list)
    bottom: list[ExampleRow] = field(default_factory=list)
    below: list[ExampleRow] = field(default_factory=list)


@dataclass
class ReportData:
    run: RunFiles
    quarantine: Quarantine
    pool: PoolStats | None
    split_status: dict[str, np.ndarray]
    targets: dict[str, TargetView]
    rows_read: dict[str, int]  # split -> rows in its frozen manifest


def _from_selection(record: dict) -> ExampleRow:
    return ExampleRow(int(record["store_row"]), str(record["sample_id"]), str(record["domain"] or ""),
                      float(record["score"]), int(record["rank"]), str(record["source_file"]),
                      int(record["source_row"]))


def _below_rows(pool: SplitStore, manifest: Manifest | None, rows: np.ndarray, scores: np.ndarray,
                first_rank: int | None) -> list[ExampleRow]:
    """Rows just below the cut, described from the store and the manifest."""
    if not len(rows):
        return []
    order = np.argsort(rows)  # gather reads each touched shard once; keep the score order for the table
    ids = np.empty(len(rows), dtype=object)
    domains = np.empty(len(rows), dtype=object)
    ids[order] = pool.gather("sample_id", rows[order])
    domains[order] = pool.gather("domain", rows[order])
    where = locate(manifest, rows) if manifest is not None else [("", -1)] * len(rows)
    return [ExampleRow(int(r), str(i), str(d), float(s), None if first_rank is None else first_rank + n, f, fr)
            for n, (r, i, d, s, (f, fr)) in enumerate(zip(rows.tolist(), ids, domains, scores.tolist(), where))]


def _add_texts(views: dict[str, TargetView], manifest: Manifest | None, config: dict) -> None:
    examples = [row for v in views.values() for row in (*v.top, *v.bottom, *v.below)]
    if manifest is None:
        for row in examples:
            row.note = "the pool's manifest is missing"
        return
    texts = row_texts(manifest, pool_source_spec(config), [row.store_row for row in examples])
    for row in examples:
        row.text, row.note = texts.get(row.store_row, (None, "not read"))


def gather(run: RunFiles, n_examples: int = EXAMPLES, read_rows: int | None = None) -> ReportData:
    quarantine = read_quarantine(run.layout)
    statuses: dict[str, np.ndarray] = {}
    pool = run.pool()
    views = {t.name: TargetView(t.name) for t in run.targets}
    if pool is not None:
        for t in run.targets:
            if t.selection is not None:
                views[t.name].selection = read_selection(t.selection, pool.n_rows, n_examples)
    stats = None
    if pool is not None:
        bitmaps = {name: v.selection.bitmap for name, v in views.items() if v.selection is not None}
        stats = pool_stats(run.root, pool, {t.name: t.scores for t in run.targets if t.scores}, bitmaps,
                           n_examples, read_rows)
        statuses[POOL] = stats.status
    for t in run.targets:
        try:
            statuses[t.split] = split_status(SplitStore.open(run.layout.store, target_split(t.name), mode="r"),
                                             read_rows)
        except (StoreMismatchError, KeyError):
            pass
    manifest = load_manifest(run.layout, POOL)
    rows_read = {split: m.n_rows for split in [POOL, *(t.split for t in run.targets)]
                 if (m := manifest if split == POOL else load_manifest(run.layout, split)) is not None}
    for t in run.targets:
        view = views[t.name]
        if view.selection is not None:
            view.top = [_from_selection(r) for r in view.selection.first]
            # the bottom rows, unless they are the top ones again (a selection of at most 2N rows shows all)
            bottom = [r for r in view.selection.last if r["rank"] > len(view.selection.first)]
            view.bottom = [_from_selection(r) for r in bottom]
        score = stats.targets.get(t.name) if stats is not None else None
        if score is not None and pool is not None and view.selection is not None:
            ranked = (t.select_info or {}).get("strategy", "topk") != "round-robin"
            view.below = _below_rows(pool, manifest, score.below_rows, score.below_scores,
                                     view.selection.rows + 1 if ranked else None)
    _add_texts(views, manifest, run.config)
    return ReportData(run, quarantine, stats, statuses, views, rows_read)
