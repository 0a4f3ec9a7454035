"""`iprox-ray` command line: one sub-module per command, each with register() and handle()."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

from iprox_ray.cli.common import KnownFailure
from iprox_ray.spec import SpecError

COMMANDS = ["run", "submit", "status", "plan", "proxy", "fidelity", "score", "verify", "report"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iprox-ray", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true",
                        help="print the full traceback of an error (by default: one line, and where it was written)")
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
        return _report(args, exc, 2)
    except KnownFailure as exc:
        return _report(args, exc, 1)
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not a problem with the inputs: one line, the traceback in a file
        if args.debug:
            raise
        where = _save_traceback(args, exc)
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        print(f"error: internal error ({type(exc).__name__}: {first}); the full traceback is in {where} "
              "(--debug prints it)", file=sys.stderr)
        return 1


def _report(args: argparse.Namespace, exc: BaseException, code: int) -> int:
    """A failure whose message is the whole story: one `error:` line (its traceback with --debug)."""
    if args.debug:
        traceback.print_exception(exc.__cause__ or exc, file=sys.stderr)
    print(f"error: {exc}", file=sys.stderr)
    return code


def _save_traceback(args: argparse.Namespace, exc: BaseException) -> str:
    """Write the traceback into the run directory's errors/ (when the command names one), else into
    a private file in the system's temporary folder; returns where."""
    from iprox_ray.store.layout import RunLayout

    text = "".join(traceback.format_exception(exc))
    run_dir = getattr(args, "run_dir", None)
    layout = RunLayout(Path(run_dir)) if run_dir else None
    try:
        if layout is not None and layout.config.exists():
            layout.errors_dir.mkdir(parents=True, exist_ok=True)
            path = layout.errors_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
            path.write_text(text)
            return str(path)
        fd, name = tempfile.mkstemp(prefix="iprox-ray-error-", suffix=".txt")  # mode 0600
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        return name
    except OSError:
        print(text, file=sys.stderr)  # nowhere to write it: print it rather than lose it
        return "the lines above"


def _quiet_libraries() -> None:
    # Our own progress bars say what is happening; the libraries' per-file bars are noise.
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


if __name__ == "__main__":
    sys.exit(main())
