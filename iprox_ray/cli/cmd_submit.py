"""`iprox-ray submit JOB.toml --cluster cluster/NAME.toml`: the job on SLURM, through submitit."""

from __future__ import annotations

from iprox_ray.cli.common import add_job_arguments, job_from_args, known_failures


def register(sub) -> None:
    parser = sub.add_parser("submit", help="run a job on SLURM (gang or array mode, from the cluster profile)")
    add_job_arguments(parser)
    parser.add_argument("--wait", action="store_true", help="block until the job ends; print its summary")
    parser.add_argument("--force-new", action="store_true",
                        help="if the run directory holds another config's run, move it aside and start anew")
    parser.add_argument("--break-lock", action="store_true",
                        help="submit even if the run directory is locked or has live SLURM jobs")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output in the job logs")
    parser.set_defaults(handler=handle)


def handle(args) -> int:
    from iprox_ray.driver.submission import SubmitError, describe, submit, wait
    from iprox_ray.spec import SpecError

    job = job_from_args(args)
    if job.cluster.kind != "slurm":
        raise SpecError(f"cluster.kind is {job.cluster.kind!r}; `submit` needs a SLURM profile "
                        "(--cluster cluster/NAME.toml with kind = \"slurm\"); `iprox-ray run` runs locally")
    with known_failures(SubmitError):
        jobs = submit(job, args.run_dir, force_new=args.force_new, break_lock=args.break_lock, quiet=args.quiet)
        print(describe(jobs), flush=True)
        if args.wait:
            summary = wait(jobs)
            print(f"finished: {summary.get('selected')} rows selected -> {summary.get('selection')}")
    return 0
