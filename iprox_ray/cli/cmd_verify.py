"""`iprox-ray verify RUN_DIR [--repair]`: check every finished shard against its digest."""

from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    parser = sub.add_parser("verify", help="check finished shards against their digests (and repair)")
    parser.add_argument("run_dir")
    parser.add_argument("--repair", action="store_true",
                        help="forget damaged shards (marker and rows) so that the next run redoes only them")
    parser.set_defaults(handler=handle)


def handle(args) -> int:
    from iprox_ray.cli.common import known_failures
    from iprox_ray.driver.rundir import locked_run
    from iprox_ray.store.layout import RunLayout
    from iprox_ray.store.verify import format_report, verify_run

    run_dir = Path(args.run_dir)
    with known_failures():
        if args.repair:  # no run (nor array group) may write while shards are being forgotten
            if not RunLayout(run_dir).config.exists():
                raise FileNotFoundError(f"{run_dir} is not a run directory (no config.json)")
            with locked_run(RunLayout(run_dir)):
                report = verify_run(run_dir, repair=True)
        else:
            report = verify_run(run_dir)
    print(format_report(report))
    return 0 if report.ok or args.repair else 1
