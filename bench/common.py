"""Helpers shared by the benchmarks: paths, the benchmarks' token budget, random-init models and
seeded rows, timers and memory figures, a FLOP counter.

Run the benchmarks as modules from the repository root (`python -m bench.micro.sketch_throughput`,
bench/README.md); they import this module as `bench.common`. Real-model helpers are in
`bench.real.common`, the scale benchmark's synthetic pool in `bench.scale.common`.

Only the standard library and numpy are imported here at module level: the helpers that need
torch, transformers or the product import them when called. Several benchmarks measure a fresh
process's own peak RSS (activation memory, sketch throughput, top-k), and importing this module
must not add torch to a process that would not load it otherwise.
"""

from __future__ import annotations

import functools
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "out"  # a symlink to the ignored output folder: cached results live there
REAL = OUT / "real"  # the real model, its corpus and the real-model results (bench/real/)
TOKENIZER = REPO / "iprox_ray" / "demo" / "assets" / "tokenizer"
VOCAB = 4096  # the demo tokenizer's

CONFIGS = {  # name: (layers, hidden, intermediate, heads, kv heads)
    "5m": (4, 192, 768, 4, 4),
    "7m": (4, 256, 1024, 4, 4),
    "30m": (8, 512, 1408, 8, 8),
}


# What these benchmarks batch with where a SketchSpec says "auto" (the run's memory-fitted budget,
# tasks/sketch_budget.py): the former default, so their figures stay comparable. The environment's
# IPROX_BENCH_TOKEN_BUDGET lowers it when two benchmarks share the machine (~2 GB per 1,024 tokens
# on SmolLM2-135M); a sketch does not depend on how rows are batched.
BENCH_TOKEN_BUDGET = int(os.environ.get("IPROX_BENCH_TOKEN_BUDGET", 8192))


def bench_budget(spec) -> int:
    return BENCH_TOKEN_BUDGET if spec.token_budget == "auto" else spec.token_budget


def module_command(module: str, *args: str) -> list[str]:
    """`python -m module args...` with this interpreter: a benchmark re-run in a fresh process (so
    that its peak RSS is its own). The child inherits the working directory and PYTHONPATH that let
    this process import `bench`."""
    return [sys.executable, "-m", module, *args]


# Random-init models and seeded rows of the sketch micro-benchmarks.


def llama_config(name: str, max_positions: int = 8192):
    from transformers import LlamaConfig

    layers, hidden, inter, heads, kv = CONFIGS[name]
    return LlamaConfig(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                       num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=max_positions,
                       tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0)


def make_model(name: str, seed: int = 0, attn: str = "sdpa"):
    from iprox_ray.models.loading import random_init

    return random_init(llama_config(name), seed, attn=attn)


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def make_rows(n: int = 512, lo: int = 128, hi: int = 256, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(3, VOCAB, size=int(rng.integers(lo, hi + 1))) for _ in range(n)]


def batches(rows: list[np.ndarray], token_budget: int, max_rows: int = 512):
    """Length-sorted, token-budget batches as (ids, attention_mask, trainable=all real tokens)."""
    import torch

    from iprox_ray.corpus.batching import plan_batches

    out = []
    for plan in plan_batches([len(r) for r in rows], token_budget, max_rows):
        width = max(len(rows[i]) for i in plan)
        ids = torch.zeros(len(plan), width, dtype=torch.long)
        mask = torch.zeros(len(plan), width, dtype=torch.long)
        for b, i in enumerate(plan):
            ids[b, : len(rows[i])] = torch.from_numpy(rows[i])
            mask[b, : len(rows[i])] = 1
        out.append((ids, mask, mask.bool()))
    return out


def n_tokens(batch_list) -> int:
    return int(sum(int(m.sum()) for _, m, _ in batch_list))


def run_sketcher(sketcher, batch_list) -> None:
    for ids, mask, train in batch_list:
        sketcher.sketch(ids, mask, train).sketch.numpy()


# Timers, memory, results.


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_result(name: str, result: dict) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# FLOPs.


@functools.cache
def _flop_count_class():
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    class FlopCount(TorchDispatchMode):
        """Total FLOPs of the ops torch's flop registry knows (matmuls, convolutions, attention).
        Not FlopCounterMode: its module tracker's backward hooks break autograd.grad on leaves."""

        def __init__(self):
            super().__init__()
            self.total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            count = flop_registry.get(func.overloadpacket)
            if count is not None:
                self.total += count(*args, **kwargs, out_val=out)
            return out

    return FlopCount


def flop_count():
    """A dispatch mode that adds up the FLOPs run under it: `with flop_count() as counter: ...`,
    then `counter.total` (torch's flop registry; the class is built on the first call so that
    importing this module does not import torch)."""
    return _flop_count_class()()
