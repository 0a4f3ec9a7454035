"""Sketch throughput of the real model and its proxies, measured side by side (interleaved rounds).

    .venv/bin/python bench/real_proxy_speed.py [--rows 64] [--repeats 3]

Speed depends on shapes only, so the low-rank proxies here are plain-SVD ones (instant to build)
with the ranks of the uniform rule; IPSVD proxies of the same ρ run the same matmuls. Every
setting sketches the same rows once per round, after one warm-up batch; medians are printed.
(Separate runs of bench/real_proxy.py move by ±25 % on this shared 2-core machine.)
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from iprox_ray.corpus.batching import make_batches
from iprox_ray.models.loading import count_parameters
from iprox_ray.proxy.build import make_proxy
from iprox_ray.sketch.factory import make_sketcher
from iprox_ray.spec import ProxySpec, SketchSpec
from real_fidelity import REAL, real_rows_and_model
from real_sketch_cost import interleaved_seconds
from sketch_common import BENCH_TOKEN_BUDGET


def shape_proxy(target, method: str, rho: float):
    """A proxy whose shapes (hence cost) are those of `method` at ρ; svd needs no probes."""
    spec = ProxySpec(method=method, rho=rho, rank_multiple=16, align_epochs=0)
    return make_proxy(target, spec, [], 0, None, 0).model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    tokenizer, rows, target = real_rows_and_model(args.rows)

    def proxy(method: str, rho: float):
        return shape_proxy(target, method, rho)

    models = {"full": target, "svd 0.5": proxy("svd", 0.5), "svd 0.7": proxy("svd", 0.7),
              "layer_extraction 0.5": proxy("layer_extraction", 0.5)}
    settings = {
        "full, default sketch": ("full", SketchSpec()),
        "full, kron8 + norms": ("full", SketchSpec(proj_in=8, proj_out=8)),
        "full, kron16, no norms": ("full", SketchSpec(vectors=[], biases=False)),
        "ρ=0.5 low-rank, product sketch (default)": ("svd 0.5", SketchSpec()),
        "ρ=0.5 low-rank, factor sketches": ("svd 0.5", SketchSpec(lowrank="factors")),
        "ρ=0.7 low-rank, product sketch": ("svd 0.7", SketchSpec()),
        "layer extraction ρ=0.5 (15 of 30 layers)": ("layer_extraction 0.5", SketchSpec()),
    }
    sketchers = {name: make_sketcher(models[m], spec) for name, (m, spec) in settings.items()}
    batches = make_batches(rows, BENCH_TOKEN_BUDGET, SketchSpec().max_batch_rows, tokenizer.pad_token_id)
    seconds, tokens = interleaved_seconds(sketchers, batches, args.repeats)
    base = float(np.median(seconds["full, default sketch"]))
    out = {}
    print(f"{len(rows)} rows, {tokens} tokens, {args.repeats} interleaved rounds (medians)")
    print("| setting | parameters | sketch tokens/s | speed vs full |")
    print("|---|---|---|---|")
    for name, (m, _) in settings.items():
        med = float(np.median(seconds[name]))
        out[name] = {"seconds": seconds[name], "tokens_per_s": tokens / med, "speedup": base / med,
                     "parameters": count_parameters(models[m])}
        print(f"| {name} | {out[name]['parameters'] / 1e6:.1f} M | {tokens / med:.0f} | {base / med:.2f}× |")
    (REAL / "proxy").mkdir(parents=True, exist_ok=True)
    (REAL / "proxy" / "speed.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
