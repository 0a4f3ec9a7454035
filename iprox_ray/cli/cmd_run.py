"""`iprox-ray run JOB.toml`: the whole pipeline on the embedded (or given) Ray cluster."""

from __future__ import annotations

from iprox_ray.cli.common import add_run_arguments, job_from_args, known_failures


def register(sub) -> None:
    parser = sub.add_parser("run", help="run a job end to end (resumes an interrupted run)")
    add_run_arguments(parser)
    parser.add_argument("--break-lock", action="store_true",
                        help="take over the run directory's lock even if its owner may be alive")
    parser.set_defaults(handler=handle)


def handle(args) -> int:
    from iprox_ray.driver.pipeline import run_job

    with known_failures():
        run_job(job_from_args(args), args.run_dir, force_new=args.force_new, quiet=args.quiet,
                break_lock=args.break_lock)
    return 0
