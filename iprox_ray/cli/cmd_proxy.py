"""`iprox-ray proxy JOB.toml`: build (or reuse) the run's proxy alone and describe it."""

from __future__ import annotations

import json

from iprox_ray.cli.common import add_run_arguments, opened_run


def register(sub) -> None:
    parser = sub.add_parser("proxy", help="build the proxy (warm-up first if needed) without sketching")
    add_run_arguments(parser)
    parser.set_defaults(handler=handle)


def handle(args) -> int:
    from iprox_ray.driver.pipeline import build_models
    from iprox_ray.driver.run import Run
    from iprox_ray.proxy.artifact import read_manifest

    with opened_run(args) as ctx:
        _, ref = build_models(Run(ctx))
    if ref.kind == "proxy":
        info = read_manifest(ref.path)
        ranks = [layer["rank"] for layer in info.pop("layers")]
        print(json.dumps({**info, "path": str(ref.path), "factored_layers": sum(1 for r in ranks if r)},
                         indent=2, default=str))
    else:
        print(f"proxy: {ref.kind} model at {ref.path}")
    return 0
