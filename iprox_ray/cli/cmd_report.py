"""`iprox-ray report RUN_DIR`: the run as one self-contained HTML page (also written at a run's end)."""

from __future__ import annotations

from pathlib import Path

from iprox_ray.cli.common import known_failures


def register(sub) -> None:
    parser = sub.add_parser("report", help="write a self-contained HTML report of a run directory (finished or not)")
    parser.add_argument("run_dir")
    parser.add_argument("--out", help="where to write it (default: RUN_DIR/report.html)")
    parser.add_argument("--examples", type=int, default=10, metavar="N",
                        help="rows per example table: top, bottom and just below the cut (default 10)")
    parser.set_defaults(handler=handle)


def handle(args) -> int:
    from iprox_ray.report import write_report

    with known_failures():
        path = write_report(Path(args.run_dir), Path(args.out) if args.out else None, max(0, args.examples))
    print(f"report: {path}")
    return 0
