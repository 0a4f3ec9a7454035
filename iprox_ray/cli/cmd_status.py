"""`iprox-ray status RUN_DIR`: shards done / in flight / failed, rows/s and ETA, quarantine counts,
lock owner, SLURM jobs and their states."""

from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    parser = sub.add_parser("status", help="progress of a run directory (live or finished)")
    parser.add_argument("run_dir")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(handler=handle)


def handle(args) -> int:
    from iprox_ray.execution.run_status import collect_status, format_status, status_json

    run_dir = Path(args.run_dir)
    print(status_json(run_dir) if args.json else format_status(collect_status(run_dir)))
    return 0
