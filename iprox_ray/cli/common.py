"""Arguments shared by commands that take a job spec."""

from __future__ import annotations

import argparse

from iprox_ray.spec import JobSpec, load_job


def add_job_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", help="job spec TOML")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a spec value, e.g. --set selection.k=100 (repeatable)")
    parser.add_argument("--cluster", help="cluster profile TOML (overrides the job's [cluster].profile)")
    parser.add_argument("--run-dir", help="run directory (default: the job's run.dir or runs/<name>)")


def job_from_args(args: argparse.Namespace) -> JobSpec:
    return load_job(args.job, args.overrides, args.cluster)
