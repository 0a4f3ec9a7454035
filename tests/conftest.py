"""Shared fixtures: tiny models from configs, small corpora built on the fly, job files."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "iprox_ray" / "demo" / "assets"
TOKENIZER = ASSETS / "tokenizer"


def arithmetic_row(rng: random.Random, i: int, prefix: str = "a") -> dict:
    a, b = rng.randint(2, 99), rng.randint(2, 99)
    return {
        "id": f"{prefix}{i}",
        "domain": "arithmetic",
        "messages": [
            {"role": "user", "content": f"Sam has {a} apples and buys {b} more. How many apples now?"},
            {"role": "assistant", "content": f"{a} + {b} = {a + b}. The answer is {a + b}."},
        ],
    }


def prose_row(rng: random.Random, i: int) -> dict:
    import pydoc_data.topics as topics

    names = sorted(topics.topics)
    name = names[(i * 7) % len(names)]
    text = " ".join(topics.topics[name].split())[: rng.randint(150, 400)]
    return {
        "id": f"t{i}",
        "domain": "python_topics",
        "messages": [
            {"role": "user", "content": f"Explain the Python topic {name!r}."},
            {"role": "assistant", "content": text},
        ],
    }


def make_pool(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [arithmetic_row(rng, i) if i % 2 == 0 else prose_row(rng, i) for i in range(n)]


def write_parquet(rows: list[dict], path: Path, row_group_size: int = 64) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=row_group_size)
    return path


def write_target_jsonl(path: Path, n: int = 12, seed: int = 99) -> Path:
    rng = random.Random(seed)
    with open(path, "w") as fh:
        for i in range(n):
            row = arithmetic_row(rng, i, prefix="q")
            fh.write(json.dumps({"id": row["id"], "prompt": row["messages"][0]["content"],
                                 "response": row["messages"][1]["content"]}) + "\n")
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """The demo Llama config shrunk further: 2 layers, hidden 64."""
    folder = tmp_path_factory.mktemp("tiny-model")
    config = json.loads((ASSETS / "model" / "config.json").read_text())
    config.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


JOB_TEMPLATE = """
[run]
name = "t"
seed = 0
[model]
path = "{model}"
tokenizer = "{tokenizer}"
init = "random"
[data]
max_length = 192
[data.pool]
paths = {pool}
id_column = "id"
domain_column = "domain"
rows_per_shard = {rows_per_shard}
[data.target]
paths = ["{target}"]
id_column = "id"
rows_per_shard = 8
[warmup]
fraction = 0.1
lr = 1e-3
[proxy]
method = "ipsvd"
rank_multiple = 8
construction_fraction = 0.2
min_probe_rows = 4
[sketch]
proj_in = 4
proj_out = 4
[selection]
k = {k}
[cluster]
executor = "{executor}"
actors = {actors}
"""


@pytest.fixture
def make_job(tmp_path, tiny_model_dir):
    """Write a small job (pool of `n_pool` rows in two Parquet files) and return its path."""

    def build(n_pool: int = 96, k: int = 10, executor: str = "inline", actors: int = 1,
              rows_per_shard: int = 16, extra: str = "", pool_rows: list[dict] | None = None) -> Path:
        rows = pool_rows if pool_rows is not None else make_pool(n_pool)
        half = len(rows) // 2
        write_parquet(rows[:half], tmp_path / "data" / "pool-0.parquet")
        write_parquet(rows[half:], tmp_path / "data" / "pool-1.parquet")
        target = write_target_jsonl(tmp_path / "data" / "target.jsonl")
        text = JOB_TEMPLATE.format(model=tiny_model_dir, tokenizer=TOKENIZER, pool='["data/pool-*.parquet"]',
                                   target=target, k=k, executor=executor, actors=actors,
                                   rows_per_shard=rows_per_shard)
        path = tmp_path / "job.toml"
        path.write_text(text + extra)
        return path

    return build
