"""P0': sketching a ρ = 0.7 IPSVD proxy (stage 1 only) vs the full 7 M model, with its fidelity.

Speed: the same 512 rows and 16×16 projections as bench/micro/sketch_vs_bergson.py, full model vs its
proxy (every factor A, B sketched), alternated `--rounds` times, best round each. The bergson
figure is read from bench/out/sketch_vs_bergson.json (same rows, same machine, earlier run).
Fidelity: LESS-style scores (cosine of each pool row's sketch to the mean unit target sketch) on
the bundled demo pool / target text, full model vs proxy; Spearman over pool rows. Model weights
are random-init (no pretrained weights may be downloaded), so the fidelity figure says how well
stage-1 IPSVD preserves this model's influence geometry, not a trained LM's.

    .venv/bin/python -m bench.micro.sketch_proxy [--rounds 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import json

import numpy as np
import pyarrow.parquet as pq
import torch
from scipy.stats import spearmanr

from bench.common import (
    OUT,
    REPO,
    batches,
    load_average,
    make_model,
    make_rows,
    n_params,
    n_tokens,
    run_sketcher,
    timed,
    write_result,
)
from iprox_ray.corpus.encode import ChatEncoder
from iprox_ray.models.loading import load_tokenizer
from iprox_ray.models.patterns import select_modules
from iprox_ray.proxy.compress import compress, plan_ranks
from iprox_ray.proxy.probes import ProbeCollector
from iprox_ray.sketch.kronecker import KroneckerSketcher
from iprox_ray.spec.patterns import DEFAULT_LINEAR_PATTERNS

ASSETS = REPO / "iprox_ray" / "demo" / "assets"


def demo_rows(n_pool: int, n_target: int, max_length: int = 256):
    encoder = ChatEncoder(load_tokenizer(ASSETS / "tokenizer"), max_length, "right")
    pool = []
    for path in sorted((ASSETS / "pool").glob("*.parquet")):
        for row in pq.read_table(path).to_pylist():
            pool.append(encoder.encode(row["messages"]))
    rng = np.random.default_rng(0)
    pool = [pool[i] for i in rng.choice(len(pool), n_pool, replace=False)]
    target = []
    for line in (ASSETS / "target.jsonl").read_text().splitlines()[:n_target]:
        row = json.loads(line)
        target.append(encoder.encode([{"role": "user", "content": row["prompt"]},
                                      {"role": "assistant", "content": row["response"]}]))
    return pool, target, encoder.tokenizer.pad_token_id


def sketch_encoded(sketcher, encoded, pad_id) -> np.ndarray:
    from iprox_ray.corpus.batching import make_batches

    out = np.zeros((len(encoded), sketcher.dim), np.float32)
    for b in make_batches(encoded, 4096, 64, pad_id):
        t = [torch.from_numpy(a) for a in (b.input_ids, b.attention_mask, b.trainable)]
        out[b.rows] = sketcher.sketch(*t).sketch.numpy()
    return out


def less_scores(pool: np.ndarray, target: np.ndarray) -> np.ndarray:
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    return unit(pool) @ unit(target).mean(axis=0)


def build_proxy(model, probe_batches, rho: float, multiple: int):
    proxy = copy.deepcopy(model)
    for p in proxy.parameters():
        p.requires_grad_(True)
    plans = plan_ranks(proxy, DEFAULT_LINEAR_PATTERNS, rho, multiple)
    collector = ProbeCollector(select_modules(proxy, DEFAULT_LINEAR_PATTERNS, expand_lowrank=False), 1024,
                               sum(len(b[0]) for b in probe_batches), seed=4)
    try:
        for ids, mask, _ in probe_batches:
            collector.run(proxy, ids, mask)
    finally:
        collector.close()
    compress(proxy, plans, "ipsvd", collector.columns, 1e-3, seed=5)
    return proxy.eval()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rho", type=float, default=0.7)
    ap.add_argument("--rank-multiple", type=int, default=16)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = make_model("7m", seed=0)
    rows = make_rows(512)
    batch_list = batches(rows, 8192)
    tokens = n_tokens(batch_list)
    pool, target, pad_id = demo_rows(256, 32)
    from iprox_ray.corpus.batching import make_batches

    probes = [tuple(torch.from_numpy(a) for a in (b.input_ids, b.attention_mask, b.trainable))
              for b in make_batches(pool[:64], 4096, 64, pad_id)]
    proxy = build_proxy(model, probes, args.rho, args.rank_multiple)
    full_s = KroneckerSketcher(model, DEFAULT_LINEAR_PATTERNS, 16, 16, seed=0)
    proxy_s = KroneckerSketcher(proxy, DEFAULT_LINEAR_PATTERNS, 16, 16, seed=0)
    times = {"full": [], "proxy": []}
    for _ in range(args.rounds):
        times["full"].append(timed(run_sketcher, full_s, batch_list))
        times["proxy"].append(timed(run_sketcher, proxy_s, batch_list))
    scores_full = less_scores(sketch_encoded(full_s, pool, pad_id), sketch_encoded(full_s, target, pad_id))
    scores_proxy = less_scores(sketch_encoded(proxy_s, pool, pad_id), sketch_encoded(proxy_s, target, pad_id))
    rho_s = float(spearmanr(scores_full, scores_proxy).statistic)
    k = max(1, len(pool) // 20)
    top_full, top_proxy = set(np.argsort(-scores_full)[:k]), set(np.argsort(-scores_proxy)[:k])
    result = {
        "full_params": n_params(model), "proxy_params": n_params(proxy), "rho": args.rho,
        "rank_multiple": args.rank_multiple, "tokens": tokens,
        "seconds_best": {k_: min(v) for k_, v in times.items()}, "seconds_all": times,
        "tokens_per_s": {k_: tokens / min(v) for k_, v in times.items()},
        "proxy_speedup_over_full": min(times["full"]) / min(times["proxy"]),
        "fidelity": {"pool_rows": len(pool), "target_rows": len(target), "spearman_less_scores": rho_s,
                     "top5pct_overlap": len(top_full & top_proxy) / k},
        "load_average_end": load_average(),
    }
    previous = OUT / "sketch_vs_bergson.json"
    if previous.exists() and "bergson" in json.loads(previous.read_text()):
        bergson_rate = json.loads(previous.read_text())["bergson"]["tokens_per_s_collect"]
        result["bergson_tokens_per_s_collect"] = bergson_rate
        result["P0prime_proxy_over_bergson"] = result["tokens_per_s"]["proxy"] / bergson_rate
    print(json.dumps(result, indent=2))
    print("wrote", write_result("sketch_proxy", result))


if __name__ == "__main__":
    main()
