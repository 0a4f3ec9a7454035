"""`iprox-ray plan JOB.toml [--cluster PROFILE] [--json]`: predict rows, tokens, store size, stage
seconds and memory before submitting, from a timed sample on this machine."""

from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    parser = sub.add_parser("plan", help="predict a job's rows, tokens, store size, seconds and memory")
    parser.add_argument("job", help="job spec TOML")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a spec value, e.g. --set sketch.token_budget=2048 (repeatable)")
    parser.add_argument("--cluster", help="cluster profile TOML (overrides the job's [cluster].profile)")
    parser.add_argument("--run-dir", help="run (or reuse) the warm-up and proxy stages in this run directory and "
                                          "time the model the sketch stage will use; without it nothing is written")
    parser.add_argument("--sample-rows", type=int, default=256, help="rows tokenised per split (default 256)")
    parser.add_argument("--batches", type=int, default=4, help="batches timed per pass (default 4)")
    parser.add_argument("--json", action="store_true", help="print the plan as one JSON object")
    parser.add_argument("--out", help="also save the plan as JSON to this file")
    parser.set_defaults(handler=handle)


def handle(args) -> int:
    import json

    from iprox_ray.cli.common import known_failures
    from iprox_ray.cost.plan import plan_job
    from iprox_ray.cost.result import format_plan
    from iprox_ray.spec import SpecError, load_job

    if args.sample_rows < 1 or args.batches < 1:
        raise SpecError("--sample-rows and --batches must be at least 1")
    job = load_job(args.job, args.overrides, args.cluster)
    with known_failures():
        plan = plan_job(job, Path(args.run_dir) if args.run_dir else None, args.sample_rows, args.batches,
                        profile=args.cluster or "")
    if args.out:
        plan.save(Path(args.out))
    print(json.dumps(plan.to_dict(), indent=2) if args.json else format_plan(plan))
    return 0
