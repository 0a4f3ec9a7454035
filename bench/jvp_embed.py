"""JVP embedding throughput: torch's softmax rule vs the cheap one vs a plain forward.

The sides run on the same model, batch and thread count, measured side by side in one process.
The sides alternate within each repeat, and the median over `--repeats` is kept:
  - forward: a plain forward (no AD) through the first B blocks, stopped there as the JVP is;
  - jvp, torch rule: JvpEmbedder with torch's own forward-mode softmax rule;
  - jvp, cheap rule: JvpEmbedder as the embed stage runs it (sketch/softmax_jvp.py).
The model is the demo's random-init Llama, or `--model DIR` (a config folder).
The batch is `--rows` rows of random tokens, with lengths uniform in [len/4, len], right-padded.

    .venv/bin/python bench/jvp_embed.py [--blocks 1] [--tangents 2] [--rows 16] [--len 256] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from iprox_ray.models.loading import load_config, random_init
from iprox_ray.sketch.jvp import JvpEmbedder, _raise_output, _Stop
from iprox_ray.spec.selection import DEFAULT_BLOCK_PATTERNS

DEMO_MODEL = Path(__file__).resolve().parents[1] / "iprox_ray" / "demo" / "assets" / "model"


def batch(rows: int, length: int, vocab: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(max(1, length // 4), length + 1, (rows,), generator=gen)
    ids = torch.randint(3, vocab, (rows, length), generator=gen)
    mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
    return ids * mask, mask


def plain_forward(model, last_block, ids, mask):
    handle = last_block.register_forward_hook(_raise_output)
    try:
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask, use_cache=False)
    except _Stop:
        pass
    finally:
        handle.remove()


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
    model = random_init(config, seed=0, attn="eager").eval()
    ids, mask = batch(args.rows, args.len, config.vocab_size)
    tokens = int(mask.sum())
    cheap = JvpEmbedder(model, DEFAULT_BLOCK_PATTERNS, args.blocks, args.tangents, args.dim, seed=0)
    stock = JvpEmbedder(model, DEFAULT_BLOCK_PATTERNS, args.blocks, args.tangents, args.dim, seed=0,
                        cheap_softmax=False)
    diff = (cheap.embed(ids, mask) - stock.embed(ids, mask)).abs().max().item()
    sides = {
        "forward through the same blocks (no AD)": lambda: plain_forward(model, cheap.blocks[-1][1], ids, mask),
        "jvp, torch's softmax rule": lambda: stock.embed(ids, mask),
        "jvp, cheap softmax rule": lambda: cheap.embed(ids, mask),
    }
    times = {name: [] for name in sides}
    for fn in sides.values():
        fn()  # warm-up
    for _ in range(args.repeats):
        for name, fn in sides.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
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
