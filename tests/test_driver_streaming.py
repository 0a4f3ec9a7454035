"""Driver stages whose memory is flat in the pool size, against plain in-memory references:
per-domain counts of the report, mid-PPL's band of quantiles, round-robin candidate lists."""

import numpy as np
import pytest

from iprox_ray.stages.report import domain_shares, domain_shares_from_counts, pool_domain_counts
from iprox_ray.store import batched_reads
from iprox_ray.store.batched_reads import rows_with_status
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
    from iprox_ray.methods.mid_ppl import MidPplScorer

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


@pytest.mark.parametrize("seed", range(4))
def test_column_topk_equals_per_column_streaming_topk(seed):
    from iprox_ray.influence.column_topk import ColumnTopK
    from iprox_ray.influence.topk import topk_stream

    rng = np.random.default_rng(seed)
    n, C = int(rng.integers(50, 700)), int(rng.integers(1, 9))
    scores = rng.integers(-3, 4, (n, C)).astype(np.float32) / 2  # heavy ties
    scores[rng.random((n, C)) < 0.1] = np.nan
    scores[rng.random((n, C)) < 0.03] = np.inf
    scores[rng.random((n, C)) < 0.03] = -np.inf
    scores[rng.random((n, C)) < 0.05] = -0.0
    for k in sorted({1, 2, 5, n // 4 or 1, n}):
        acc = ColumnTopK(C, k)
        for start in range(0, n, 37):
            acc.push(scores[start : start + 37], start)
        rows, values = acc.result()
        for j in range(C):
            col = scores[:, j]
            ref_rows, ref_values, _ = topk_stream([(o, col[o : o + 37]) for o in range(0, n, 37)], k)
            assert rows[j].tolist() == ref_rows.tolist()
            assert values[j].tolist() == ref_values.tolist()


def _round_robin_from_full_columns(scores, k, seed, S):
    """The former path: a StreamingTopK per column over the stored rows × C matrix."""
    from iprox_ray.influence.roundrobin import round_robin
    from iprox_ray.influence.topk import StreamingTopK

    per_column = [StreamingTopK(min(k, len(scores))) for _ in range(scores.shape[1])]
    for start in range(0, len(scores), S):
        for j, acc in enumerate(per_column):
            acc.push(np.ascontiguousarray(scores[start : start + S, j]), start)
    return round_robin([acc.result()[0] for acc in per_column], k, seed)


@pytest.mark.parametrize("seed", range(5))
def test_round_robin_from_stored_candidates_equals_full_score_columns(tmp_path, seed):
    import zarr

    from iprox_ray.influence.column_topk import ColumnTopK
    from iprox_ray.influence.roundrobin import round_robin
    from iprox_ray.stages.rr_candidates import read_candidates, write_candidates

    rng = np.random.default_rng(seed)
    n, C, S = int(rng.integers(100, 900)), int(rng.integers(2, 12)), 64
    scores = (rng.integers(0, 8, (n, C)) / 4).astype(np.float32)  # heavy ties, within and across columns
    scores[rng.random((n, C)) < 0.15] = np.nan
    scores[rng.random(n) < 0.1] = np.nan  # non-candidate rows: NaN in every column
    root = zarr.open_group(str(tmp_path / "s.zarr"), mode="w")
    for k in sorted({1, 3, C, 4 * C + 1, n // 2, n}):
        acc = ColumnTopK(C, k)
        for start in range(0, n, S):
            acc.push(scores[start : start + S], start)
        write_candidates(root, "score_candidates/t", *acc.result(), k, [f"ex{j}" for j in range(C)])
        lists, labels = read_candidates(root["score_candidates/t"], k)
        picked, by = round_robin(lists, k, seed + 10)
        ref_picked, ref_by = _round_robin_from_full_columns(scores, k, seed + 10, S)
        assert picked.tolist() == ref_picked.tolist() and by.tolist() == ref_by.tolist()
        assert labels == [f"ex{j}" for j in range(C)]
    with pytest.raises(ValueError, match="rescore the target"):
        read_candidates(root["score_candidates/t"], n + 1)


def test_round_robin_budget_refused_with_what_to_change():
    from iprox_ray.spec import SpecError
    from iprox_ray.spec.selection import SelectionSpec
    from iprox_ray.stages.rr_candidates import check_round_robin_budget

    assert SelectionSpec().round_robin_memory_gib == 8.0
    check_round_robin_budget(1000, 100_000, 8.0)  # 4.5 GiB fits
    with pytest.raises(SpecError) as err:
        check_round_robin_budget(1000, 5_000_000, 8.0)  # 1,000 examples × 5 % of 1e8 rows
    message = str(err.value)
    assert "1000 × 5000000 × 48 B = 223.5 GiB" in message
    for hint in ("selection.k", "selection.fraction", "fewer target examples", "'topk'",
                 "selection.round_robin_memory_gib to at least 223.5"):
        assert hint in message
