"""`iprox-ray run JOB.toml`: the whole pipeline on the embedded (or given) Ray cluster."""

from __future__ import annotations

from iprox_ray.cli.common import add_job_arguments, job_from_args


def register(sub) -> None:
    parser = sub.add_parser("run", help="run a job end to end (resumes an interrupted run)")
    add_job_arguments(parser)
    parser.add_argument("--force-new", action="store_true",
                        help="if the run directory holds another config's run, move it aside and start anew")
    parser.add_argument("--break-lock", action="store_true",
                        help="take over the run directory's lock even if its owner may be alive")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    parser.set_defaults(handler=handle)


def handle(args) -> int:
    from iprox_ray.cli.main import KnownFailure, known_errors
    from iprox_ray.pipeline import run_job

    job = job_from_args(args)
    try:
        run_job(job, args.run_dir, force_new=args.force_new, quiet=args.quiet,
                break_lock=args.break_lock)
    except known_errors() as exc:
        raise KnownFailure(str(exc)) from exc
    return 0
