"""Mid-perplexity: keep the pool rows whose loss sits in the middle band. The losses come from the
sketch pass; the target is not used. The scorer is memory-bounded.

The score of a row is −|q − centre|, q = rank / (n − 1) of its loss among the n finite losses of
OK rows (ascending loss, ties by lower row). A selection of k rows only ever takes rows whose rank
is within about k/2 of centre·(n − 1), so only a band around it needs exact ranks:
1. pass 1: a histogram of the losses' order-preserving float32 keys in 2^20 coarse bins (and n);
2. pass 2: (key, row) of the rows in the coarse bins that overlap the band (and the median's
   ranks), sorted: exact ranks there from the bin's count below plus the position in the bin.
Every other row gets the quantile of its coarse bin's midpoint; its bin lies wholly outside the
band, so its score stays below every score a selection of k rows can reach. Memory: two 8 MiB
histograms plus ~12 bytes per row of the band's bins, whatever the pool size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from iprox_ray.methods.base import Needs, ScoringMethod, TargetInputs
from iprox_ray.methods.scorers import Scorer, count_valid
from iprox_ray.store.batched_reads import shard_batches
from iprox_ray.store.digest import read_span
from iprox_ray.store.sketch_store import OK, SplitStore

COARSE_SHIFT = 12  # coarse bin = key >> 12: 2^20 bins, ~2^-11 relative loss resolution
N_COARSE = 1 << (32 - COARSE_SHIFT)
BAND_MARGIN = 2  # rows beyond k on each side (the weights strategy ranks k + 1 rows)


def loss_keys(loss: np.ndarray) -> np.ndarray:
    """uint32 keys whose order is the order of the float32 losses (−0.0 and 0.0 equal)."""
    bits = (loss.astype(np.float32) + np.float32(0.0)).view(np.uint32)
    return np.where(bits >> 31, ~bits, bits | np.uint32(1 << 31)).astype(np.uint32)


def _valid(pool: SplitStore, span: slice) -> tuple[np.ndarray, np.ndarray]:
    """(local rows, losses) of the OK rows with a finite loss in the span."""
    loss = read_span(pool.group, "loss", span)
    ok = np.flatnonzero((read_span(pool.group, "written", span) == OK) & np.isfinite(loss))
    return ok, loss[ok]


@dataclass
class MidPplScorer(Scorer):
    """Keeps the middle band of pool perplexities: score = −|quantile of the row's loss − centre|."""

    center: float = 0.5
    n_valid: int = 0
    below: np.ndarray | None = None  # [N_COARSE] valid rows in lower coarse bins
    counts: np.ndarray | None = None  # [N_COARSE] valid rows per coarse bin
    band_rows: np.ndarray | None = None  # sorted store rows holding exact scores
    band_scores: np.ndarray | None = None  # float32, aligned with band_rows

    @classmethod
    def build(cls, pool: SplitStore, center: float, keep: int | None = None) -> "MidPplScorer":
        """`keep`: the most rows a selection will take (k, or k + 1 for weights); None: exact ranks
        for every row (memory ~12 bytes per pool row; tests and small pools)."""
        counts = np.zeros(N_COARSE, np.int64)
        for span in shard_batches(pool):  # pass 1
            _, loss = _valid(pool, span)
            counts += np.bincount(loss_keys(loss) >> COARSE_SHIFT, minlength=N_COARSE)
        n = int(counts.sum())
        below = np.cumsum(counts) - counts
        last = max(1, n - 1)
        half = n if keep is None else keep + BAND_MARGIN
        lo, hi = int(np.floor(center * last - half)), int(np.ceil(center * last + half))
        mid = ((n - 1) // 2, n // 2)
        top = below + counts - 1  # the last rank in each bin
        wanted = (counts > 0) & (((below <= hi) & (top >= lo)) | ((below <= mid[1]) & (top >= mid[0])))
        keys, rows = [], []
        for span in shard_batches(pool):  # pass 2
            local, loss = _valid(pool, span)
            key = loss_keys(loss)
            mine = wanted[key >> COARSE_SHIFT]
            keys.append(key[mine])
            rows.append(span.start + local[mine])
        key_all = np.concatenate(keys) if keys else np.empty(0, np.uint32)
        row_all = np.concatenate(rows) if rows else np.empty(0, np.int64)
        order = np.lexsort((row_all, key_all))
        key_all, row_all = key_all[order], row_all[order]
        bins = (key_all >> COARSE_SHIFT).astype(np.int64)
        first_in_bin = np.searchsorted(bins, bins, side="left")
        rank = below[bins] + np.arange(len(bins)) - first_in_bin
        quantile = rank / last
        scores = (-np.abs(quantile - center)).astype(np.float32)
        by_row = np.argsort(row_all, kind="stable")
        median = None
        if n:
            at = np.searchsorted(rank, mid)  # ranks are increasing within the collected rows
            median = float(np.median(key_values(key_all[at])))
        info = {"median_loss": median, "rows_with_loss": n, "exact_band_rows": int(len(row_all))}
        return cls(pool, 1, info, center, n, below, counts, row_all[by_row], scores[by_row])

    def block(self, shard_id: int) -> np.ndarray:
        span = self.pool.shard_rows(shard_id)
        out = self._empty()
        local, loss = _valid(self.pool, span)
        if len(local):
            b = loss_keys(loss) >> COARSE_SHIFT
            approx = (self.below[b] + (self.counts[b] - 1) / 2) / max(1, self.n_valid - 1)
            out[local, 0] = -np.abs(approx - self.center)
        lo, hi = np.searchsorted(self.band_rows, [span.start, span.stop])
        out[self.band_rows[lo:hi] - span.start, 0] = self.band_scores[lo:hi]
        return out


def key_values(keys: np.ndarray) -> np.ndarray:
    """The float32 losses of loss_keys' keys."""
    keys = np.asarray(keys, np.uint32)
    bits = np.where(keys >> 31, keys & np.uint32(0x7FFFFFFF), ~keys).astype(np.uint32)
    return bits.view(np.float32)


class MidPpl(ScoringMethod):
    name = "mid-ppl"
    needs = Needs(pool_sketch="all", target_sketch=False, losses=True)
    single_score = True

    def build_scorer(self, inputs: TargetInputs) -> Scorer:
        spec, selection = inputs.ctx.job.scoring, inputs.ctx.job.selection
        k = selection.size_for(count_valid(inputs.pool))  # exact ranks only where a selection of k can reach
        return MidPplScorer.build(inputs.pool, spec.mid_ppl_center,
                                  keep=k + 1 if selection.strategy == "weights" else k)
