"""`iprox-ray score RUN_DIR --target FILE`: a new target set against a finished run's pool."""

from __future__ import annotations

from pathlib import Path

from iprox_ray.cli.common import known_failures


def register(sub) -> None:
    parser = sub.add_parser("score",
                            help="score a new target set against a finished run's pool (sketches only the target)")
    parser.add_argument("run_dir", help="a run directory whose pool is finished")
    parser.add_argument("--target", nargs="+", required=True, metavar="PATH",
                        help="target files / globs / save_to_disk folders (read with the run's data.target columns)")
    parser.add_argument("--name",
                        help="target name: store group targets/<name>, selections/<name>/ (default: file stem)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override data.target.*, selection.* or scoring settings that do not touch the pool")
    parser.add_argument("--cluster", help="cluster profile TOML (default: the run's)")
    parser.add_argument("--force", action="store_true", help="replace a target of this name scored with other settings")
    parser.add_argument("--break-lock", action="store_true", help="take over the run directory's lock")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    parser.set_defaults(handler=handle)


def handle(args) -> int:
    from iprox_ray.driver.rescore import RescoreError, score_target

    with known_failures(RescoreError):
        score_target(Path(args.run_dir), args.target, args.name, args.overrides, force=args.force, quiet=args.quiet,
                     break_lock=args.break_lock, cluster_profile=args.cluster)
    return 0
