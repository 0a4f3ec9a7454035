import numpy as np
import pytest

from iprox_ray.influence.topk import StreamingTopK, topk_stream


def _reference(values: np.ndarray, k: int) -> np.ndarray:
    """argsort reference: score descending, ties by lower index; non-finite excluded."""
    finite = np.isfinite(values)
    idx = np.flatnonzero(finite)
    order = np.lexsort((idx, -values[idx]))
    return idx[order][:k]


@pytest.mark.parametrize("seed", range(6))
def test_matches_argsort_reference_with_ties_and_nans(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 2500))
    values = rng.integers(0, 25, n).astype(np.float32)  # many ties
    values[rng.random(n) < 0.1] = np.nan
    values[rng.random(n) < 0.02] = np.inf
    values[rng.random(n) < 0.02] = -np.inf
    chunk = int(rng.integers(1, 400))
    chunks = [(o, values[o : o + chunk]) for o in range(0, n, chunk)]
    if seed % 2:
        chunks = chunks[::-1]  # offsets, not arrival order, define the rows
    n_finite = int(np.isfinite(values).sum())
    for k in sorted({1, 2, 7, n_finite // 2 or 1, n_finite, n}):
        rows, scores, bad = topk_stream(chunks, k)
        np.testing.assert_array_equal(rows, _reference(values, k))
        np.testing.assert_array_equal(scores, values[rows])
        assert bad == n - n_finite


def test_k_from_one_to_n_on_distinct_values():
    values = np.random.default_rng(9).standard_normal(300).astype(np.float32)
    for k in range(1, 301):
        rows, _, _ = topk_stream([(0, values[:123]), (123, values[123:])], k)
        np.testing.assert_array_equal(rows, np.argsort(-values, kind="stable")[:k])


def test_k_from_one_to_n_with_ties_and_nans():
    rng = np.random.default_rng(3)
    values = rng.integers(0, 9, 257).astype(np.float64)
    values[rng.random(257) < 0.15] = np.nan
    chunks = [(o, values[o : o + 40]) for o in range(0, 257, 40)]
    for k in range(1, 258):
        rows, _, bad = topk_stream(chunks, k)
        np.testing.assert_array_equal(rows, _reference(values, k))
        assert bad == int(np.isnan(values).sum())


def test_sorted_input_worst_case():
    values = np.arange(10_000, dtype=np.float32)
    rows, _, _ = topk_stream([(o, values[o : o + 1000]) for o in range(0, 10_000, 1000)], 50)
    np.testing.assert_array_equal(rows, np.arange(9999, 9949, -1))


def test_large_chunks_many_parallel_blocks_sampled_threshold_and_large_k():
    """Chunks big enough for many prange blocks and for the sampled first threshold (k ≤ chunk/8),
    with ties at every level; k up to all rows."""
    rng = np.random.default_rng(4)
    values = rng.standard_normal(400_000).astype(np.float32)
    values[::97] = np.round(values[::97], 1)  # ties
    values[: 60_000 : 8] = 2.5  # the sampled threshold lands on a tie, inside the first chunk
    values[rng.random(values.size) < 0.01] = np.nan
    values[rng.random(values.size) < 0.001] = -np.inf
    values[rng.random(values.size) < 0.001] = np.inf  # set in the pass mask, never selected
    chunks = [(o, values[o : o + 65_536]) for o in range(0, values.size, 65_536)]
    for k in (1, 100, 8_000, 10_000, 150_000, values.size):
        rows, scores, bad = topk_stream(chunks, k)
        np.testing.assert_array_equal(rows, _reference(values, k))
        assert bad == int((~np.isfinite(values)).sum())
        ascending = [(o, np.sort(c)) for o, c in chunks]  # sorted chunks: the threshold keeps moving
        rows, _, _ = topk_stream(ascending, k)
        np.testing.assert_array_equal(rows, _reference(np.concatenate([c for _, c in ascending]), k))


def test_float64_chunks_and_a_threshold_float32_cannot_hold():
    values = np.array([1 + 1e-12, 1.0, 1 + 2e-12, 0.5] * 50, dtype=np.float64)
    chunks = [(0, values[:100].astype(np.float64)), (100, values[100:].astype(np.float32))]
    ref = np.concatenate([values[:100], values[100:].astype(np.float32).astype(np.float64)])
    for k in (1, 30, 120, 200):
        rows, scores, _ = topk_stream(chunks, k)
        np.testing.assert_array_equal(rows, _reference(ref, k))


def test_integer_chunks_and_bad_k():
    rows, scores, _ = topk_stream([(10, np.array([3, 1, 3, 2]))], 2)
    assert rows.tolist() == [10, 12] and scores.tolist() == [3.0, 3.0]
    with pytest.raises(ValueError):
        StreamingTopK(0)
