"""JVP embedding throughput: torch's softmax rule vs the cheap one vs a plain forward.

The sides run on the same model, batch and thread count, measured side by side in one process.
The sides alternate within each repeat, and the median over `--repeats` is kept:
  - forward: a plain forward (no AD) through the first B blocks, stopped there as the JVP is;
  - jvp, torch rule: JvpEmbedder with torch's own forward-mode softmax rule;
  - jvp, cheap rule: JvpEmbedder as the embed stage runs it (sketch/softmax_jvp.py).
The model is the demo's random-init Llama, or `--model DIR` (a config folder).
The batch is `--rows` seeded rows of random tokens (bench/common.py), lengths uniform in [len/4, len],
right-padded.

    .venv/bin/python -m bench.micro.jvp_embed [--blocks 1] [--tangents 2] [--rows 16] [--len 256] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from bench.common import REPO, VOCAB, batches, make_rows, timed
from iprox_ray.models.loading import load_config, random_init
from iprox_ray.sketch.jvp import JvpEmbedder
from iprox_ray.spec.scoring import DEFAULT_BLOCK_PATTERNS

DEMO_MODEL = REPO / "iprox_ray" / "demo" / "assets" / "model"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, default=DEMO_MODEL)
    ap.add_argument("--blocks", type=int, default=1)
    ap.add_argument("--tangents", type=int, default=2)
    ap.add_argument("--dim", type=int, default=4096)
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--len", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    config = load_config(args.model)
    if config.vocab_size < VOCAB:
        raise SystemExit(f"{args.model}: vocabulary {config.vocab_size} < the benchmark rows' {VOCAB} token ids")
    model = random_init(config, seed=0, attn="eager").eval()
    rows = make_rows(args.rows, lo=max(1, args.len // 4), hi=args.len)
    [(ids, mask, _)] = batches(rows, token_budget=args.rows * args.len, max_rows=args.rows)
    tokens = int(mask.sum())
    cheap = JvpEmbedder(model, DEFAULT_BLOCK_PATTERNS, args.blocks, args.tangents, args.dim, seed=0)
    stock = JvpEmbedder(model, DEFAULT_BLOCK_PATTERNS, args.blocks, args.tangents, args.dim, seed=0,
                        cheap_softmax=False)
    diff = (cheap.embed(ids, mask) - stock.embed(ids, mask)).abs().max().item()
    sides = {
        "forward through the same blocks (no AD)": lambda: cheap.forward_to_last_block(ids, mask),
        "jvp, torch's softmax rule": lambda: stock.embed(ids, mask),
        "jvp, cheap softmax rule": lambda: cheap.embed(ids, mask),
    }
    times = {name: [] for name in sides}
    for fn in sides.values():
        fn()  # warm-up
    for _ in range(args.repeats):
        for name, fn in sides.items():
            times[name].append(timed(fn))
    print(f"{config.model_type}, {len(cheap.blocks)} of {config.num_hidden_layers} blocks, T={args.tangents}, "
          f"{args.rows} rows x {args.len} (real tokens {tokens}), {args.threads} thread(s); "
          f"max |cheap - torch rule| = {diff:.2e}")
    base = statistics.median(times["jvp, torch's softmax rule"])
    print(f"{'side':44s} {'median ms':>10s} {'tokens/s':>10s} {'vs torch rule':>14s}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:44s} {med * 1e3:10.1f} {tokens / med:10.0f} {base / med:13.2f}x")


if __name__ == "__main__":
    main()
