"""Whole shards of a sketch array read straight from their files, without Zarr's codec pipeline.

The score stage and `verify` read the pool's sketch one whole shard at a time, and Zarr decodes a
shard of many small inner chunks at ~0.4–0.6 GB/s on this machine (bench/RESULTS.md, "Scoring at
disk speed"), below a local disk. The sketch arrays are written in one fixed layout
(store/sketch_store.py): a shard spans every column, its inner chunks are raw little-endian
values followed by a crc32c, and the shard index (offset, length of each inner chunk, uint64
little-endian, then its own crc32c) sits at the end of the file. That layout is Zarr's
sharding_indexed codec as its specification fixes it, so this reader decodes it with a read of
the index and one vectored read that lands every inner chunk in its rows of the output (a file
with chunks left empty or out of order: one read of the file and a copy per chunk), and checks
every checksum Zarr would. Any other layout (another codec chain, a shard split along columns)
returns None: Zarr reads it.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import google_crc32c
import numpy as np

from iprox_ray.store.chunks import chunk_key, store_root

UNWRITTEN = np.uint64(2**64 - 1)  # an index entry's offset and length for a chunk never written
CRC_BYTES = 4
INDEX_ENTRY_BYTES = 16
IOV_CHUNKS = 500  # inner chunks per vectored read: two buffers each, under the usual IOV_MAX of 1,024


@dataclass(frozen=True)
class ShardLayout:
    shard_rows: int
    inner_rows: int
    row_bytes: int

    @property
    def inner_per_shard(self) -> int:
        return self.shard_rows // self.inner_rows

    @property
    def index_bytes(self) -> int:
        return self.inner_per_shard * INDEX_ENTRY_BYTES + CRC_BYTES


def _names(codecs) -> list[str]:
    return [type(c).__name__ for c in codecs]


def _value(option) -> str:
    return str(getattr(option, "value", option))


def _little(bytes_codec) -> bool:
    """Values stored little-endian (or single bytes, where Zarr records no endianness)."""
    return bytes_codec.endian is None or _value(bytes_codec.endian) == "little"


def shard_layout(arr) -> ShardLayout | None:
    """The layout when `arr` is one this module reads (see the module's docstring), else None."""
    codecs = getattr(arr.metadata, "codecs", ())
    if arr.ndim != 2 or len(codecs) != 1 or type(codecs[0]).__name__ != "ShardingCodec":
        return None
    sharding = codecs[0]
    shard_rows, shard_cols = (int(v) for v in arr.metadata.chunk_grid.chunk_shape)
    inner_rows, inner_cols = (int(v) for v in sharding.chunk_shape)
    dtype = arr.dtype
    if (sys.byteorder != "little" or not hasattr(os, "preadv")
            or not (isinstance(dtype, np.dtype) and dtype.kind in "iuf")):
        return None
    if (shard_cols != arr.shape[1] or inner_cols != shard_cols or shard_rows % inner_rows
            or _names(sharding.codecs) != ["BytesCodec", "Crc32cCodec"]
            or _names(sharding.index_codecs) != ["BytesCodec", "Crc32cCodec"]
            or not all(_little(c) for c in (sharding.codecs[0], sharding.index_codecs[0]))
            or _value(sharding.index_location) != "end"):
        return None
    return ShardLayout(shard_rows, inner_rows, shard_cols * dtype.itemsize)


class ShardChecksumError(ValueError):
    """A shard file's index or one of its inner chunks does not match its crc32c."""


def _crc_ok(data: np.ndarray, stored: np.ndarray) -> bool:
    return google_crc32c.value(data) == int(stored.view("<u4")[0])


def read_shard_file(arr, layout: ShardLayout, shard: int, out: np.ndarray) -> np.ndarray:
    """Rows of shard `shard` of `arr` into `out` ([rows of this shard, columns]): fill value where
    the file or an inner chunk was never written, as Zarr reads them."""
    path = store_root(arr) / chunk_key(arr, (shard, 0))
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        out[...] = arr.metadata.fill_value
        return out
    try:
        size = os.fstat(fd).st_size
        if size < layout.index_bytes:
            raise ShardChecksumError(f"{path}: {size} bytes, less than its index ({layout.index_bytes})")
        index = _read_index(fd, path, size, layout)
        if out.shape[0] == layout.shard_rows and _in_order(index, layout, size):
            _scatter_read(fd, path, layout, out)
        else:
            _copy_read(fd, path, size - layout.index_bytes, index, layout, out, arr.metadata.fill_value)
    finally:
        os.close(fd)
    return out


def _read_into(fd: int, path, buffers: list[np.ndarray], offset: int) -> None:
    want = sum(b.nbytes for b in buffers)
    got = os.preadv(fd, buffers, offset)
    if got != want:
        raise ShardChecksumError(f"{path}: {got} of {want} bytes read at {offset} (truncated?)")


def _read_index(fd: int, path, size: int, layout: ShardLayout) -> np.ndarray:
    """[inner chunks, 2] (offset, length) pairs, after checking the index's crc32c."""
    raw = np.empty(layout.index_bytes, np.uint8)
    _read_into(fd, path, [raw], size - layout.index_bytes)
    if not _crc_ok(raw[:-CRC_BYTES], raw[-CRC_BYTES:]):
        raise ShardChecksumError(f"{path}: the shard index does not match its crc32c")
    return raw[:-CRC_BYTES].view("<u8").reshape(-1, 2)


def _in_order(index: np.ndarray, layout: ShardLayout, size: int) -> bool:
    """Every inner chunk written, back to back in row order: the file as one writer of the whole
    shard leaves it (sketch and embedding shards always are)."""
    stride = layout.inner_rows * layout.row_bytes + CRC_BYTES
    return (size == len(index) * stride + layout.index_bytes and bool((index[:, 1] == stride).all())
            and bool((index[:, 0] == np.arange(len(index), dtype=np.uint64) * np.uint64(stride)).all()))


def _scatter_read(fd: int, path, layout: ShardLayout, out: np.ndarray) -> None:
    """One vectored read per group of inner chunks, each chunk's values landing in its rows of
    `out` and its crc32c beside: no copy beyond the kernel's, then one checksum per chunk."""
    chunks = out.view(np.uint8).reshape(layout.inner_per_shard, -1)
    crcs = np.empty((layout.inner_per_shard, CRC_BYTES), np.uint8)
    stride = chunks.shape[1] + CRC_BYTES
    for first in range(0, len(chunks), IOV_CHUNKS):
        group = range(first, min(len(chunks), first + IOV_CHUNKS))
        _read_into(fd, path, [b for i in group for b in (chunks[i], crcs[i])], first * stride)
    for i in range(len(chunks)):
        if not _crc_ok(chunks[i], crcs[i]):
            raise ShardChecksumError(f"{path}: inner chunk {i} does not match its crc32c")


def _copy_read(fd: int, path, data_bytes: int, index: np.ndarray, layout: ShardLayout, out: np.ndarray,
               fill) -> None:
    """Any other file (chunks left empty, another order, a partial last shard): read it whole and
    copy each chunk's rows."""
    data = np.empty(data_bytes, np.uint8)
    _read_into(fd, path, [data], 0)
    rows = out.shape[0]
    flat = out.view(np.uint8).reshape(rows, -1)
    chunk_bytes = layout.inner_rows * layout.row_bytes
    for i, (offset, length) in enumerate(index):
        first = i * layout.inner_rows
        if first >= rows:
            break
        stop = min(rows, first + layout.inner_rows)
        if offset == UNWRITTEN and length == UNWRITTEN:
            out[first:stop] = fill
            continue
        offset, length = int(offset), int(length)
        if length != chunk_bytes + CRC_BYTES or offset + length > data_bytes:
            raise ShardChecksumError(f"{path}: inner chunk {i} has {length} bytes at {offset}, "
                                     f"expected {chunk_bytes + CRC_BYTES}")
        body = data[offset:offset + chunk_bytes]
        if not _crc_ok(body, data[offset + chunk_bytes:offset + length]):
            raise ShardChecksumError(f"{path}: inner chunk {i} does not match its crc32c")
        flat[first:stop] = body[:(stop - first) * layout.row_bytes].reshape(stop - first, -1)


def read_whole_shards(arr, rows: slice) -> np.ndarray | None:
    """arr[rows] read shard file by shard file when `rows` covers whole shards of a layout this
    module reads; None otherwise (the caller reads through Zarr)."""
    layout = shard_layout(arr)
    if layout is None or rows.step not in (None, 1):
        return None
    start, stop, _ = rows.indices(arr.shape[0])
    if start % layout.shard_rows or (stop % layout.shard_rows and stop != arr.shape[0]) or stop <= start:
        return None
    out = np.empty((stop - start, arr.shape[1]), dtype=arr.dtype)
    for first in range(start, stop, layout.shard_rows):
        last = min(stop, first + layout.shard_rows)
        read_shard_file(arr, layout, first // layout.shard_rows, out[first - start:last - start])
    return out
