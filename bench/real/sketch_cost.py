"""What a sketch setting costs on the real model: tokens/s and columns, settings interleaved.

    .venv/bin/python -m bench.real.sketch_cost [--rows 48] [--repeats 2]

Runs the product's sketcher (`make_sketcher`) on the same real rows for each setting, one warm-up
batch first, then `--repeats` rounds in which every setting runs once (so machine drift hits all
alike). Store bytes per row = D · 2 (fp16 unit rows) + 4 (norm).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from bench.common import BENCH_TOKEN_BUDGET
from bench.real.common import interleaved_seconds, real_rows_and_model
from iprox_ray.corpus.batching import make_batches
from iprox_ray.sketch.factory import make_sketcher
from iprox_ray.spec import SketchSpec

SETTINGS = {
    "kron16 (linears only, old default)": SketchSpec(vectors=[], biases=False),
    "kron16 + exact vectors (default)": SketchSpec(),
    "kron32 + exact vectors": SketchSpec(proj_in=32, proj_out=32),
    "srht8192 + exact vectors": SketchSpec(kind="srht", dim=8192),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    tokenizer, rows, model = real_rows_and_model(args.rows)
    sketchers = {name: make_sketcher(model, spec) for name, spec in SETTINGS.items()}
    batches = make_batches(rows, BENCH_TOKEN_BUDGET, SketchSpec().max_batch_rows, tokenizer.pad_token_id)
    seconds, tokens = interleaved_seconds(sketchers, batches, args.repeats)
    base = np.median(seconds[next(iter(SETTINGS))])
    print(f"{len(rows)} rows, {tokens} tokens, {args.repeats} interleaved rounds, "
          f"torch threads {torch.get_num_threads()}")
    print("| setting | D | store bytes/row | sketch tokens/s (median) | time vs old default |")
    print("|---|---|---|---|---|")
    for name, s in sketchers.items():
        med = float(np.median(seconds[name]))
        print(f"| {name} | {s.dim:,} | {s.dim * 2 + 4:,} | {tokens / med:.0f} | {med / base:.2f}x |")


if __name__ == "__main__":
    main()
