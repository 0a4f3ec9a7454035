"""Tokens/s and peak memory of the sketcher on CPU (5 M and 30 M Llama), and the dense path's
per-sample gradients from hooks vs torch.func vmap(grad).

Each measurement runs in a fresh subprocess so its peak RSS is its own (ru_maxrss); the RSS
after loading the model is reported beside it, so the sketching overhead is the difference.

    .venv/bin/python -m bench.micro.sketch_throughput [--threads 2] [--rows 256]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time

import torch

from bench.common import (
    batches,
    load_average,
    make_model,
    make_rows,
    module_command,
    n_params,
    n_tokens,
    peak_rss_mib,
    run_sketcher,
    write_result,
)
from iprox_ray.sketch.dense import DenseSketcher
from iprox_ray.sketch.kronecker import KroneckerSketcher
from iprox_ray.spec.patterns import DEFAULT_LINEAR_PATTERNS

DOWN = [r"re:.*\.down_proj$"]


def child(name: str, kind: str, rows: int, budget: int) -> dict:
    model = make_model(name, seed=0, attn="eager" if kind.startswith("vmap") else "sdpa")
    data = batches(make_rows(rows, seed=1), budget)
    tokens = n_tokens(data)
    base = peak_rss_mib()
    if kind == "kronecker":
        sketcher = KroneckerSketcher(model, DEFAULT_LINEAR_PATTERNS, 16, 16, seed=0)
        fn = lambda: run_sketcher(sketcher, data)  # noqa: E731
    elif kind == "dense-hooks":
        sketcher = DenseSketcher(model, DOWN, dim=8192, seed=0, kind="srht")
        fn = lambda: run_sketcher(sketcher, data)  # noqa: E731
    elif kind == "dense-vmap":
        fn = lambda: vmap_dense(model, data)  # noqa: E731
    else:
        raise ValueError(kind)
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    return {"model": name, "kind": kind, "params": n_params(model), "tokens": tokens, "batches": len(data),
            "seconds": seconds, "tokens_per_s": tokens / seconds, "rss_after_model_mib": base,
            "peak_rss_mib": peak_rss_mib()}


def vmap_dense(model, data, chunk: int = 8) -> None:
    """torch.func vmap(grad) over the down_proj weights, chunk_size 8, then the same SRHT."""
    from torch.func import functional_call, grad, vmap

    from iprox_ray.models.loss import per_sample_loss
    from iprox_ray.models.patterns import select_modules
    from iprox_ray.sketch.dense_projection import DenseProjector

    names = [n for n, _ in select_modules(model, DOWN)]
    params = {f"{n}.weight": model.get_submodule(n).weight.detach() for n in names}
    projector = DenseProjector(0, 8192, "srht")

    def loss_one(p, i, a, t):
        # No attention mask: transformers' mask builder branches on data (vmap refuses it), and
        # with right padding and a causal model the real tokens' outputs are the same without it.
        logits = functional_call(model, p, (i[None],)).logits
        return per_sample_loss(logits, i[None], t[None])[0]

    per_sample = vmap(grad(loss_one), in_dims=(None, 0, 0, 0), chunk_size=chunk)
    for ids, mask, train in data:
        grads = per_sample(params, ids, mask, train)
        sum(projector.project(n, grads[f"{n}.weight"].flatten(1)) for n in names)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--budget", type=int, default=8192)
    ap.add_argument("--child", nargs=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        rows = args.rows if args.child[1] == "kronecker" else min(args.rows, 64)
        print("RESULT " + json.dumps(child(args.child[0], args.child[1], rows, args.budget)), flush=True)
        return
    runs = [("5m", "kronecker"), ("30m", "kronecker"), ("5m", "dense-hooks"), ("5m", "dense-vmap")]
    results = []
    for name, kind in runs:
        cmd = module_command(__spec__.name, "--threads", str(args.threads), "--rows", str(args.rows),
                             "--budget", str(args.budget), "--child", name, kind)
        out = subprocess.run(cmd, capture_output=True, text=True)
        line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
        if not line:
            raise RuntimeError(out.stderr[-3000:])
        results.append(json.loads(line[0][7:]))
        print(results[-1], flush=True)
    hooks = next(r for r in results if r["kind"] == "dense-hooks")
    vmap_r = next(r for r in results if r["kind"] == "dense-vmap")
    summary = {"runs": results, "dense_hooks_over_vmap_speed": hooks["tokens_per_s"] / vmap_r["tokens_per_s"],
               "threads": args.threads, "load_average_end": load_average()}
    print(json.dumps(summary, indent=2))
    print("wrote", write_result("sketch_throughput", summary))


if __name__ == "__main__":
    main()
