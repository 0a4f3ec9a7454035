"""`iprox-ray` command line: one sub-module per command, each with register() and handle()."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from iprox_ray.cli.common import KnownFailure
from iprox_ray.spec import SpecError

COMMANDS = ["run", "submit", "status", "plan", "proxy", "fidelity", "score", "verify", "report"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iprox-ray", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"iprox_ray.cli.cmd_{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    _quiet_libraries()
    try:
        return int(args.handler(args) or 0)
    except (SpecError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KnownFailure as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _quiet_libraries() -> None:
    # Our own progress bars say what is happening; the libraries' per-file bars are noise.
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


if __name__ == "__main__":
    sys.exit(main())
