"""Completion markers and failure records: one small JSON file per shard, written atomically."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from iprox_ray.store.atomic import atomic_write_json, read_json
from iprox_ray.store.chunks import missing_keys
from iprox_ray.store.layout import DOWNSTREAM_STAGES, RunLayout, shard_file, shard_files


class ShardMarkers:
    """`done/NNNNNN.json` exists iff that shard's data is fully committed.

    With an `inflight_dir`, the driver also records which shards are being processed right now
    (one file per shard, removed when the shard ends), so `status` can show them from plain files.
    """

    def __init__(self, done_dir: Path, failure_dir: Path, inflight_dir: Path | None = None):
        self.done_dir = done_dir
        self.failure_dir = failure_dir
        self.inflight_dir = inflight_dir

    def _done_path(self, shard_id: int) -> Path:
        return shard_file(self.done_dir, shard_id, ".json")

    def is_done(self, shard_id: int) -> bool:
        return self._done_path(shard_id).exists()

    def done_ids(self) -> set[int]:
        return {int(p.stem) for p in shard_files(self.done_dir, ".json")}

    def forget(self, shard_id: int) -> None:
        """The shard is to be redone: its marker goes (its rows are rewritten whole by the redo)."""
        self._done_path(shard_id).unlink(missing_ok=True)

    def lost_chunks(self, store_root: Path, keep: Callable[[int], bool] | None = None) -> dict[int, list[str]]:
        """Done shards (those `keep` accepts) whose recorded chunk files are gone, with the missing
        keys: Zarr would read them back as padding, dropping the shard's rows without a word."""
        lost = {}
        for path in shard_files(self.done_dir, ".json"):
            shard = int(path.stem)
            if keep is not None and not keep(shard):
                continue
            try:
                chunks = read_json(path).get("chunks") or []
            except (OSError, json.JSONDecodeError):
                continue  # being replaced right now
            missing = missing_keys(store_root, chunks)
            if missing:
                lost[shard] = missing
        return lost

    def mark_done(self, shard_id: int, info: dict[str, Any]) -> None:
        atomic_write_json(self._done_path(shard_id), {**info, "shard": shard_id, "finished_at": time.time()})
        (shard_file(self.failure_dir, shard_id, ".json")).unlink(missing_ok=True)

    def record_failure(self, shard_id: int, error: str, attempt: int, final: bool) -> None:
        atomic_write_json(
            shard_file(self.failure_dir, shard_id, ".json"),
            {"shard": shard_id, "error": error, "attempt": attempt, "final": final, "at": time.time()},
        )

    def mark_started(self, shard_id: int, info: dict[str, Any]) -> None:
        if self.inflight_dir is not None:
            atomic_write_json(shard_file(self.inflight_dir, shard_id, ".json"),
                              {**info, "shard": shard_id, "started_at": time.time()})

    def clear_started(self, shard_id: int) -> None:
        if self.inflight_dir is not None:
            (shard_file(self.inflight_dir, shard_id, ".json")).unlink(missing_ok=True)

    def clear_all_started(self) -> None:
        """At the start of a driver: records left by a dead driver describe nothing running."""
        if self.inflight_dir is not None:
            for path in shard_files(self.inflight_dir, ".json"):
                path.unlink(missing_ok=True)

    def read_inflight(self) -> list[dict[str, Any]]:
        return _read_all(self.inflight_dir) if self.inflight_dir is not None else []

    def read_done(self) -> list[dict[str, Any]]:
        return [read_json(p) for p in shard_files(self.done_dir, ".json")]

    def read_failures(self) -> list[dict[str, Any]]:
        return _read_all(self.failure_dir)


def _read_all(folder: Path) -> list[dict[str, Any]]:
    out = []
    for path in shard_files(folder, ".json"):
        try:
            out.append(read_json(path))
        except (OSError, json.JSONDecodeError):
            continue  # removed or being replaced right now
    return out


def forget_downstream(layout: RunLayout) -> list[str]:
    """Drop the markers of the driver stages that read the shard stores (dedup, score, select): a
    redone shard invalidates them (dedup's duplicate marks, for one, live in its rows)."""
    gone = []
    for pattern in DOWNSTREAM_STAGES:
        for path in layout.stages_done(pattern):
            path.unlink(missing_ok=True)
            gone.append(path.stem)
    return gone
