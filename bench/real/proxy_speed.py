"""Sketch throughput of the real model and its proxies, measured side by side (interleaved rounds).

    .venv/bin/python -m bench.real.proxy_speed [--rows 64] [--repeats 3] [--all]

Speed depends on shapes only, so the low-rank proxies here are plain-SVD ones (instant to build)
with the ranks of the uniform rule; IPSVD proxies of the same ρ run the same matmuls. Every
setting sketches the same rows once per round, after one warm-up batch; medians are printed,
beside the FLOP-bound speed-up (the fidelity report's count: proxy/fidelity.py) and the share of
it the measured speed-up reaches (issue 25 item 4).
(Separate runs of bench/real/proxy.py move by ±25 % on this shared 2-core machine.)
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from bench.common import BENCH_TOKEN_BUDGET, REAL
from bench.real.common import interleaved_seconds, real_rows_and_model, shape_proxy
from iprox_ray.corpus.batching import make_batches
from iprox_ray.models.loading import count_parameters
from iprox_ray.proxy.fidelity import sketch_flops_per_token
from iprox_ray.sketch.factory import make_sketcher, sketched_modules
from iprox_ray.spec import SketchSpec


def flops_per_token(model, spec: SketchSpec, rows) -> float:
    """The sketch pass's matmul FLOPs per token, as the fidelity report computes them."""
    mean_len = float(np.mean([r.n_tokens for r in rows]))
    loss_share = sum(int(r.trainable.sum()) for r in rows) / max(1, sum(r.n_tokens for r in rows))
    return sketch_flops_per_token(model, sketched_modules(model, spec), mean_len, loss_share,
                                  spec.proj_in, spec.proj_out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--all", action="store_true", help="also a smaller sketch, factor sketches, layer extraction")
    args = ap.parse_args()
    tokenizer, rows, target = real_rows_and_model(args.rows)

    def proxy(method: str, rho: float):
        return shape_proxy(target, method, rho)

    models = {"full": target, "svd 0.5": proxy("svd", 0.5), "svd 0.7": proxy("svd", 0.7)}
    if args.all:
        models["layer_extraction 0.5"] = proxy("layer_extraction", 0.5)
    settings = {
        "full, default sketch": ("full", SketchSpec()),
        "ρ=0.5 low-rank, product sketch (default)": ("svd 0.5", SketchSpec()),
        "ρ=0.7 low-rank, product sketch": ("svd 0.7", SketchSpec()),
    }
    if args.all:
        settings.update({
            "full, kron8 + norms": ("full", SketchSpec(proj_in=8, proj_out=8)),
            "ρ=0.5 low-rank, factor sketches": ("svd 0.5", SketchSpec(lowrank="factors")),
            "layer extraction ρ=0.5 (15 of 30 layers)": ("layer_extraction 0.5", SketchSpec()),
        })
    sketchers = {name: make_sketcher(models[m], spec) for name, (m, spec) in settings.items()}
    batches = make_batches(rows, BENCH_TOKEN_BUDGET, SketchSpec().max_batch_rows, tokenizer.pad_token_id)
    seconds, tokens = interleaved_seconds(sketchers, batches, args.repeats)
    base = float(np.median(seconds["full, default sketch"]))
    flops = {name: flops_per_token(models[m], spec, rows) for name, (m, spec) in settings.items()}
    out = {}
    print(f"{len(rows)} rows, {tokens} tokens, {args.repeats} interleaved rounds (medians), "
          f"torch threads {torch.get_num_threads()}")
    print("| setting | parameters | sketch GFLOP/token | sketch tokens/s | speed vs full | FLOP-bound | share of it |")
    print("|---|---|---|---|---|---|---|")
    for name, (m, _) in settings.items():
        med = float(np.median(seconds[name]))
        bound = flops["full, default sketch"] / flops[name]
        out[name] = {"seconds": seconds[name], "tokens_per_s": tokens / med, "speedup": base / med,
                     "flops_per_token": flops[name], "flop_bound_speedup": bound,
                     "parameters": count_parameters(models[m])}
        print(f"| {name} | {out[name]['parameters'] / 1e6:.1f} M | {flops[name] / 1e9:.3f} | {tokens / med:.0f} | "
              f"{base / med:.2f}× | {bound:.2f}× | {base / med / bound:.0%} |")
    (REAL / "proxy").mkdir(parents=True, exist_ok=True)
    (REAL / "proxy" / "speed.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
