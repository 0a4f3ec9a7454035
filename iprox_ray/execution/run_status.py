"""Read a run directory's progress files (works while a run is live and after it ended).

Everything comes from plain files: completion markers (rows, seconds, finish time, worker),
failure records (last error), in-flight records the driver writes when it hands a shard out,
quarantine files, the lock, and each launcher's own records (SLURM: its job records; SLURM is
asked only for job states).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow.parquet as pq

from iprox_ray.execution.launchers import every_launcher, lock_probes
from iprox_ray.store.layout import RunLayout, sketch_stage
from iprox_ray.store.lock import RunLock, describe_owner
from iprox_ray.store.markers import ShardMarkers


def _quarantined(layout: RunLayout, flat: str) -> int:
    folder = layout.quarantine_dir(flat)
    if not folder.exists():
        return 0
    return sum(pq.ParquetFile(p).metadata.num_rows for p in folder.glob("*.parquet"))


def _shard_rows(layout: RunLayout, flat: str) -> dict[int, int]:
    table = pq.read_table(layout.manifest(flat), columns=["shard_id", "row_start", "row_stop"])
    ids, starts, stops = (table.column(c).to_pylist() for c in ("shard_id", "row_start", "row_stop"))
    return {int(i): int(b) - int(a) for i, a, b in zip(ids, starts, stops)}


def _wall_rate(done: list[dict], since: float) -> float | None:
    """Rows per wall-clock second over the markers finished since `since` (all workers together)."""
    recent = [d for d in done if d.get("finished_at", 0) >= since]
    if len(recent) < 2:
        return None
    start = min(d["finished_at"] - d.get("seconds", 0.0) for d in recent)
    span = max(d["finished_at"] for d in recent) - start
    return sum(d.get("rows", 0) for d in recent) / span if span > 0 else None


def _lock_status(layout: RunLayout) -> dict | None:
    lock = RunLock(layout.lock, probes=lock_probes())
    owner = lock.owner()
    if owner is None:
        return None
    reason = lock.gone_reason(owner)
    return {**owner, "stale": reason is not None, "stale_reason": reason}


def collect_status(run_dir: Path) -> dict:
    layout = RunLayout(run_dir)
    if not layout.config.exists():
        raise FileNotFoundError(f"{run_dir} is not an iprox-ray run directory (no config.json)")
    lock = _lock_status(layout)
    live = lock is not None and not lock["stale"]
    since = lock["since"] if live else 0.0
    stages_done = sorted(p.stem for p in layout.stages_done())
    status: dict = {"run_dir": str(run_dir), "lock": lock, "live": live, "stages_done": stages_done,
                    "splits": {}}
    for flat in layout.manifest_splits():
        stage = sketch_stage(flat)
        markers = ShardMarkers(layout.completions(stage), layout.failures(stage), layout.inflight(stage))
        sizes = _shard_rows(layout, flat)
        done = markers.read_done()
        done_ids = {int(d["shard"]) for d in done}
        failures = [f for f in markers.read_failures() if int(f["shard"]) not in done_ids]
        inflight = [r for r in markers.read_inflight() if int(r["shard"]) not in done_ids]
        rate = _wall_rate(done, since)
        remaining = sum(n for s, n in sizes.items() if s not in done_ids)
        status["splits"][flat] = {
            "shards": len(sizes),
            "done": len(done_ids),
            "in_flight": inflight if live else [],
            "interrupted": [] if live else inflight,  # recorded by a driver that is gone
            "pending": len(sizes) - len(done_ids),
            "failed": [f for f in failures if f.get("final")],
            "retrying": [f for f in failures if not f.get("final")],
            "rows_done": sum(d.get("rows", 0) for d in done),
            "rows_remaining": remaining,
            "rows_per_s": rate,
            "eta_s": remaining / rate if live and rate and remaining else None,
            "quarantined": _quarantined(layout, flat),
            "workers": sorted({(d.get("worker") or {}).get("node_ip", "?") for d in done} - {"?"}),
        }
    for launcher in every_launcher():
        status.update(launcher.status(layout))
    return status


def _fmt_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _last_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[-1] if lines else ""


def format_status(status: dict) -> str:
    lines = [f"run {status['run_dir']}"]
    lock = status["lock"]
    if lock and lock["stale"]:
        lines.append(f"  lock: STALE ({lock['stale_reason']}): {describe_owner(lock)}; the next run takes it over")
    elif lock:
        lines.append(f"  lock: held by {describe_owner(lock)}")
    else:
        lines.append("  lock: free (no run active)")
    lines.append(f"  stages done: {', '.join(status['stages_done']) or 'none'}")
    now = time.time()
    for split, s in status["splits"].items():
        rate = f", {s['rows_per_s']:.1f} rows/s" if s["rows_per_s"] else ""
        eta = f", ETA {_fmt_seconds(s['eta_s'])}" if s["eta_s"] else ""
        lines.append(f"  {split}: {s['done']}/{s['shards']} shards done, {s['pending']} pending, "
                     f"{len(s['failed'])} failed, {s['quarantined']} rows quarantined, "
                     f"{len(s['in_flight'])} in flight{rate}{eta}")
        for r in s["in_flight"]:
            lines.append(f"    shard {r['shard']} in flight for {_fmt_seconds(now - r['started_at'])} "
                         f"(attempt {r.get('attempt')}, worker {r.get('worker')})")
        for r in s["interrupted"]:
            lines.append(f"    shard {r['shard']} was in flight when its driver stopped; it will be redone")
        for f in s["failed"] + s["retrying"]:
            lines.append(f"    shard {f['shard']} {'failed' if f.get('final') else 'retrying'} "
                         f"(attempt {f.get('attempt')}): {_last_line(f.get('error'))}")
    for launcher in every_launcher():
        lines.extend(launcher.status_lines(status))
    return "\n".join(lines)


def status_json(run_dir: Path) -> str:
    return json.dumps(collect_status(run_dir), indent=2, default=str)
