"""Arguments shared by commands that take a job spec."""

from __future__ import annotations

import argparse
import contextlib

from iprox_ray.spec import JobSpec, load_job


def add_job_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", help="job spec TOML")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a spec value, e.g. --set selection.k=100 (repeatable)")
    parser.add_argument("--cluster", help="cluster profile TOML (overrides the job's [cluster].profile)")
    parser.add_argument("--run-dir", help="run directory (default: the job's run.dir or runs/<name>)")


def job_from_args(args: argparse.Namespace) -> JobSpec:
    from iprox_ray.driver.run import check_names

    job = load_job(args.job, args.overrides, args.cluster)
    check_names(job)
    return job


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Job arguments plus what every command that opens a run directory takes."""
    add_job_arguments(parser)
    parser.add_argument("--force-new", action="store_true",
                        help="if the run directory holds another config's run, move it aside and start anew")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")


class KnownFailure(Exception):
    """Errors whose message is the whole story (no traceback wanted)."""


def known_errors() -> tuple[type[BaseException], ...]:
    from iprox_ray.corpus.manifest import ManifestMismatchError
    from iprox_ray.corpus.sources import CorpusError
    from iprox_ray.driver.rundir import RunMismatchError
    from iprox_ray.execution.task import ShardFailed, WorkersLostError
    from iprox_ray.stages.preflight import NoUsableRowsError
    from iprox_ray.store.digest import StoreDamagedError
    from iprox_ray.store.lock import RunLockedError
    from iprox_ray.store.sketch_store import StoreMismatchError

    return (ManifestMismatchError, CorpusError, ShardFailed, RunMismatchError, RunLockedError, StoreMismatchError,
            NoUsableRowsError, StoreDamagedError, WorkersLostError)


# Here, not in main.py: `python -m iprox_ray.cli.main` runs main.py as __main__, a second module
# whose KnownFailure class would not be the one raised.
@contextlib.contextmanager
def known_failures(*extra: type[BaseException]):
    """Errors whose message is the whole story (known ones, and a command's `extra`) become a
    one-line `error:` and exit code 1."""
    try:
        yield
    except (*extra, *known_errors()) as exc:
        raise KnownFailure(str(exc)) from exc


@contextlib.contextmanager
def opened_run(args: argparse.Namespace):
    """The run directory of a command's job, opened (locked, config checked) with known failures reported."""
    from iprox_ray.driver.rundir import open_run

    with known_failures(), open_run(job_from_args(args), args.run_dir, args.force_new, args.quiet) as ctx:
        yield ctx
