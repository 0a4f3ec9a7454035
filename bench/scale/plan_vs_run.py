"""Compare an `iprox-ray plan --out PLAN.json` with what the run then measured in its run directory.

    .venv/bin/python -m bench.scale.plan_vs_run PLAN.json RUN_DIR [--job NAME] [--markdown]

Measured: store bytes = the chunk files of every sketch array (`sketch`, `sketch_ckpt<N>`) under
store.zarr; sketch seconds = summary.json's stage_seconds.sketch; pool rows / shards / tokens from
the pool store (n_tokens of the rows written OK); sketch CPU seconds = the sum of the sketch
completion markers' cpu_seconds (load-independent, unlike wall seconds); worker peak = the largest peak_rss_mib (or
peak_gpu_mib) in the sketch completion markers, against the plan's measured worker peak and the
config memory model's (`worker_peak_modelled`).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np

from iprox_ray.store.sketch_store import OK, SplitStore


def sketch_files_bytes(store: Path) -> int:
    arrays = [d for d in store.glob("**/sketch*/c") if re.fullmatch(r"sketch(_ckpt\d+)?", d.parent.name)]
    return sum(f.stat().st_size for d in arrays for f in d.rglob("*") if f.is_file())


def sketch_markers(run_dir: Path) -> list[dict]:
    return [json.loads(m.read_text()) for m in (run_dir / "completions").glob("sketch-*/*.json")]


def worker_peak_bytes(run_dir: Path) -> int:
    peaks = [info.get("peak_gpu_mib") or info.get("peak_rss_mib") or 0 for info in sketch_markers(run_dir)]
    return int(max(peaks) * 2**20) if peaks else 0


def measured(run_dir: Path) -> dict:
    store = run_dir / "store.zarr"
    pool = SplitStore.open(store, "pool", mode="r")
    written = pool.read("written")
    summary = json.loads((run_dir / "summary.json").read_text())
    markers = sketch_markers(run_dir)
    cpu = {"sketch_cpu_seconds": round(sum(m["cpu_seconds"] for m in markers), 2)} \
        if markers and all("cpu_seconds" in m for m in markers) else {}
    return {
        "rows": int(summary["rows_read"]["pool"]),
        "shards": pool.n_shards,
        "tokens": int(pool.read("n_tokens")[np.isin(written, [OK])].sum()),
        "store_bytes": sketch_files_bytes(store),
        "sketch_seconds": float(summary["stage_seconds"]["sketch"]),
        "worker_peak_bytes": worker_peak_bytes(run_dir),
        **cpu,  # the shards' CPU seconds (markers written by this version on)
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("plan")
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--job", default=None, help="label for the table (default: the plan's job name)")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    plan = json.loads(Path(args.plan).read_text())
    got = measured(args.run_dir)
    label = args.job or plan["job"]
    if args.markdown:
        print("| job | quantity | predicted | measured | ratio |\n|---|---|---:|---:|---:|")
    if plan.get("worker_peak_modelled_bytes"):  # the config's memory model (sketch/memory.py)
        plan["worker_peak_modelled"] = plan["worker_peak_modelled_bytes"]
        got["worker_peak_modelled"] = got["worker_peak_bytes"]
    for key, value in got.items():
        if plan.get(key) is None:  # not in this plan, or not timed (a plan from the config alone)
            continue
        ratio = plan[key] / value if value else float("nan")
        if args.markdown:
            print(f"| {label} | {key} | {plan[key]:,} | {value:,} | {ratio:.2f} |")
        else:
            print(f"{label:<12} {key:<18} {plan[key]:>16,} {value:>16,} {ratio:6.2f}")
    if plan.get("sketch_seconds_idle") is not None and plan.get("sketch_timing"):
        print(f"(idle-CPU prediction {plan['sketch_seconds_idle']:.1f} s; the timed batches got "
              f"{plan['sketch_timing']['cpu_share']:.0%} of the worker's threads)")


if __name__ == "__main__":
    main()
