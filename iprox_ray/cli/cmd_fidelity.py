"""`iprox-ray fidelity JOB.toml`: does the proxy rank data like the target? (before the GPU hours)"""

from __future__ import annotations

from iprox_ray.cli.common import add_run_arguments, opened_run


def register(sub) -> None:
    parser = sub.add_parser("fidelity", help="influence agreement of the proxy with the target on a probe sample")
    add_run_arguments(parser)
    parser.set_defaults(handler=handle)


def handle(args) -> int:
    from iprox_ray.driver.pipeline import build_models, check_fidelity
    from iprox_ray.driver.run import Run

    with opened_run(args) as ctx:
        run = Run(ctx)
        warmed, ref = build_models(run)
        check_fidelity(run, warmed, ref)
    return 0
