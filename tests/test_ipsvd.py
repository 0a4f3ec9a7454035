import math

import pytest
import torch

from iprox_ray.proxy.ipsvd import ipsvd_factors, rank_for, svd_factors


def _sqrtm(c):
    vals, vecs = torch.linalg.eigh(c)
    return vecs @ torch.diag(vals.clamp_min(0).sqrt()) @ vecs.T


def _explicit(w, h, d, r, ridge):
    """The whitened optimum the long way: C = XXᵀ/N + ridge·I, square roots, truncated SVD, map back."""
    m, n = w.shape
    c_h = h @ h.T / h.shape[1] + ridge * torch.eye(n, dtype=torch.float64)
    c_d = d @ d.T / d.shape[1] + ridge * torch.eye(m, dtype=torch.float64)
    rh, rd = _sqrtm(c_h), _sqrtm(c_d)
    u, s, vt = torch.linalg.svd(rd @ w @ rh)
    return torch.linalg.solve(rd, (u[:, :r] * s[:r]) @ vt[:r]) @ torch.linalg.inv(rh)


@pytest.mark.parametrize("cols", [200, 6])  # 6 < n, m: fewer probe columns than dimensions
def test_closed_form_equals_the_explicit_whitened_solution(cols):
    torch.manual_seed(0)
    m, n, r, ridge = 12, 9, 4, 1e-3
    w = torch.randn(m, n, dtype=torch.float64)
    h = torch.randn(n, cols, dtype=torch.float64) * torch.linspace(0.2, 3, n, dtype=torch.float64)[:, None]
    d = torch.randn(m, cols, dtype=torch.float64) * torch.linspace(0.1, 2, m, dtype=torch.float64)[:, None]
    a, b = ipsvd_factors(w, h, d, r, ridge)
    torch.testing.assert_close(a @ b, _explicit(w, h, d, r, ridge), rtol=1e-8, atol=1e-9)
    assert a.shape == (m, r) and b.shape == (r, n)


def test_ipsvd_beats_plain_svd_on_the_whitened_objective():
    torch.manual_seed(1)
    m, n, cols, r = 16, 16, 400, 4
    w = torch.randn(m, n, dtype=torch.float64)
    h = torch.randn(n, cols, dtype=torch.float64) * torch.logspace(-1, 1, n, dtype=torch.float64)[:, None]
    d = torch.randn(m, cols, dtype=torch.float64) * torch.logspace(1, -1, m, dtype=torch.float64)[:, None]

    def whitened_error(approx):
        return torch.linalg.norm((d.T @ (w - approx) @ h)).item()

    a, b = ipsvd_factors(w, h, d, r)
    sa, sb = svd_factors(w, r)
    assert whitened_error(a @ b) < 0.8 * whitened_error(sa @ sb)


def test_relative_ridge_is_invariant_to_the_scale_of_the_probes():
    """δ of a mean token loss is ~1e-4 on a real model: an absolute ridge swamps C_δ (the output
    side stops whitening), a relative ridge gives the same factors at any scale."""
    torch.manual_seed(2)
    m, n, cols, r = 10, 8, 300, 3
    w = torch.randn(m, n, dtype=torch.float64)
    h = torch.randn(n, cols, dtype=torch.float64) * torch.logspace(-1, 1, n, dtype=torch.float64)[:, None]
    d = torch.randn(m, cols, dtype=torch.float64) * torch.logspace(1, -1, m, dtype=torch.float64)[:, None]

    def product(scale_h, scale_d, relative):
        a, b = ipsvd_factors(w, h * scale_h, d * scale_d, r, 1e-3, relative_ridge=relative)
        return a @ b

    torch.testing.assert_close(product(1e3, 1e-4, True), product(1.0, 1.0, True), rtol=1e-7, atol=1e-9)
    # the absolute ridge is not: tiny δ makes it plain input-whitened SVD
    assert torch.linalg.norm(product(1.0, 1e-4, False) - product(1.0, 1.0, False)) > 1e-3


