import numpy as np
import pytest

from iprox_ray.influence.topk import topk_stream


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


def test_sorted_input_worst_case_for_heaps():
    values = np.arange(10_000, dtype=np.float32)
    rows, _, _ = topk_stream([(o, values[o : o + 1000]) for o in range(0, 10_000, 1000)], 50)
    np.testing.assert_array_equal(rows, np.arange(9999, 9949, -1))
