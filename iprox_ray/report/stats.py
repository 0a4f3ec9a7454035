"""The report's statistics, streamed: memory is one batch of whole shards plus one bit per pool row
per target, never the pool's score array or its labels.

Per target: a score histogram per domain (pass 1 finds the range, pass 2 bins), the selected
rows' histogram, the non-finite count, and the best rows just below the cut (the N highest-scoring
valid rows that were not selected, higher score then lower row first: topk's own order). Per
pool: row status counts and candidate rows per domain. Per selection (streamed from its Parquet):
the first and last N rows, rows per domain, and a bitmap of its store rows (for the rows below the
cut and for the overlap between targets).
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from iprox_ray.store.batched_reads import shard_batches
from iprox_ray.store.digest import read_span
from iprox_ray.store.sketch_store import CANDIDATES, SplitStore

BINS = 60
MAX_DOMAINS = 24  # labels seen after this many share one "(other)" bucket
OTHER = "(other)"
SELECTION_BATCH = 1 << 16
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def domain_label(value) -> str:
    return str(value) or "(none)"


class RowBitmap:
    """One bit per pool row."""

    def __init__(self, n_rows: int):
        self.bits = np.zeros((n_rows + 7) // 8, dtype=np.uint8)

    def add(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.int64)
        np.bitwise_or.at(self.bits, rows >> 3, (1 << (rows & 7)).astype(np.uint8))

    def has(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        return ((self.bits[rows >> 3] >> (rows & 7).astype(np.uint8)) & 1).astype(bool)

    def overlap(self, other: "RowBitmap") -> int:
        return int(_POPCOUNT[self.bits & other.bits].sum(dtype=np.int64))


@dataclass
class SelectionStats:
    rows: int = 0
    first: list[dict] = field(default_factory=list)
    last: list[dict] = field(default_factory=list)
    domains: Counter = field(default_factory=Counter)
    bitmap: RowBitmap | None = None


def read_selection(path: Path, n_pool_rows: int, n_examples: int) -> SelectionStats:
    """Stream a selection.parquet (rank order) a batch at a time."""
    out = SelectionStats(bitmap=RowBitmap(n_pool_rows))
    tail: deque = deque(maxlen=n_examples)
    for batch in pq.ParquetFile(path).iter_batches(batch_size=SELECTION_BATCH):
        rows = batch.column("store_row").to_numpy(zero_copy_only=False)
        out.bitmap.add(rows[(rows >= 0) & (rows < n_pool_rows)])
        counts = pc.value_counts(batch.column("domain")).to_pylist()
        for item in counts:
            out.domains[domain_label(item["values"] or "")] += item["counts"]
        if len(out.first) < n_examples:
            out.first += batch.slice(0, n_examples - len(out.first)).to_pylist()
        tail.extend(batch.slice(max(0, batch.num_rows - n_examples)).to_pylist())
        out.rows += batch.num_rows
    out.last = list(tail)
    return out


@dataclass
class ScoreStats:
    """One target's score array, over the pool's candidate rows."""

    edges: np.ndarray | None = None
    by_domain: np.ndarray | None = None  # [domains, BINS]
    selected: np.ndarray | None = None   # [BINS]: rows in the selection bitmap
    finite: int = 0
    non_finite: int = 0
    below_rows: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    below_scores: np.ndarray = field(default_factory=lambda: np.empty(0, np.float64))


@dataclass
class PoolStats:
    status: np.ndarray = field(default_factory=lambda: np.zeros(8, np.int64))  # rows per `written` code
    domains: list[str] = field(default_factory=list)  # index -> label
    domain_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # candidates per domain
    targets: dict[str, ScoreStats] = field(default_factory=dict)

    def domain_index(self, labels: np.ndarray) -> np.ndarray:
        """Global domain indices of a batch's distinct labels (new ones appended, capped)."""
        out = np.empty(len(labels), dtype=np.int64)
        for i, label in enumerate(labels.tolist()):
            name = domain_label(label)
            if name not in self.domains:
                if len(self.domains) >= MAX_DOMAINS:
                    name = OTHER
                if name not in self.domains:
                    self.domains.append(name)
            out[i] = self.domains.index(name)
        if len(self.domains) > len(self.domain_rows):
            grow = len(self.domains) - len(self.domain_rows)
            self.domain_rows = np.concatenate([self.domain_rows, np.zeros(grow, np.int64)])
            for t in self.targets.values():
                if t.by_domain is not None:
                    t.by_domain = np.vstack([t.by_domain, np.zeros((grow, BINS), np.int64)])
        return out