def test_zero_output_gradients_leave_the_input_whitened_solution():
    """δ = 0 (no probe reached the layer's output): C_δ is the ridge alone, a multiple of I, so the
    factors are the input-whitened optimum, still far from plain SVD when the inputs are skewed."""
    torch.manual_seed(3)
    w = torch.randn(6, 5, dtype=torch.float64)
    h = torch.randn(5, 30, dtype=torch.float64) * torch.logspace(-1, 1, 5, dtype=torch.float64)[:, None]
    d = torch.zeros(6, 30, dtype=torch.float64)
    a, b = ipsvd_factors(w, h, d, 2)
    torch.testing.assert_close(a @ b, _explicit(w, h, d, 2, 1e-3), rtol=1e-8, atol=1e-9)
    sa, sb = svd_factors(w, 2)
    assert torch.linalg.norm(a @ b - sa @ sb) > 0.1 * torch.linalg.norm(w)


@pytest.mark.parametrize("m,n,rho,multiple,expected", [
    (4096, 4096, 0.7, 128, 640),  # round(0.3*4096*4096/8192)=614 -> 640
    (64, 64, 0.5, 8, 16),
    (10, 3, 0.0, 1, 2),  # round(30/13)=2
    (8, 8, 0.99, 8, 8),  # r_raw clipped to >= 1, then a multiple
])
def test_rank_rule(m, n, rho, multiple, expected):
    assert rank_for(m, n, rho, multiple) == expected
    raw = min(max(round((1 - rho) * m * n / (m + n)), 1), min(m, n))
    assert rank_for(m, n, rho, multiple) == math.ceil(raw / multiple) * multiple


def test_global_rank_rule_spends_the_budget_where_the_energy_is():
    from iprox_ray.proxy.ipsvd import allocate_ranks, dense_rank

    flat = torch.ones(32)  # every component alike
    steep = torch.logspace(1, -3, 32)  # a few components carry everything
    ranks = allocate_ranks({"flat": (flat, 64, 64), "steep": (steep, 64, 64)}, rho=0.5, multiple=1)
    assert ranks["steep"] < ranks["flat"] or ranks["flat"] == 0
    kept = sum(r if r else dense_rank(64, 64) for r in ranks.values())
    assert kept * 128 <= 0.5 * 2 * 64 * 64 + 128  # the budget, within one component
    # equal spectra and shapes: the uniform split
    same = allocate_ranks({"a": (flat, 64, 64), "b": (flat.clone(), 64, 64)}, rho=0.75, multiple=1)
    assert abs(same["a"] - same["b"]) <= 1 and same["a"] == pytest.approx(rank_for(64, 64, 0.75, 1), abs=1)


def test_global_rank_rule_keeps_a_layer_dense_once_factors_cost_more():
    from iprox_ray.proxy.ipsvd import allocate_ranks

    ranks = allocate_ranks({"hot": (torch.full((16,), 1e3), 16, 16), "cold": (torch.full((64,), 1e-3), 64, 64)},
                           rho=0.5, multiple=4)
    assert ranks["hot"] == 0  # rank 8 = dense_rank(16, 16): kept dense
    assert ranks["cold"] >= 4  # every layer keeps at least one multiple


def test_global_rank_rule_lowers_the_total_whitened_error_at_equal_parameters():
    from iprox_ray.proxy.ipsvd import allocate_ranks, ipsvd_spectrum, whitening

    torch.manual_seed(3)
    layers = {}
    for name, scale in (("loud", 10.0), ("quiet", 0.1)):
        w = torch.randn(24, 24, dtype=torch.float64)
        h = torch.randn(24, 400, dtype=torch.float64) * torch.logspace(0, -1, 24, dtype=torch.float64)[:, None]
        d = scale * torch.randn(24, 400, dtype=torch.float64)
        layers[name] = (w, h, d)

    def error(name, rank):
        if rank == 0:  # kept dense
            return 0.0
        w, h, d = layers[name]
        a, b, _ = ipsvd_spectrum(w, *sides(name), rank)
        return torch.linalg.norm(d.T @ (w - a @ b) @ h).item() ** 2

    def sides(name):
        _, h, d = layers[name]
        return [whitening(x @ x.T / x.shape[1], 1e-3, True) for x in (h, d)]

    spectra = {n: (ipsvd_spectrum(layers[n][0], *sides(n), 12)[2], 24, 24) for n in layers}
    ranks = allocate_ranks(spectra, rho=0.5, multiple=1)
    uniform = rank_for(24, 24, 0.5, 1)
    assert sum(ranks.values()) <= 2 * uniform
    assert sum(error(n, r) for n, r in ranks.items()) < sum(error(n, uniform) for n in layers)
