"""The frozen shard manifest: written once per run, checked on every rerun.

Shard i covers rows [row_start, row_stop) of one file and owns store rows
[i*rows_per_shard, (i+1)*rows_per_shard). Shards never span files.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from iprox_ray.corpus.sources import CorpusError, InputFile, count_rows, discover
from iprox_ray.store.atomic import atomic_write_json, atomic_write_parquet, read_json


class ManifestMismatchError(RuntimeError):
    pass


@dataclass(frozen=True)
class Shard:
    shard_id: int
    file: str
    format: str
    row_start: int
    row_stop: int
    byte_start: int  # JSONL: offset of row_start; else 0

    @property
    def n_rows(self) -> int:
        return self.row_stop - self.row_start


@dataclass(frozen=True)
class FileInfo:
    file: str
    format: str
    size: int
    mtime_ns: int
    checksum: str
    n_rows: int


def file_checksum(path: Path, block: int = 8 << 20) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Manifest:
    rows_per_shard: int
    shards: list[Shard]
    files: list[FileInfo]

    @property
    def n_shards(self) -> int:
        return len(self.shards)

    @property
    def n_rows(self) -> int:
        return sum(s.n_rows for s in self.shards)

    def shard_of_rows(self) -> list[tuple[int, int]]:
        """(shard_id, n_rows) pairs; store row of (shard, local) is shard*rows_per_shard + local."""
        return [(s.shard_id, s.n_rows) for s in self.shards]

    # -- persistence ----------------------------------------------------------------------
    def save(self, table_path: Path, info_path: Path, source: dict) -> None:
        atomic_write_parquet(table_path, pa.Table.from_pylist([asdict(s) for s in self.shards]))
        atomic_write_json(
            info_path,
            {"rows_per_shard": self.rows_per_shard, "files": [asdict(f) for f in self.files], "source": source},
        )

    @classmethod
    def load(cls, table_path: Path, info_path: Path) -> "Manifest":
        info = read_json(info_path)
        shards = [Shard(**row) for row in pq.read_table(table_path).to_pylist()]
        return cls(info["rows_per_shard"], shards, [FileInfo(**f) for f in info["files"]])


def build_manifest(files: list[InputFile], rows_per_shard: int) -> Manifest:
    shards: list[Shard] = []
    infos: list[FileInfo] = []
    for f in files:
        n_rows, offsets = count_rows(f)
        stat = f.path.stat()
        infos.append(FileInfo(str(f.path), f.format, stat.st_size, stat.st_mtime_ns, file_checksum(f.path), n_rows))
        for start in range(0, n_rows, rows_per_shard):
            stop = min(n_rows, start + rows_per_shard)
            byte_start = offsets[start] if offsets else 0
            shards.append(Shard(len(shards), str(f.path), f.format, start, stop, byte_start))
    if not shards:
        raise CorpusError("the inputs hold no rows: " + ", ".join(str(f.path) for f in files))
    return Manifest(rows_per_shard, shards, infos)


def verify_inputs(manifest: Manifest, files: list[InputFile]) -> None:
    """Refuse if the inputs differ from those the manifest froze (cheap stat check, then checksum)."""
    now = [str(f.path) for f in files]
    then = [fi.file for fi in manifest.files]
    if now != then:
        added, removed = sorted(set(now) - set(then)), sorted(set(then) - set(now))
        raise ManifestMismatchError(
            f"the input file list changed since this run's manifest was frozen (added {added}, removed {removed}); "
            "use a new run directory or --force-new"
        )
    for fi in manifest.files:
        try:
            stat = os.stat(fi.file)
        except OSError as exc:
            raise ManifestMismatchError(f"input {fi.file} is gone: {exc}") from exc
        if stat.st_size != fi.size:
            raise ManifestMismatchError(
                f"input {fi.file} changed since the manifest was frozen (size {fi.size} -> {stat.st_size}); "
                "use a new run directory or --force-new"
            )
        if stat.st_mtime_ns != fi.mtime_ns and file_checksum(Path(fi.file)) != fi.checksum:
            raise ManifestMismatchError(
                f"input {fi.file} changed since the manifest was frozen (checksum differs); "
                "use a new run directory or --force-new"
            )


def freeze_manifest(
    patterns: list[str], fmt: str, base_dir: Path, rows_per_shard: int, table_path: Path, info_path: Path, source: dict
) -> Manifest:
    """Load the run's manifest (checking the inputs did not change) or build and save it once."""
    files = discover(patterns, fmt, base_dir)
    if table_path.exists() and info_path.exists():
        manifest = Manifest.load(table_path, info_path)
        verify_inputs(manifest, files)
        return manifest
    manifest = build_manifest(files, rows_per_shard)
    manifest.save(table_path, info_path, source)
    return manifest
