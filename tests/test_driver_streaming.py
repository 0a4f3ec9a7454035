"""Driver stages whose memory is flat in the pool size, against plain in-memory references:
per-domain counts of the report, mid-PPL's band of quantiles, round-robin candidate lists."""

import numpy as np
import pytest

from iprox_ray.stages import batched_reads
from iprox_ray.stages.report import domain_shares, domain_shares_from_counts, pool_domain_counts, rows_with_status
from iprox_ray.store.sketch_store import CANDIDATES, EMPTY, NONFINITE, NOT_SKETCHED, OK, QUARANTINED, SplitStore


def _pool(tmp_path, n_shards=11, S=16, seed=0):
    store = SplitStore.create(tmp_path / "store.zarr", "pool", n_shards, S, 1, {})
    rng = np.random.default_rng(seed)
    n = n_shards * S
    store.group["domain"][:] = rng.choice(["math", "code", "", "chat", "(none)"], n)
    store.group["written"][:] = rng.choice([OK, OK, NONFINITE, NOT_SKETCHED, QUARANTINED, EMPTY], n).astype(np.uint8)
    return store


def test_pool_domain_counts_equal_the_in_memory_shares(tmp_path, monkeypatch):
    pool = _pool(tmp_path)
    monkeypatch.setattr(batched_reads, "READ_ROWS", 48)  # several batches of three whole shards
    written, domains = pool.read("written"), pool.read("domain")
    ok = np.isin(written, CANDIDATES)
    counts = pool_domain_counts(pool)
    assert counts["(none)"] == int((ok & np.isin(domains, ["", "(none)"])).sum())
    assert sum(counts.values()) == int(ok.sum())
    assert domain_shares_from_counts(counts) == domain_shares(domains[ok].tolist())
    assert rows_with_status(pool, NONFINITE) == int((written == NONFINITE).sum())


def _loss_pool(tmp_path, seed, n_shards=16, S=256):
    store = SplitStore.create(tmp_path / f"loss{seed}.zarr", "pool", n_shards, S, 1, {})
    rng = np.random.default_rng(seed)
    n = n_shards * S
    loss = np.round(rng.gamma(4.0, 0.5, n), 2).astype(np.float32)  # heavy ties
    loss[rng.random(n) < 0.05] = np.nan
    loss[rng.random(n) < 0.01] = np.inf
    loss[rng.random(n) < 0.02] = -0.0
    loss[rng.random(n) < 0.02] = 0.0
    store.group["loss"][:] = loss
    store.group["written"][:] = rng.choice([OK, OK, OK, OK, NOT_SKETCHED, QUARANTINED, EMPTY], n).astype(np.uint8)
    return store


def _mid_ppl_reference(pool, center):
    """The straightforward exact computation: every valid loss ranked in memory."""
    loss, written = pool.read("loss"), pool.read("written")
    rows = np.flatnonzero((written == OK) & np.isfinite(loss))
    order = np.lexsort((rows, loss[rows]))
    quantile = np.empty(len(rows))
    quantile[order] = np.arange(len(rows)) / max(1, len(rows) - 1)
    by_row = np.full(pool.n_rows, np.nan, np.float32)
    by_row[rows] = -np.abs(quantile - center)
    return by_row, float(np.median(loss[rows]))


def _scores(scorer):
    return np.concatenate([scorer.block(s)[:, 0] for s in range(scorer.pool.n_shards)])


@pytest.mark.parametrize("seed,center", [(0, 0.5), (1, 0.2), (2, 0.93), (3, 0.5)])
def test_mid_ppl_band_selection_equals_exact_ranks(tmp_path, monkeypatch, seed, center):
    from iprox_ray.influence.topk import topk_stream
    from iprox_ray.stages.mid_ppl import MidPplScorer

    monkeypatch.setattr(batched_reads, "READ_ROWS", 1024)
    pool = _loss_pool(tmp_path, seed)
    ref, median = _mid_ppl_reference(pool, center)
    exact = MidPplScorer.build(pool, center)  # keep=None: every row exact
    np.testing.assert_array_equal(_scores(exact), ref)
    assert exact.info["median_loss"] == median and exact.info["rows_with_loss"] == int(np.isfinite(ref).sum())
    for k in (1, 7, 60, 400):
        band = MidPplScorer.build(pool, center, keep=k)
        got = _scores(band)
        assert band.info["median_loss"] == median
        assert band.info["exact_band_rows"] < len(ref) / 2  # only a band is ranked exactly
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
        # Outside the band: the quantile of the coarse bin's middle, off by at most half a bin.
        half_bin = band.counts.max() / 2 / (band.n_valid - 1)
        np.testing.assert_allclose(got, ref, rtol=0, atol=half_bin + 1e-6)
        np.testing.assert_array_equal(got[band.band_rows], ref[band.band_rows])
        for want in (k, k + 1):
            rows, values, _ = topk_stream([(0, got)], want)
            ref_rows, ref_values, _ = topk_stream([(0, ref)], want)
            assert rows.tolist() == ref_rows.tolist() and values.tolist() == ref_values.tolist()
