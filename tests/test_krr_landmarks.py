"""KRR propagation against the dense closed form; chunked equals unchunked; landmark choice."""

import numpy as np
import pytest

from iprox_ray.influence import krr, landmarks


def _dense_reference(E, rows, P_L, kind, ridge_factor):
    E = E.astype(np.float64)
    X = E[rows]
    if kind == "rbf":
        d = np.sqrt(((X[:, None, :] - X[None, :, :]) ** 2).sum(-1))
        sigma = np.median(d[np.triu_indices(len(X), 1)])
        kern = lambda a, b: np.exp(-((a[:, None, :] - b[None, :, :]) ** 2).sum(-1) / (2 * sigma**2))  # noqa: E731
    else:
        kern = lambda a, b: a @ b.T  # noqa: E731
    K = kern(X, X)
    K = K + ridge_factor * np.mean(np.diag(K)) * np.eye(len(X))
    return kern(E, X) @ np.linalg.inv(K) @ P_L


def _rounding_bound(model: krr.KernelRidge, e: np.ndarray) -> np.ndarray:
    """A first-order forward-error bound of float32 `predict` per entry, from its conditioning:
    the kernel row (an E-term dot product, or a squared distance by expansion, then exp) and the
    L-term product with α. Summation order (how BLAS blocks a product) stays inside it."""
    eps = float(np.finfo(np.float32).eps)
    a, lm = e.astype(np.float64), model.landmarks.astype(np.float64)
    n_l, dim = lm.shape
    if model.kind == "linear":
        k = a @ lm.T
        k_err = (dim + 2) * eps * (np.abs(a) @ np.abs(lm).T)
    else:
        k = krr.kernel(a, lm, "rbf", model.sigma)
        na, nl = np.linalg.norm(a, axis=1)[:, None], np.linalg.norm(lm, axis=1)[None, :]
        d2_err = (dim + 4) * eps * (na + nl) ** 2
        k_err = k * (d2_err / (2 * model.sigma**2) + 2 * eps)
    alpha = np.abs(model.alpha.astype(np.float64))
    return k_err @ alpha + (n_l + 2) * eps * (np.abs(k) @ alpha)


@pytest.mark.parametrize("kind", ["rbf", "linear"])
def test_krr_equals_dense_closed_form_and_chunking_is_exact(kind):
    rng = np.random.default_rng(0)
    E = rng.standard_normal((300, 16)).astype(np.float32)
    rows = np.sort(rng.choice(300, 40, replace=False))
    P_L = rng.standard_normal((40, 3))
    model = krr.fit(E[rows], P_L, kind, 0.01, bandwidth_sample=1000)
    whole = model.predict(E)
    bound = _rounding_bound(model, E)
    eps = float(np.finfo(np.float32).eps)
    reference = _dense_reference(E, rows, P_L, kind, 0.01)
    # α is stored in float32 too: one more rounding of each of its entries
    alpha_round = eps * (np.abs(krr.kernel(E.astype(np.float64), E[rows].astype(np.float64), kind, model.sigma))
                         @ np.abs(model.alpha.astype(np.float64)))
    assert (np.abs(whole - reference) <= bound + alpha_round + 1e-9).all()
    chunked = np.concatenate([model.predict(E[o : o + 17]) for o in range(0, 300, 17)])
    # equal up to float32 rounding: BLAS may block a 17-row product differently from a 300-row
    # one, so each may be off by the bound, whatever the machine
    assert (np.abs(chunked - whole) <= 2 * bound).all()
    assert not np.array_equal(bound, 0 * bound) and (bound < 1e-2 * np.abs(reference).max()).all()


def test_krr_interpolates_its_landmarks_with_tiny_ridge():
    rng = np.random.default_rng(1)
    E = rng.standard_normal((30, 8)).astype(np.float32)
    P = rng.standard_normal(30)
    model = krr.fit(E, P, "rbf", 1e-9)
    np.testing.assert_allclose(model.predict(E)[:, 0], P, atol=1e-3)


