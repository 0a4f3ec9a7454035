"""Atomic file writes: readers see the old file or the new one, never a torn one."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


def fsync_path(path: Path, folder: bool = False) -> bool:
    """fsync a file (or, with `folder`, a directory's entries); False if it does not exist."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    except OSError:
        if folder:
            return True
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not folder:
            raise  # some filesystems refuse fsync on a directory; a rename is as durable as they allow
    finally:
        os.close(fd)
    return True


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (a crash right after must not bring back the old name)."""
    fsync_path(folder, folder=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=True, default=str) + "\n").encode())


def atomic_write_parquet(path: Path, table: Any) -> None:
    import pyarrow.parquet as pq

    with atomic_output(path) as tmp:
        pq.write_table(table, tmp)


def read_json(path: Path) -> Any:
    with open(path) as fh:
        return json.load(fh)


def remove_tree_inside(root: Path, path: Path) -> None:
    """rmtree(path), refused unless path resolves strictly inside root (a name like '..' or a
    symlink must never make a cleanup delete the run directory or anything outside it)."""
    root_real, target = Path(root).resolve(), Path(path).resolve()
    if target == root_real or not target.is_relative_to(root_real):
        raise ValueError(f"refusing to delete {path}: it is not inside {root}")
    shutil.rmtree(target, ignore_errors=True)


@contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """A temporary name next to `path` to write to, renamed over it (durably) only when the block
    ends without an error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_parquet_writer(path: Path, schema: Any) -> Iterator[Any]:
    """A pyarrow ParquetWriter for writing a large table batch by batch; the file appears at
    `path` only when the block ends without an error."""
    import pyarrow.parquet as pq

    with atomic_output(path) as tmp, pq.ParquetWriter(str(tmp), schema) as writer:
        yield writer
