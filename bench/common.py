"""Shared pieces of the sketch benchmarks: models from configs, seeded rows, timers, floors."""

from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path

import numpy as np
import torch
from transformers import LlamaConfig

from iprox_ray.corpus.batching import plan_batches
from iprox_ray.models.loading import random_init
from iprox_ray.sketch.capture import HookSketcher
from iprox_ray.sketch.loss import per_sample_loss

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "out"
TOKENIZER = REPO / "iprox_ray" / "demo" / "assets" / "tokenizer"
VOCAB = 4096  # the demo tokenizer's

CONFIGS = {  # name: (layers, hidden, intermediate, heads, kv heads)
    "5m": (4, 192, 768, 4, 4),
    "7m": (4, 256, 1024, 4, 4),
    "30m": (8, 512, 1408, 8, 8),
}


# What these benchmarks batch with where a SketchSpec says "auto" (the run's memory-fitted budget,
# stages/sketch_budget.py): the former default, so their figures stay comparable. The environment's
# IPROX_BENCH_TOKEN_BUDGET lowers it when two benchmarks share the machine (~2 GB per 1,024 tokens
# on SmolLM2-135M); a sketch does not depend on how rows are batched.
BENCH_TOKEN_BUDGET = int(os.environ.get("IPROX_BENCH_TOKEN_BUDGET", 8192))


def bench_budget(spec) -> int:
    return BENCH_TOKEN_BUDGET if spec.token_budget == "auto" else spec.token_budget


def llama_config(name: str, max_positions: int = 8192) -> LlamaConfig:
    layers, hidden, inter, heads, kv = CONFIGS[name]
    return LlamaConfig(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                       num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=max_positions,
                       tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0)


def make_model(name: str, seed: int = 0, attn: str = "sdpa") -> torch.nn.Module:
    return random_init(llama_config(name), seed, attn=attn)


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def make_rows(n: int = 512, lo: int = 128, hi: int = 256, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(3, VOCAB, size=int(rng.integers(lo, hi + 1))) for _ in range(n)]


def batches(rows: list[np.ndarray], token_budget: int, max_rows: int = 512):
    """Length-sorted, token-budget batches as (ids, attention_mask, trainable=all real tokens)."""
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


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_sketcher(sketcher, batch_list) -> None:
    for ids, mask, train in batch_list:
        sketcher.sketch(ids, mask, train).sketch.numpy()


class NullSketcher(HookSketcher):
    """The same capture machinery with no projection work: our approach's own floor."""

    @property
    def matrix_dim(self) -> int:
        return 1

    def _capture(self, name, x):
        return None

    def _accumulate(self, name, kept, grad, rows):
        return None


def naive_floor(model, batch_list) -> None:
    """Forward with full logits + activation-only backward down to the embeddings (weights frozen)."""
    for p in model.parameters():
        p.requires_grad_(False)
    for ids, mask, train in batch_list:
        embeds = model.get_input_embeddings()(ids).detach().requires_grad_(True)
        logits = model(inputs_embeds=embeds, attention_mask=mask).logits
        per_sample_loss(logits, ids, train).sum().backward()


def weight_grad_pass(model, batch_list) -> None:
    """A plain padded batched forward+backward with weight gradients (a training step's work)."""
    for p in model.parameters():
        p.requires_grad_(True)
    for ids, mask, train in batch_list:
        model.zero_grad(set_to_none=True)
        logits = model(input_ids=ids, attention_mask=mask).logits
        per_sample_loss(logits, ids, train).sum().backward()
    for p in model.parameters():
        p.requires_grad_(False)


def write_result(name: str, result: dict) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def load_average() -> list[float]:
    return [round(x, 2) for x in __import__("os").getloadavg()]
