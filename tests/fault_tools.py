"""Helpers shared by the fault-injection tests: the CLI in a fresh interpreter, clean-error checks,
byte digests of a run's outputs."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, TOKENIZER

GEMMA = REPO / "tests" / "fixtures" / "chat_templates" / "gemma-2-2b-it.jinja"  # raises on non-alternating roles


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_model_dir):
    """One uninterrupted run of the job every kill test interrupts."""
    from conftest import JOB_TEMPLATE, make_pool, write_parquet, write_target_jsonl

    root = tmp_path_factory.mktemp("reference")
    rows = make_pool(96)
    write_parquet(rows[:48], root / "data" / "pool-0.parquet")
    write_parquet(rows[48:], root / "data" / "pool-1.parquet")
    target = write_target_jsonl(root / "data" / "target.jsonl")
    text = JOB_TEMPLATE.format(model=tiny_model_dir, tokenizer=TOKENIZER, pool=f'["{root}/data/pool-*.parquet"]',
                               target=target, k=10, executor="inline", actors=1, rows_per_shard=8)
    (root / "job.toml").write_text(text)
    rc, out = cli("run", str(root / "job.toml"), "--run-dir", str(root / "run"), "-q")
    assert rc == 0, out[-3000:]
    return root


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
