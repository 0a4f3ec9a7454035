"""Streaming reads ahead (SplitStore.advise, store/read_ahead.py) and windowed driver writes
(driver_arrays.RowWindows) return and write exactly what plain reads and writes do."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from iprox_ray.influence.int8_scores import INT32_EXACT_DIM, row_scores
from iprox_ray.store import driver_arrays, sharded_rows
from iprox_ray.store.chunks import chunk_key, store_root
from iprox_ray.store.digest import StoreDamagedError
from iprox_ray.store.sketch_store import OK, SCALE, SKETCH, SplitStore

S, D, SHARDS = 32, 16, 7


@pytest.fixture
def pool(tmp_path, monkeypatch):
    monkeypatch.setattr(sharded_rows, "WINDOW_ROWS", 3 * S)  # windows of 3 shards: the last one short
    store = SplitStore.create(tmp_path, "pool", SHARDS, S, D, attrs={"sketch_dtype": "int8"})
    rng = np.random.default_rng(0)
    for shard in range(SHARDS):
        rows = {name: np.zeros(S, dtype=object if dtype is str else dtype)
                for name, dtype in store.row_arrays().items()}
        rows["written"] = rng.choice([0, OK], S).astype(np.uint8)
        rows["loss"] = rng.standard_normal(S).astype(np.float32)
        store.write_shard(shard, rng.standard_normal((S, D)).astype(np.float32), rows)
    return store


def test_reads_after_advise_are_the_plain_reads(pool):
    plain = SplitStore.open(store_root(pool.group), "pool")
    for shard in range(SHARDS):
        pool.advise(shard + 1)
        span = pool.shard_rows(shard)
        for name in (SKETCH, SCALE, "written", "loss", "sample_id"):
            np.testing.assert_array_equal(pool.read(name, span), plain.read(name, span))
        # bounded: two sketch shards in flight, two windows of the 5 numeric per-row arrays
        assert len(pool._ahead) <= 2 and len(pool._windows) <= 2 * 5
    np.testing.assert_array_equal(pool.read("loss", slice(5, 70)), plain.read("loss", slice(5, 70)))


def test_a_damaged_shard_read_ahead_fails_in_the_reader(pool):
    arr = pool.array(SKETCH)
    path = store_root(arr) / chunk_key(arr, (2, 0))
    data = bytearray(path.read_bytes())
    data[5] ^= 0x10
    path.write_bytes(bytes(data))
    pool.advise(2)
    with pytest.raises(StoreDamagedError, match="shard 2"):
        pool.read(SKETCH, pool.shard_rows(2))


def test_row_windows_write_what_direct_writes_do(tmp_path):
    root = zarr.open_group(tmp_path, mode="w")
    arr = driver_arrays.create(root, "scores", shape=(SHARDS * S,), chunks=(S,), dtype="float32", fill_value=np.nan)
    values = np.random.default_rng(1).standard_normal(SHARDS * S).astype(np.float32)
    out = driver_arrays.RowWindows(arr, window_rows=2 * S)
    for shard in range(SHARDS):
        out.put(slice(shard * S, (shard + 1) * S), values[shard * S:(shard + 1) * S])
    out.close()
    np.testing.assert_array_equal(arr[:], values)
    with pytest.raises(ValueError, match="in order"):
        driver_arrays.RowWindows(arr).put(slice(S, 2 * S), values[:S])


def test_the_int8_kernel_refuses_rows_too_wide_for_exact_norms():
    assert row_scores(np.ones((2, 8), np.int8), np.ones(2, np.float32), np.ones((1, 8), np.float32)).shape == (2, 1)
    with pytest.raises(ValueError, match="int32"):
        row_scores(np.ones((1, INT32_EXACT_DIM + 1), np.int8), np.ones(1, np.float32),
                   np.ones((1, INT32_EXACT_DIM + 1), np.float32))
