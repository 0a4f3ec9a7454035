"""Proxy selections judged the paper's way: a short fine-tune on each, held-out target-domain loss.

    .venv/bin/python -m bench.real.sketch_frontier                                  # the truth
    .venv/bin/python -m bench.real.proxy_align run --stage1 full --configs none --score
    .venv/bin/python -m bench.real.proxy_align run --stage1 uniform-0.5 --configs none,kl-3e-4 --score
    .venv/bin/python -m bench.real.proxy_finetune [--top 0.1] [--seeds 0,1,2] [--only NAME,...]

Selections are the top `--top` share of the rows the truth file scored (the first 30 of each of
the six domains), by: exact LESS over every trained parameter (the truth), each scored result of
`proxy_align.py` (the target's own default sketch is stage 1 "full"; proxies with and
without stage 2), and random draws. Each selection fine-tunes a fresh SmolLM2-135M-Instruct with
the product's `finetune` (every parameter, AdamW, linear decay, assistant-token loss) once per
seed (the seed orders the batches); the score is the mean assistant-token loss on the 40
held-out Python-docs rows (`eval.jsonl`, disjoint from pool and target). Results are cached per
(selection, seed) in bench/out/real/proxy_align/finetune.json.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from bench.common import REAL
from bench.real.common import PROXY_ALIGN, eval_loss, fine_tuned_loss, finetune_inputs, scored_rows
from iprox_ray.models.loading import load_pretrained

TARGET_DOMAIN = "python_docs"


def selections(top: float, n_random: int) -> tuple[dict[str, list[int]], np.ndarray]:
    """{name: pool row indices} of every scored method, and the pool's domains."""
    pool = (REAL / "corpus" / "pool.jsonl").read_text().splitlines()
    domains = np.asarray([json.loads(line)["domain"] for line in pool])
    chosen, exact = scored_rows(domains)
    if exact is None:
        raise SystemExit("no truth file: run python -m bench.real.sketch_frontier first")
    k = max(1, round(top * len(chosen)))
    pick = lambda scores: chosen[np.argsort(-np.asarray(scores), kind="stable")[:k]].tolist()  # noqa: E731
    out = {"exact influence": pick(exact)}
    for path in sorted(PROXY_ALIGN.glob("*--*.json")):
        r = json.loads(path.read_text())
        if "scores" in r and len(r["scores"]) == len(chosen):
            out[f"{r['stage1']} + {r['config']}"] = pick(r["scores"])
    for s in range(n_random):
        out[f"random {s}"] = np.random.default_rng(100 + s).choice(chosen, k, replace=False).tolist()
    return out, domains


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--top", type=float, default=0.1)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--random", type=int, default=2, help="random selections")
    ap.add_argument("--only", default="", help="comma-separated selection names (default: all)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--batch", type=int, default=4)
    args = ap.parse_args()
    folder, pad, pool, held_out = finetune_inputs()
    chosen, domains = selections(args.top, args.random)
    wanted = [n for n in chosen if not args.only or n in args.only.split(",")]
    path = PROXY_ALIGN / "finetune.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    if "none" not in results:
        results["none"] = {"eval_loss": eval_loss(load_pretrained(folder, "float32"), held_out, pad)}
    for name in wanted:
        for seed in (int(s) for s in args.seeds.split(",")):
            key = f"{name} | seed {seed}"
            if key in results and results[key]["rows"] == chosen[name]:
                continue
            results[key] = fine_tuned_loss(folder, [pool[i] for i in chosen[name]], held_out, pad, args.epochs,
                                           args.batch, args.lr, seed) | {"rows": chosen[name]}
            print(f"{key}: {results[key]['eval_loss']:.4f}", flush=True)
            path.write_text(json.dumps(results, indent=1))
    print(f"\nbefore fine-tuning: {results['none']['eval_loss']:.4f}")
    print("| selection | rows | target-domain share | held-out loss per seed | mean |")
    print("|---|---|---|---|---|")
    for name in wanted:
        losses = [r["eval_loss"] for k, r in results.items() if k.startswith(f"{name} | seed ")]
        if losses:
            share = np.mean(domains[chosen[name]] == TARGET_DOMAIN)
            print(f"| {name} | {len(chosen[name])} | {share:.2f} | {', '.join(f'{x:.4f}' for x in losses)} | "
                  f"{np.mean(losses):.4f} |")


if __name__ == "__main__":
    main()
