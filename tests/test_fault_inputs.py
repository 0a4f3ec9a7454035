"""Fault injection, inputs: every quarantine reason counted with its row, and each file-level
failure (no match, corrupt or unknown files, missing model parts, no usable target) a one-line
error naming the file."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import TOKENIZER, arithmetic_row
from fault_tools import GEMMA, assert_clean_error, cli


@pytest.fixture
def job(make_job):
    return make_job(n_pool=96, rows_per_shard=8)


# ---------------------------------------------------------------- rows and files


def _bad_rows_pool(path: Path) -> dict[str, int]:
    """A JSONL pool of good rows plus one or two rows per quarantine reason; returns reason counts."""
    import random

    rng = random.Random(0)
    good = [arithmetic_row(rng, i) for i in range(24)]
    ok = good[0]["messages"]
    lines = [json.dumps(r).encode() for r in good]
    bad = {
        "malformed-json": [b"{not json", b""],
        "non-utf8": [b'{"id": "u1", "messages": [{"role": "user", "content": "caf\xff"}]}'],
        "bad-messages": [json.dumps({"id": "b1", "messages": "hello"}).encode(),
                         json.dumps({"id": "b2", "messages": [{"role": "robot", "content": "x"}, ok[1]]}).encode()],
        "missing-column": [json.dumps({"id": "m1"}).encode(), json.dumps({"messages": ok}).encode()],
        "bad-type": [json.dumps({"id": "t1", "messages": [{"role": "user", "content": 5}, ok[1]]}).encode()],
        "no-assistant": [json.dumps({"id": "n1", "messages": [ok[0]]}).encode()],
        "empty-text": [json.dumps({"id": "e1", "messages": [ok[0], {"role": "assistant", "content": "  "}]}).encode()],
        "no-trainable-tokens": [json.dumps({"id": "l1", "messages": [
            {"role": "user", "content": "count " * 400}, ok[1]]}).encode()],
        "template-error": [json.dumps({"id": "r1", "messages": [ok[0], ok[0], ok[1]]}).encode()],
        "duplicate-id": [json.dumps(good[3]).encode()],
    }
    for reason_lines in bad.values():
        lines += reason_lines
    path.write_bytes(b"\n".join(lines) + b"\n")
    return {reason: len(v) for reason, v in bad.items()}


def test_every_quarantine_reason_is_counted_with_its_row(job, tmp_path):
    tok = tmp_path / "tokenizer"
    shutil.copytree(TOKENIZER, tok)
    config = json.loads((tok / "tokenizer_config.json").read_text())
    config["chat_template"] = GEMMA.read_text()
    (tok / "tokenizer_config.json").write_text(json.dumps(config))
    (tok / "chat_template.jinja").unlink(missing_ok=True)
    want = _bad_rows_pool(tmp_path / "data" / "pool.jsonl")
    run_dir = tmp_path / "run"
    rc, out = cli("run", str(job), "--run-dir", str(run_dir), "-q", "--set", f'model.tokenizer="{tok}"',
                  "--set", f'data.pool.paths=["{tmp_path}/data/pool.jsonl"]')
    assert rc == 0, out[-3000:]
    table = pq.read_table(run_dir / "quarantine.parquet").to_pylist()
    pool = [r for r in table if r["split"] == "pool"]
    got: dict[str, int] = {}
    for r in pool:
        got[r["reason"]] = got.get(r["reason"], 0) + 1
    assert got == want
    assert all(r["file"].endswith("pool.jsonl") and r["detail"] for r in pool)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rows_quarantined"]["pool"] == sum(want.values())
    assert f"pool: {24 + sum(want.values())} rows read, {sum(want.values())} quarantined" in out
    for reason, n in want.items():
        assert f"pool:{reason}: {n}" in out


def test_too_long_rows_are_quarantined_when_truncation_drops(job, tmp_path):
    import random

    rng = random.Random(1)
    rows = [arithmetic_row(rng, i) for i in range(20)]
    rows[5]["messages"][1]["content"] = "and so on " * 200
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    rc, out = cli("run", str(job), "--run-dir", str(tmp_path / "run"), "-q", "--set", 'data.truncation="drop"',
                  "--set", f'data.pool.paths=["{tmp_path}/data/pool.jsonl"]')
    assert rc == 0, out[-3000:]
    assert "pool:too-long: 1" in out


def _write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


@pytest.mark.parametrize("case", ["no-match", "corrupt-parquet", "unknown-format", "empty", "bare-folder",
                                  "no-model", "no-tokenizer", "no-weights", "no-usable-target"])
def test_file_level_failures_are_one_line_errors_naming_the_file(job, tmp_path, case):
    sets: list[str] = []
    if case == "no-match":
        sets, phrases = ['data.pool.paths=["nowhere/*.parquet"]'], ["no input matches 'nowhere/*.parquet'"]
    elif case == "corrupt-parquet":
        bad = _write(tmp_path / "data" / "bad.parquet", os.urandom(300))
        sets, phrases = [f'data.pool.paths=["{bad}"]'], [f"cannot read input file {bad}"]
    elif case == "unknown-format":
        bad = _write(tmp_path / "data" / "pool.xlsx", "x")
        sets, phrases = [f'data.pool.paths=["{bad}"]'], ["cannot tell the format of", "format = 'parquet'"]
    elif case == "empty":
        bad = _write(tmp_path / "data" / "empty.jsonl", "")
        sets, phrases = [f'data.pool.paths=["{bad}"]'], ["the inputs hold no rows", str(bad)]
    elif case == "bare-folder":
        (tmp_path / "data" / "folder").mkdir(parents=True)
        sets, phrases = [f'data.pool.paths=["{tmp_path}/data/folder"]'], ["not a datasets.save_to_disk folder"]
    elif case == "no-model":
        sets = [f'model.path="{tmp_path}/missing-model"']
        phrases = [f"model folder {tmp_path}/missing-model does not exist"]
    elif case == "no-tokenizer":
        sets = [f'model.tokenizer="{tmp_path}/missing-tok"']
        phrases = [f"tokenizer folder {tmp_path}/missing-tok does not exist"]
    elif case == "no-weights":
        sets, phrases = ['model.init="pretrained"'], ["has no weight files", "model.init = 'random'"]
    else:
        _write(tmp_path / "data" / "target.jsonl", json.dumps({"id": "x", "prompt": "", "response": ""}) + "\n")
        phrases = ["no usable row in split 'targets/main'", "empty-text: 1"]
    args = ["run", str(job), "--run-dir", str(tmp_path / "run"), "-q"]
    for item in sets:
        args += ["--set", item]
    rc, out = cli(*args)
    assert_clean_error(rc, out, "error:", *phrases)