def factorize(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct labels, index of each value's label), by hashing (Arrow's dictionary encoding):
    np.unique sorts the strings, about 10x slower on a batch of labels."""
    try:
        encoded = pa.array(values, type=pa.string()).dictionary_encode()
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # a numpy string dtype this pyarrow cannot read directly
        encoded = pa.array(values.astype(object), type=pa.string()).dictionary_encode()
    return (np.asarray(encoded.dictionary.to_pylist(), dtype=object),
            encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64))


def _score_range(root, name: str, pool: SplitStore, read_rows: int | None) -> tuple[float, float] | None:
    lo, hi = np.inf, -np.inf
    for span in shard_batches(pool, read_rows):
        v = read_span(root, name, span)
        v = v[np.isfinite(v)]
        if v.size:
            lo, hi = min(lo, float(v.min())), max(hi, float(v.max()))
    return (lo, hi) if np.isfinite(lo) else None


def _keep_best(rows: np.ndarray, scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The n best (higher score, then lower row), best first."""
    if len(rows) > n:
        part = np.argpartition(-scores, n - 1)[:n]
        cut = scores[part].min()  # keep every tie at the boundary, then order exactly
        keep = np.flatnonzero(scores >= cut)
        rows, scores = rows[keep], scores[keep]
    order = np.lexsort((rows, -scores))[:n]
    return rows[order], scores[order]


def pool_stats(root, pool: SplitStore, scores: dict[str, str], selected: dict[str, RowBitmap], n_below: int,
               read_rows: int | None = None) -> PoolStats:
    """Two streamed passes over the pool: score ranges, then everything else."""
    out = PoolStats()
    for target, name in scores.items():
        rng = _score_range(root, name, pool, read_rows)
        stats = ScoreStats()
        if rng is not None:
            lo, hi = rng
            stats.edges = np.linspace(lo, hi if hi > lo else lo + 1e-6, BINS + 1)
            stats.by_domain = np.zeros((0, BINS), np.int64)
            stats.selected = np.zeros(BINS, np.int64)
        out.targets[target] = stats
    for span in shard_batches(pool, read_rows):
        written = read_span(pool.group, "written", span)
        out.status += np.bincount(written, minlength=len(out.status))[: len(out.status)]
        cand = np.flatnonzero(np.isin(written, CANDIDATES))
        if not len(cand):
            continue
        labels, inverse = factorize(read_span(pool.group, "domain", span)[cand])
        domain = out.domain_index(labels)[inverse]
        out.domain_rows += np.bincount(domain, minlength=len(out.domains))
        rows = span.start + cand
        for target, name in scores.items():
            _add_scores(out.targets[target], read_span(root, name, span)[cand].astype(np.float64), rows, domain,
                        selected.get(target), n_below, len(out.domains))
    return out


def _add_scores(stats: ScoreStats, v: np.ndarray, rows: np.ndarray, domain: np.ndarray, bitmap: RowBitmap | None,
                n_below: int, n_domains: int) -> None:
    ok = np.isfinite(v)
    stats.non_finite += int((~ok).sum())
    stats.finite += int(ok.sum())
    if stats.edges is None or not ok.any():
        return
    v, rows, domain = v[ok], rows[ok], domain[ok]
    lo, hi = stats.edges[0], stats.edges[-1]
    b = np.clip(((v - lo) / (hi - lo) * BINS).astype(np.int64), 0, BINS - 1)
    stats.by_domain += np.bincount(domain * BINS + b, minlength=n_domains * BINS).reshape(n_domains, BINS)
    chosen = bitmap.has(rows) if bitmap is not None else np.zeros(len(rows), bool)
    stats.selected += np.bincount(b[chosen], minlength=BINS)
    if n_below and bitmap is not None:
        rest = ~chosen
        stats.below_rows, stats.below_scores = _keep_best(np.concatenate([stats.below_rows, rows[rest]]),
                                                          np.concatenate([stats.below_scores, v[rest]]), n_below)


def split_status(store: SplitStore, read_rows: int | None = None) -> np.ndarray:
    """Rows per `written` code of a split (a target set), streamed."""
    counts = np.zeros(8, np.int64)
    for span in shard_batches(store, read_rows):
        counts += np.bincount(read_span(store.group, "written", span), minlength=8)[:8]
    return counts
