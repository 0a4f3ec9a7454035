"""Proxies on the real model: sketch speed and influence fidelity against exact influence.

    .venv/bin/python -m bench.real.fidelity --truth-only      # once: exact scores per pool row
    .venv/bin/python -m bench.real.proxy [--rows 300] [--variants full,ipsvd,svd,...] [--force]

Each variant is built by the product's `make_proxy` (the proxy stage's own code) from probe rows
drawn from the pool, then the product's sketcher (default settings) sketches the same pool rows
and the 40 target rows; LESS scores (mean cosine to the target) are compared with exact LESS
(bs = 1 gradients of every trained parameter of the real model, `fidelity.exact.npz`) and with
the full model's sketch scores. Sketch tokens/s counts the pool rows only; build seconds are
reported apart. Results are cached per variant in `bench/out/real/proxy/<variant>.json`
(--force recomputes); the table is printed from every cached variant.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from bench.common import REAL
from bench.real.common import agreement, encode_file, keep_freed_memory, sketch, stratified
from iprox_ray.corpus.encode import ChatEncoder
from iprox_ray.influence.less import cosine_scores, target_direction
from iprox_ray.models.loading import count_parameters, load_pretrained, load_tokenizer
from iprox_ray.proxy.build import make_proxy
from iprox_ray.spec import ProxySpec, SketchSpec
from iprox_ray.tasks.inputs import fixed_batches, shuffled_epochs

OUT = REAL / "proxy"
# name -> (ProxySpec fields or None for the full model, SketchSpec fields, probe rows)
VARIANTS: dict[str, tuple[dict | None, dict, int]] = {
    "full": (None, {}, 0),
    "full-kron8": (None, {"proj_in": 8, "proj_out": 8}, 0),
    "ipsvd-paper-factors": ({"method": "ipsvd", "rank_multiple": 16}, {"lowrank": "factors"}, 8),
    "ipsvd-paper": ({"method": "ipsvd", "rank_multiple": 16}, {}, 8),
    "svd": ({"method": "svd", "rank_multiple": 16}, {}, 0),
    "layer_extraction": ({"method": "layer_extraction"}, {}, 0),
    "ipsvd-trainable": ({"method": "ipsvd", "rank_multiple": 16, "probe_loss": "trainable"}, {}, 8),
    "ipsvd-rel": ({"method": "ipsvd", "rank_multiple": 16, "relative_ridge": True}, {}, 8),
    "ipsvd-rel-trainable-64x8k": ({"method": "ipsvd", "rank_multiple": 16, "relative_ridge": True,
                                   "probe_loss": "trainable", "max_probe_columns": 8192}, {}, 64),
    "ipsvd-64x8k": ({"method": "ipsvd", "rank_multiple": 16, "max_probe_columns": 8192}, {}, 64),
    "ipsvd-global": ({"method": "ipsvd", "rank_multiple": 16, "relative_ridge": True, "probe_loss": "trainable",
                      "max_probe_columns": 8192, "rank_rule": "global"}, {}, 64),
    "ipsvd-all-tokens": ({"method": "ipsvd", "rank_multiple": 16, "relative_ridge": True, "probe_loss": "trainable",
                          "max_probe_columns": 1 << 20}, {}, 64),
    "ipsvd-global-factors": ({"method": "ipsvd", "rank_multiple": 16, "relative_ridge": True, "probe_loss": "trainable",
                              "max_probe_columns": 8192, "rank_rule": "global"}, {"lowrank": "factors"}, 64),
    "ipsvd-best-kl": ({"method": "ipsvd", "rank_multiple": 16, "relative_ridge": True, "probe_loss": "trainable",
                       "max_probe_columns": 8192, "align_epochs": 2, "align_rows": 128, "align_objective": "kl",
                       "align_lr": 1e-4, "lambda_kl": 1.0}, {}, 64),
}


def run_variant(name: str, target, pool, target_rows, probe_pool, pad_id: int, rho: float, seed: int) -> dict:
    proxy_fields, sketch_fields, n_probe = VARIANTS[name]
    spec = SketchSpec(**sketch_fields)
    built, build_seconds, info = target, 0.0, {}
    if proxy_fields is not None:
        fields = {"align_epochs": 0, **proxy_fields}
        n_align = fields.pop("align_rows", 0)
        pspec = ProxySpec(rho=rho, **fields)
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(probe_pool))
        probes = [probe_pool[i] for i in order[:n_probe]]
        batches = fixed_batches(probes, list(range(len(probes))), pspec.probe_batch_size, pad_id)
        epochs = None
        if pspec.align_epochs and n_align:  # alignment rows: the next n_align after the probes
            align_rows = [probe_pool[i] for i in order[n_probe : n_probe + n_align]]
            epochs = shuffled_epochs(align_rows, pspec.align_batch_size, pad_id, seed + 7, pspec.align_epochs)
        start = time.perf_counter()
        result = make_proxy(target, pspec, batches, len(probes), epochs, seed)
        build_seconds = time.perf_counter() - start
        built = result.model
        info = {"stage1_seconds": result.stage1_seconds, "parameters": count_parameters(built),
                "stage2": result.stage2.summary() if result.stage2 else None}
    pool_sketch, tokens, seconds, losses = sketch(built, spec, pool, pad_id)
    target_sketch, _, _, _ = sketch(built, spec, target_rows, pad_id)
    scores = cosine_scores(pool_sketch, target_direction(target_sketch))
    return {"name": name, "rho": rho if proxy_fields else None, "build_seconds": build_seconds, **info,
            "dim": int(pool_sketch.shape[1]), "tokens": tokens, "sketch_seconds": seconds,
            "tokens_per_s": tokens / seconds, "mean_loss": float(losses.mean()), "scores": scores.tolist()}


def table(results: dict[str, dict], exact: np.ndarray, domains: np.ndarray, target_domain: str) -> str:
    full = results.get("full")
    lines = ["| variant | ρ | params | build s | sketch tokens/s | speed vs full | vs exact: Spearman / top-5 % | "
             "vs full sketch: Spearman | top-5 % in target domain | pool loss |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        s = np.asarray(r["scores"])
        a = agreement(exact, s)
        f = agreement(np.asarray(full["scores"]), s)["spearman"] if full else float("nan")
        k = max(1, round(0.05 * len(s)))
        top = np.argsort(-s)[:k]
        speed = r["tokens_per_s"] / full["tokens_per_s"] if full else float("nan")
        lines.append(f"| {name} | {r['rho'] or '—'} | {r.get('parameters', 0) / 1e6:.1f} M | "
                     f"{r['build_seconds']:.0f} | {r['tokens_per_s']:.0f} | {speed:.2f}× | "
                     f"{a['spearman']:.3f} / {a['top5']:.2f} | {f:.3f} | "
                     f"{np.mean(domains[top] == target_domain):.2f} | {r.get('mean_loss', float('nan')):.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=300, help="pool rows scored (stratified over the domains)")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--rho", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args()
    keep_freed_memory()
    torch.manual_seed(args.seed)
    truth = np.load(REAL / "fidelity.exact.npz")
    folder = REAL / "SmolLM2-135M-Instruct-hf"
    tokenizer = load_tokenizer(folder)
    encoder = ChatEncoder(tokenizer, max_length=1024)
    all_pool, domains = encode_file(REAL / "corpus" / "pool.jsonl", encoder, len(truth["exact_all"]))
    target_rows, target_domains = encode_file(REAL / "corpus" / "target.jsonl", encoder, None)
    chosen = stratified(np.asarray(domains), args.rows)
    pool = [all_pool[i] for i in chosen]
    probe_pool = [all_pool[i] for i in range(len(all_pool)) if i not in set(chosen.tolist())] or all_pool
    target = load_pretrained(folder, "float32")
    OUT.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in args.variants.split(","):
        path = OUT / f"{name}-rho{args.rho}-rows{args.rows}.json"
        if path.exists() and not args.force:
            results[name] = json.loads(path.read_text())
            continue
        print(f"[real_proxy] {name} ...", flush=True)
        r = run_variant(name, target, pool, target_rows, probe_pool, tokenizer.pad_token_id, args.rho, args.seed)
        path.write_text(json.dumps(r))
        results[name] = r
        print(f"  build {r['build_seconds']:.0f} s, sketch {r['tokens_per_s']:.0f} tokens/s, "
              f"Spearman vs exact {agreement(truth['exact_all'][chosen], np.asarray(r['scores']))['spearman']:.3f}",
              flush=True)
    print(table(results, truth["exact_all"][chosen], np.asarray(domains)[chosen], target_domains[0]))


if __name__ == "__main__":
    main()
