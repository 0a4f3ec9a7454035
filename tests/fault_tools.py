"""Helpers shared by the fault-injection tests: the CLI in a fresh interpreter, clean-error checks,
byte digests of a run's outputs."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from conftest import REPO

GEMMA = REPO / "tests" / "fixtures" / "chat_templates" / "gemma-2-2b-it.jinja"  # raises on non-alternating roles


def cli(*args: str) -> tuple[int, str]:
    """Run the CLI in a fresh interpreter; (exit code, stdout + stderr)."""
    proc = subprocess.run([sys.executable, "-m", "iprox_ray.cli.main", *args], capture_output=True, text=True,
                          timeout=600, cwd=REPO)
    return proc.returncode, proc.stdout + proc.stderr


def assert_clean_error(rc: int, out: str, *phrases: str) -> None:
    assert rc != 0, out[-2000:]
    assert "Traceback" not in out, out[-3000:]
    for phrase in phrases:
        assert phrase in out, out[-2000:]


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def run_outputs(run_dir: Path) -> tuple[dict, bytes]:
    return tree_digest(run_dir / "store.zarr"), (run_dir / "selections/main/selection.parquet").read_bytes()
