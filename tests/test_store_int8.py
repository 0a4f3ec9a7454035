"""int8 sketch rows: the quantiser's error bound, the store round trip, and scores read from int8."""

from __future__ import annotations

import numpy as np
import pytest

from iprox_ray.influence.int8_scores import row_scores
from iprox_ray.influence.less import unit_rows
from iprox_ray.store.quantize import dequantize_rows, quantize_rows, row_bytes
from iprox_ray.store.sketch_store import SCALE, SplitStore


def _units(n=40, d=300, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    x[3] = 0  # a row that was never sketched
    x[5, 7] = 40.0  # an outlier entry sets that row's scale
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.where(norms > 0, x / np.where(norms > 0, norms, 1), 0).astype(np.float32)


def test_int8_rows_are_within_half_a_step_of_the_unit_rows():
    u = _units()
    q, scale = quantize_rows(u, "int8")
    assert q.dtype == np.int8 and scale.dtype == np.float32 and np.abs(q).max() <= 127
    back = dequantize_rows(q, scale)
    assert np.all(np.abs(back - u) <= scale[:, None] / 2 * (1 + 1e-6))
    assert np.all(back[3] == 0)
    assert row_bytes(300, "int8") == 300 + 8 and row_bytes(300, "float16") == 600 + 4


def test_int8_store_round_trip_and_digest(tmp_path):
    u = _units(10, 64)
    store = SplitStore.create(tmp_path / "s.zarr", "pool", 2, 16, 64, {"sketch_dtype": "int8"})
    rows = {"sample_id": np.asarray([f"r{i}" for i in range(10)], dtype=object),
            "domain": np.full(10, "", dtype=object), "subtask": np.full(10, "", dtype=object),
            "n_tokens": np.ones(10, np.int32), "loss": np.ones(10, np.float32),
            "sketch_norm": np.ones(10, np.float32), "written": np.ones(10, np.uint8)}
    marker = store.write_shard(1, u, rows)
    span = store.shard_rows(1)
    payload, scale = store.payload(span)
    q, expected_scale = quantize_rows(u, "int8")
    assert payload.dtype == np.int8 and np.array_equal(payload[:10], q)
    assert np.array_equal(scale[:10], expected_scale) and np.all(scale[10:] == 0)
    np.testing.assert_array_equal(store.units(span)[:10], dequantize_rows(q, expected_scale))
    np.testing.assert_array_equal(store.units(np.asarray([17, 16])), dequantize_rows(q[[1, 0]], expected_scale[[1, 0]]))
    assert store.stored_digest(1) == marker["digest"] and SCALE in store.array_names()
    assert "pool/sketch_scale/c/1" in marker["chunks"]  # a lost scale chunk is noticed like any other


@pytest.mark.parametrize("raw", [False, True])
def test_scores_read_from_int8_equal_the_float_path_on_the_same_rows(raw):
    """The kernel reads int8 directly; it must give what the dequantised float rows give (LESS
    cosines, or TracIn inner products of unit row × norm), up to float32 accumulation."""
    u = _units(50, 777, seed=1)
    q, scale = quantize_rows(u, "int8")
    targets = np.random.default_rng(2).standard_normal((3, 777)).astype(np.float32)
    norms = np.linspace(0.5, 2.0, 50).astype(np.float32)
    got = row_scores(q, scale, targets, norms if raw else None)
    floats = dequantize_rows(q, scale)
    want = (floats * norms[:, None] if raw else unit_rows(floats)) @ targets.T
    assert np.isnan(got[3]).all() == (not raw) and np.isnan(want[3]).all() == (not raw)
    ok = np.isfinite(want)
    np.testing.assert_allclose(got[ok], want[ok], rtol=2e-5, atol=2e-5 * np.abs(want[ok]).max())
    # and both stay within the quantiser's bound of the exact unit rows' scores
    exact = (u * norms[:, None] if raw else unit_rows(u)) @ targets.T
    bound = (scale / 2 * np.abs(targets).sum(axis=1)[:, None].T.max()) * (norms if raw else 1.05)
    assert np.all(np.abs(got[ok] - exact[ok]) <= np.broadcast_to(bound[:, None], got.shape)[ok] + 1e-4)


@pytest.mark.parametrize("method", ["less", "tracin"])
def test_a_run_with_int8_sketches_scores_like_float16(make_job, tmp_path, method):
    """The whole path (workers quantise, the store keeps int8 + scales, scorers read int8): the
    same job under both dtypes ranks the pool alike and selects nearly the same rows."""
    import zarr

    from iprox_ray.driver.pipeline import run_job
    from iprox_ray.spec import load_job

    path = make_job(k=10)
    text = path.read_text().replace('method = "ipsvd"', 'method = "none"') + f'[scoring]\nmethod = "{method}"\n'
    scores = {}
    for dtype in ("float16", "int8"):
        job_path = tmp_path / f"job-{dtype}.toml"
        job_path.write_text(text + f'[store]\nsketch_dtype = "{dtype}"\n')
        run_job(load_job(job_path), tmp_path / dtype, quiet=True)
        root = zarr.open_group(str(tmp_path / dtype / "store.zarr"), mode="r")
        assert root["pool/sketch"].dtype == dtype and root["pool"].attrs["sketch_dtype"] == dtype
        scores[dtype] = root["scores/main"][:]
    a, b = scores["float16"], scores["int8"]
    ok = np.isfinite(a)
    assert np.array_equal(ok, np.isfinite(b)) and ok.sum() > 80
    rank = lambda x: np.argsort(np.argsort(x))  # noqa: E731
    assert np.corrcoef(rank(a[ok]), rank(b[ok]))[0, 1] > 0.99
    top_a, top_b = set(np.argsort(-np.where(ok, a, -np.inf))[:10]), set(np.argsort(-np.where(ok, b, -np.inf))[:10])
    assert len(top_a & top_b) >= 8
