"""The direct shard reader (store/shard_file.py) reads exactly what Zarr reads, and checks every
checksum Zarr checks."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec

from iprox_ray.store import sketch_store
from iprox_ray.store.chunks import chunk_key, store_root
from iprox_ray.store.digest import StoreDamagedError, read_checked
from iprox_ray.store.shard_file import read_whole_shards, shard_layout
from iprox_ray.store.sketch_store import SKETCH, SplitStore

S, D = 64, 24


def _store(tmp_path, dtype: str) -> SplitStore:
    """Shards of 64 rows in inner chunks of 16 (int8) or 8 (float16) rows."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sketch_store, "SKETCH_CHUNK_BYTES", 16 * D)
        store = SplitStore.create(tmp_path, "pool", 4, S, D, attrs={"sketch_dtype": dtype})
    assert shard_layout(store.group[SKETCH]).inner_per_shard in (4, 8)
    rng = np.random.default_rng(0)
    arr = store.group[SKETCH]
    if dtype == "int8":
        values = rng.integers(-127, 128, (2 * S, D), dtype=np.int8)
    else:
        values = rng.standard_normal((2 * S, D)).astype(dtype)
    values[S + 3: S + 40] = 0  # whole inner chunks of shard 1 left empty: Zarr writes no bytes for them
    arr[: 2 * S] = values  # shards 2 and 3 never written: no file at all
    arr[3 * S + 5] = values[7]  # shard 3: one inner chunk written, the others empty
    return store


@pytest.mark.parametrize("dtype", ["int8", "float16"])
def test_whole_shards_read_as_zarr_reads_them(tmp_path, dtype):
    arr = _store(tmp_path, dtype).group[SKETCH]
    assert shard_layout(arr) is not None
    for rows in (slice(0, S), slice(S, 2 * S), slice(2 * S, 3 * S), slice(3 * S, 4 * S), slice(0, 4 * S),
                 slice(S, None), slice(None)):
        got = read_whole_shards(arr, rows)
        assert got is not None and got.dtype == arr.dtype
        np.testing.assert_array_equal(got, arr[rows])
        np.testing.assert_array_equal(read_checked(arr, rows), arr[rows])


def test_spans_that_are_not_whole_shards_go_through_zarr(tmp_path):
    arr = _store(tmp_path, "int8").group[SKETCH]
    for rows in (slice(1, S), slice(0, S + 1), slice(0, S, 2), slice(5, 5)):
        assert read_whole_shards(arr, rows) is None
        np.testing.assert_array_equal(read_checked(arr, rows), arr[rows])


def test_a_partial_last_shard(tmp_path):
    root = zarr.open_group(tmp_path, mode="w")
    arr = root.create_array("a", shape=(2 * S + 10, D), chunks=(16, D), shards=(S, D), dtype="int8",
                            fill_value=0, compressors=[Crc32cCodec()])
    values = np.random.default_rng(1).integers(-127, 128, arr.shape, dtype=np.int8)
    arr[:] = values
    np.testing.assert_array_equal(read_whole_shards(arr, slice(2 * S, None)), values[2 * S:])
    np.testing.assert_array_equal(read_whole_shards(arr, slice(None)), values)


def test_other_layouts_are_left_to_zarr(tmp_path):
    root = zarr.open_group(tmp_path, mode="w")
    compressed = root.create_array("z", shape=(S, D), chunks=(16, D), shards=(S, D), dtype="int8",
                                   compressors=[ZstdCodec(level=0), Crc32cCodec()])
    split_columns = root.create_array("c", shape=(S, D), chunks=(16, 8), shards=(S, 8), dtype="int8",
                                      compressors=[Crc32cCodec()])
    unsharded = root.create_array("u", shape=(S, D), chunks=(16, D), dtype="int8", compressors=[Crc32cCodec()])
    for arr in (compressed, split_columns, unsharded):
        assert shard_layout(arr) is None and read_whole_shards(arr, slice(None)) is None


@pytest.mark.parametrize("shard", [0, 1])  # every chunk in order (one vectored read), or some left empty
@pytest.mark.parametrize("where", ["first chunk", "last chunk", "index"])
def test_a_flipped_byte_is_reported_by_its_file(tmp_path, where, shard):
    arr = _store(tmp_path, "int8").group[SKETCH]
    path = store_root(arr) / chunk_key(arr, (shard, 0))
    data = bytearray(path.read_bytes())
    index_bytes = shard_layout(arr).index_bytes
    data[{"first chunk": 10, "last chunk": len(data) - index_bytes - 10, "index": len(data) - 9}[where]] ^= 0x40
    path.write_bytes(bytes(data))
    other = 1 - shard
    np.testing.assert_array_equal(read_checked(arr, slice(other * S, (other + 1) * S)), arr[other * S:(other + 1) * S])
    with pytest.raises(StoreDamagedError, match=str(path.relative_to(store_root(arr))).replace("/", ".")):
        read_checked(arr, slice(shard * S, (shard + 1) * S), shard=shard)


def test_a_truncated_file_is_reported(tmp_path):
    arr = _store(tmp_path, "int8").group[SKETCH]
    path = store_root(arr) / chunk_key(arr, (0, 0))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(StoreDamagedError, match="cannot be read"):
        read_checked(arr, slice(0, S), shard=0)