def test_centred_krr_is_the_dense_closed_form_on_centred_scores_and_scales_the_bandwidth():
    rng = np.random.default_rng(4)
    E = rng.standard_normal((120, 6)).astype(np.float32)
    rows = np.sort(rng.choice(120, 30, replace=False))
    P_L = 5.0 + rng.standard_normal((30, 2))  # a large common offset
    plain = krr.fit(E[rows], P_L, "rbf", 0.01)
    centred = krr.fit(E[rows], P_L, "rbf", 0.01, center=True, bandwidth_scale=2.0)
    assert centred.sigma == pytest.approx(2.0 * plain.sigma)
    mean = P_L.mean(0)
    wide = krr.fit(E[rows], P_L - mean, "rbf", 0.01, bandwidth_scale=2.0)
    np.testing.assert_allclose(centred.predict(E), wide.predict(E) + mean, rtol=1e-5, atol=1e-5)
    far = 100.0 * np.ones((1, 6), np.float32)  # no landmark near: the typical score, not 0
    np.testing.assert_allclose(centred.predict(far)[0], mean, rtol=1e-5)
    assert np.abs(plain.predict(far)).max() < 1e-6


def test_holdout_scores_held_out_landmarks_and_beats_noise_on_a_smooth_target():
    rng = np.random.default_rng(5)
    E = rng.standard_normal((200, 3)).astype(np.float32)
    smooth = np.sin(E[:, 0]) + 0.5 * E[:, 1]
    h = krr.holdout(E, smooth[:, None], folds=5, seed=0, fit_fold=lambda e, p: krr.fit(e, p, "rbf", 1e-3))
    assert h["landmarks"] == 200 and h["folds"] == 5 and h["spearman"] > 0.9
    noise = krr.holdout(E, rng.standard_normal(200), folds=5, seed=0)
    assert abs(noise["spearman"]) < 0.3
    assert krr.holdout(E[:8], smooth[:8], folds=5)["spearman"] is None  # fewer than 2 per fold


def test_median_bandwidth_uses_a_seeded_subset():
    x = np.random.default_rng(2).standard_normal((1500, 4))
    assert krr.median_bandwidth(x, 1000, seed=3) == krr.median_bandwidth(x, 1000, seed=3)
    full = krr.median_bandwidth(x, 5000)
    assert abs(krr.median_bandwidth(x, 1000) - full) / full < 0.05


@pytest.mark.parametrize("method", ["uniform", "kmeans++", "farthest-point"])
def test_landmark_methods_give_distinct_valid_rows(method):
    rng = np.random.default_rng(4)
    E = rng.standard_normal((500, 6)).astype(np.float32)
    valid = np.flatnonzero(rng.random(500) < 0.8)
    rows = landmarks.choose(method, valid, 50, seed=1, candidates=200, embeddings_of=lambda r: E[r])
    assert len(rows) == 50 == len(set(rows.tolist())) and np.isin(rows, valid).all()
    assert np.all(np.diff(rows) > 0)
    again = landmarks.choose(method, valid, 50, seed=1, candidates=200, embeddings_of=lambda r: E[r])
    np.testing.assert_array_equal(rows, again)
    capped = landmarks.choose(method, valid[:30], 50, seed=1, candidates=200, embeddings_of=lambda r: E[r])
    assert sorted(capped.tolist()) == valid[:30].tolist()


def test_farthest_point_spreads_over_clusters():
    centres = np.array([[0, 0], [100, 0], [0, 100], [100, 100]], np.float32)
    E = np.concatenate([c + np.random.default_rng(i).standard_normal((50, 2)) for i, c in enumerate(centres)])
    picked = landmarks.farthest_point(E, 4, seed=0)
    assert sorted(set((E[picked] > 50).astype(int).dot([1, 2]).tolist())) == [0, 1, 2, 3]
