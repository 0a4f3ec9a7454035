import json
import math
from pathlib import Path

import pytest
import torch

from iprox_ray.proxy.ipsvd import ipsvd_factors, rank_for, svd_factors


def _sqrtm(c):
    vals, vecs = torch.linalg.eigh(c)
    return vecs @ torch.diag(vals.clamp_min(0).sqrt()) @ vecs.T


def test_closed_form_equals_the_explicit_whitened_solution():
    torch.manual_seed(0)
    m, n, cols, r, ridge = 12, 9, 200, 4, 1e-3
    w = torch.randn(m, n, dtype=torch.float64)
    h = torch.randn(n, cols, dtype=torch.float64) * torch.linspace(0.2, 3, n, dtype=torch.float64)[:, None]
    d = torch.randn(m, cols, dtype=torch.float64) * torch.linspace(0.1, 2, m, dtype=torch.float64)[:, None]
    a, b = ipsvd_factors(w, h, d, r, ridge)
    # Explicit route: C = XXᵀ/N + ridge·I, square roots, truncated SVD, map back.
    c_h = h @ h.T / cols + ridge * torch.eye(n, dtype=torch.float64)
    c_d = d @ d.T / cols + ridge * torch.eye(m, dtype=torch.float64)
    rh, rd = _sqrtm(c_h), _sqrtm(c_d)
    u, s, vt = torch.linalg.svd(rd @ w @ rh)
    explicit = torch.linalg.solve(rd, (u[:, :r] * s[:r]) @ vt[:r]) @ torch.linalg.inv(rh)
    torch.testing.assert_close(a @ b, explicit, rtol=1e-8, atol=1e-9)
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


def test_zero_output_gradients_do_not_break_the_svd():
    w = torch.randn(6, 5, dtype=torch.float64)
    a, b = ipsvd_factors(w, torch.randn(5, 30, dtype=torch.float64), torch.zeros(6, 30, dtype=torch.float64), 2)
    assert torch.isfinite(a @ b).all()


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
