"""Where the sketch time goes on the real model, full model vs proxy (torch.profiler, CPU).

    .venv/bin/python -m bench.real.proxy_profile [--rows 32] [--rho 0.5]

Sketches the same real rows with the product's default sketcher on the full model and on an SVD
proxy (same shapes and FLOPs as IPSVD, no probes needed), after one warm-up batch, and prints the
top operators by self CPU time for each plus the totals.
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from bench.common import bench_budget
from bench.real.common import real_rows_and_model, shape_proxy
from iprox_ray.corpus.batching import make_batches
from iprox_ray.sketch.factory import make_sketcher
from iprox_ray.spec import SketchSpec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=32)
    ap.add_argument("--rho", type=float, default=0.5)
    ap.add_argument("--top", type=int, default=14)
    ap.add_argument("--sketch", default="", help="SketchSpec fields as k=v,k=v (e.g. vectors=[])")
    args = ap.parse_args()
    tokenizer, rows, target = real_rows_and_model(args.rows)
    proxy = shape_proxy(target, "svd", args.rho)
    fields = dict(kv.split("=", 1) for kv in args.sketch.split(",") if kv)
    spec = SketchSpec(**{k: ([] if v == "[]" else v) for k, v in fields.items()})
    batches = make_batches(rows, bench_budget(spec), spec.max_batch_rows, tokenizer.pad_token_id)
    for name, model in (("full", target), (f"svd proxy rho={args.rho}", proxy)):
        sketcher = make_sketcher(model, spec)
        tensors = [tuple(torch.from_numpy(a) for a in (b.input_ids, b.attention_mask, b.trainable)) for b in batches]
        sketcher.sketch(*tensors[0])
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for t in tensors:
                sketcher.sketch(*t)
        sketcher.close()
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events) / 1e6
        print(f"\n== {name}: {total:.2f} s self CPU over {sum(b.n_tokens for b in batches)} tokens")
        print(events.table(sort_by="self_cpu_time_total", row_limit=args.top))


if __name__ == "__main__":
    main()
