"""Read a run directory's progress files (works while a run is live and after it ended)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from iprox_ray.store.layout import RunLayout
from iprox_ray.store.lock import RunLock, describe_owner
from iprox_ray.store.markers import ShardMarkers


def _stage_names(layout: RunLayout) -> list[str]:
    folder = layout.root / "stages"
    return sorted(p.stem for p in folder.glob("*.json")) if folder.exists() else []


def _splits(layout: RunLayout) -> list[str]:
    folder = layout.root / "manifest"
    return sorted(p.stem for p in folder.glob("*.json")) if folder.exists() else []


def _quarantined(layout: RunLayout, flat_split: str) -> int:
    folder = layout.root / "quarantine" / flat_split
    if not folder.exists():
        return 0
    return sum(pq.ParquetFile(p).metadata.num_rows for p in folder.glob("*.parquet"))


def collect_status(run_dir: Path) -> dict:
    layout = RunLayout(run_dir)
    if not layout.config.exists():
        raise FileNotFoundError(f"{run_dir} is not an iprox-ray run directory (no config.json)")
    status: dict = {"run_dir": str(run_dir), "stages_done": _stage_names(layout), "splits": {}}
    lock = RunLock(layout.lock)
    owner = lock.owner()
    status["lock"] = None if owner is None else {**owner, "stale": lock.is_stale(owner)}
    for flat in _splits(layout):
        n_shards = pq.ParquetFile(layout.root / "manifest" / f"{flat}.parquet").metadata.num_rows
        stage = f"sketch-{flat}"
        markers = ShardMarkers(layout.completions(stage), layout.failures(stage))
        done = markers.read_done()
        failures = markers.read_failures()
        rows = sum(d.get("rows", 0) for d in done)
        busy = sum(d.get("seconds", 0.0) for d in done)
        status["splits"][flat] = {
            "shards": n_shards,
            "done": len(done),
            "pending": n_shards - len(done),
            "failed": [f for f in failures if f.get("final")],
            "retrying": [f for f in failures if not f.get("final")],
            "rows_done": rows,
            "rows_per_worker_second": rows / busy if busy else None,
            "quarantined": _quarantined(layout, flat),
        }
    return status


def format_status(status: dict) -> str:
    lines = [f"run {status['run_dir']}"]
    lock = status["lock"]
    if lock:
        state = "STALE (owner is dead)" if lock["stale"] else "held"
        lines.append(f"  lock: {state} by {describe_owner(lock)}")
    else:
        lines.append("  lock: free (no run active)")
    lines.append(f"  stages done: {', '.join(status['stages_done']) or 'none'}")
    for split, s in status["splits"].items():
        rate = f", {s['rows_per_worker_second']:.0f} rows/s per worker" if s["rows_per_worker_second"] else ""
        lines.append(f"  {split}: {s['done']}/{s['shards']} shards done, {s['pending']} pending, "
                     f"{len(s['failed'])} failed, {s['quarantined']} rows quarantined{rate}")
        for f in s["failed"] + s["retrying"]:
            last = (f.get("error") or "").strip().splitlines()[-1:] or [""]
            lines.append(f"    shard {f['shard']} {'failed' if f.get('final') else 'retrying'} "
                         f"(attempt {f.get('attempt')}): {last[0]}")
    return "\n".join(lines)


def status_json(run_dir: Path) -> str:
    return json.dumps(collect_status(run_dir), indent=2, default=str)
