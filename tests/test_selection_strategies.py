"""Selection strategies against brute-force references: round-robin, per-subtask max, λ-weights."""

import numpy as np
import pytest

from iprox_ray.influence.columns import aggregate, by_example, by_subtask
from iprox_ray.influence.roundrobin import round_robin
from iprox_ray.influence.topk import topk_stream
from iprox_ray.influence.weights import lambda_bisection


def _brute_round_robin(scores: np.ndarray, k: int, seed: int) -> list[int]:
    """The published loop: working copies, argmax per target in a random order per round."""
    work = np.where(np.isfinite(scores), scores, -np.inf).astype(np.float64)
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    while len(chosen) < k:
        progressed = False
        for j in rng.permutation(scores.shape[1]):
            if len(chosen) >= k:
                break
            col = work[:, j]
            best = int(np.argmax(col))  # first maximum: the lower row wins ties
            if np.isfinite(col[best]):
                chosen.append(best)
                work[best, :] = -np.inf
                progressed = True
        if not progressed:
            break
    return chosen


def _candidates(scores: np.ndarray, k: int, chunk: int) -> list[np.ndarray]:
    out = []
    for j in range(scores.shape[1]):
        col = scores[:, j]
        rows, _, _ = topk_stream([(o, col[o : o + chunk]) for o in range(0, len(col), chunk)], min(k, len(col)))
        out.append(rows)
    return out


@pytest.mark.parametrize("seed", range(8))
def test_round_robin_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n, m = int(rng.integers(5, 300)), int(rng.integers(1, 9))
    scores = rng.integers(0, 6, (n, m)).astype(np.float32)  # heavy ties
    scores[rng.random((n, m)) < 0.1] = np.nan
    for k in sorted({1, 3, n // 3 or 1, n}):
        picked, by = round_robin(_candidates(scores, k, 37), k, seed=seed + 100)
        assert picked.tolist() == _brute_round_robin(scores, k, seed + 100)
        assert len(set(picked.tolist())) == len(picked)
        assert np.all(np.isfinite(scores[picked, by]))


def test_round_robin_stops_when_every_finite_row_is_taken():
    scores = np.full((6, 2), np.nan, np.float32)
    scores[[0, 2, 5], 0] = [1, 2, 3]
    picked, _ = round_robin(_candidates(scores, 6, 4), 6, seed=0)
    assert sorted(picked.tolist()) == [0, 2, 5]


@pytest.mark.parametrize("seed", range(4))
def test_subtask_max_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n, m = 200, 12
    per_example = rng.standard_normal((n, m)).astype(np.float32)
    subtasks = rng.choice(["alg", "geo", "num"], m)
    cols = by_subtask(subtasks)
    subtask_means = per_example @ cols.mean_matrix().astype(np.float32)
    got = aggregate(subtask_means, cols, "subtask-max")
    brute = np.array([max(per_example[i, subtasks == s].mean() for s in set(subtasks)) for i in range(n)])
    np.testing.assert_allclose(got, brute, rtol=1e-5, atol=1e-6)
    rows, _, _ = topk_stream([(0, got)], 17)
    np.testing.assert_array_equal(rows, np.lexsort((np.arange(n), -got))[:17])
    # the example-weighted mean over subtask columns is the mean over all examples
    np.testing.assert_allclose(aggregate(subtask_means, cols, "mean"), per_example.mean(axis=1), rtol=1e-5, atol=1e-6)
    assert aggregate(per_example, by_example([str(i) for i in range(m)]), "mean").shape == (n,)


def test_subtask_max_propagates_nan():
    cols = by_subtask(["a", "b"])
    out = aggregate(np.array([[1.0, np.nan], [1.0, 2.0]]), cols, "subtask-max")
    assert np.isnan(out[0]) and out[1] == 2.0


@pytest.mark.parametrize("seed", range(10))
def test_lambda_bisection_exactly_k_nonzero_summing_to_n(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 400))
    p = rng.standard_normal(n) * rng.uniform(0.01, 10)
    if seed % 3 == 0:
        p = np.round(p, 1)  # ties, also at the boundary
    order = np.lexsort((np.arange(n), -p))
    for k in sorted({1, 2, n // 2 or 1, n - 1 or 1, n}):
        res = lambda_bisection(p[order][: k + 1], k, float(n))
        assert np.count_nonzero(res.weights) == k and np.all(res.weights > 0)
        assert res.weights.sum() == pytest.approx(n, rel=1e-9)
        assert np.all(np.diff(res.weights) <= 1e-12)  # better score, no smaller weight
        # KKT of min −pᵀw + λ/2‖w‖² on the simplex: w = max(0, p − τ)/λ over the whole pool
        if k < n and p[order][k] < p[order][k - 1]:
            full = np.maximum(0.0, p - res.tau) / res.lam
            assert np.count_nonzero(full) == k
            np.testing.assert_allclose(np.sort(full)[::-1][:k], res.weights, rtol=1e-9)


def test_lambda_bisection_solves_the_quadratic_program():
    scipy_opt = pytest.importorskip("scipy.optimize")
    rng = np.random.default_rng(1)
    n, k = 12, 4
    p = rng.standard_normal(n)
    order = np.argsort(-p)
    res = lambda_bisection(p[order][: k + 1], k, float(n))
    objective = lambda w: -p @ w + 0.5 * res.lam * w @ w  # noqa: E731
    qp = scipy_opt.minimize(objective, np.full(n, 1.0), bounds=[(0, None)] * n, method="SLSQP",
                            constraints=[{"type": "eq", "fun": lambda w: w.sum() - n}], options={"ftol": 1e-12})
    w = np.zeros(n)
    w[order[:k]] = res.weights
    np.testing.assert_allclose(w, qp.x, atol=1e-5)


def test_lambda_bisection_rejects_bad_input():
    with pytest.raises(ValueError):
        lambda_bisection(np.array([1.0]), 2, 3.0)
    with pytest.raises(ValueError):
        lambda_bisection(np.array([1.0, 2.0]), 1, 3.0)
