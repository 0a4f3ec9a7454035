"""P3: sketch throughput of a ρ = 0.7 IPSVD proxy vs its target, side by side on the same rows.

A random-init Llama whose linears dominate (hidden 768, 6 layers, the demo tokenizer's 4,096
vocab), demo pool rows, 16×16 Kronecker projection per module. Repeats alternate target / proxy
so drift in machine load hits both.

    python -m bench.micro.proxy_throughput [--rows 256] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from bench.common import REPO
from iprox_ray.corpus.batching import make_batches
from iprox_ray.models.loading import count_parameters
from iprox_ray.models.patterns import select_modules
from iprox_ray.proxy.compress import compress, plan_ranks
from iprox_ray.proxy.fidelity import forward_flops_per_token
from iprox_ray.proxy.probes import ProbeCollector
from iprox_ray.sketch.kronecker import KroneckerSketcher
from iprox_ray.spec.patterns import DEFAULT_LINEAR_PATTERNS


def demo_rows(n: int):
    import pyarrow.parquet as pq

    from iprox_ray.corpus.encode import ChatEncoder
    from iprox_ray.models.loading import load_tokenizer

    tokenizer = load_tokenizer(REPO / "iprox_ray/demo/assets/tokenizer")
    encoder = ChatEncoder(tokenizer, 256)
    table = pq.read_table(REPO / "iprox_ray/demo/assets/pool/part-0000.parquet").slice(0, n)
    return [encoder.encode(m) for m in table.column("messages").to_pylist()], tokenizer.pad_token_id


def sketch_seconds(model, batches) -> float:
    sketcher = KroneckerSketcher(model, DEFAULT_LINEAR_PATTERNS, 16, 16, seed=0)
    start = time.perf_counter()
    for b in batches:
        sketcher.sketch(*(torch.from_numpy(a) for a in (b.input_ids, b.attention_mask, b.trainable)))
    seconds = time.perf_counter() - start
    sketcher.close()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rho", type=float, default=0.7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=4096, hidden_size=768, intermediate_size=2048, num_hidden_layers=6,
                         num_attention_heads=12, num_key_value_heads=12, max_position_embeddings=512)
    target = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()
    encoded, pad_id = demo_rows(args.rows)
    batches = make_batches(encoded, 4096, 64, pad_id)
    tokens = sum(b.n_tokens for b in batches)
    proxy = copy.deepcopy(target)
    plans = plan_ranks(proxy, DEFAULT_LINEAR_PATTERNS, args.rho, 16)
    probe = ProbeCollector(select_modules(target, DEFAULT_LINEAR_PATTERNS), 1024, 32, seed=0)
    for b in make_batches(encoded[:32], 4096, 8, pad_id):
        probe.run(target, torch.from_numpy(b.input_ids), torch.from_numpy(b.attention_mask))
    probe.close()
    compress(proxy, plans, "ipsvd", probe.moments)
    for p in list(target.parameters()) + list(proxy.parameters()):
        p.requires_grad_(False)
    sketch_seconds(target, batches[:2]), sketch_seconds(proxy, batches[:2])  # warm caches
    t_times, p_times = [], []
    for _ in range(args.repeats):
        t_times.append(sketch_seconds(target, batches))
        p_times.append(sketch_seconds(proxy, batches))
    t_tps, p_tps = tokens / np.median(t_times), tokens / np.median(p_times)
    mean_len = tokens / len(encoded)
    result = {
        "rows": len(encoded), "tokens": tokens, "threads": args.threads, "rho": args.rho,
        "target_params": count_parameters(target), "proxy_params": count_parameters(proxy),
        "target_tokens_per_s": t_tps, "proxy_tokens_per_s": p_tps, "speedup": p_tps / t_tps,
        "flops_ratio": forward_flops_per_token(target, mean_len) / forward_flops_per_token(proxy, mean_len),
    }
    print(json.dumps(result, indent=2))
    print(f"P3: proxy (rho={args.rho}) sketches {result['speedup']:.2f}x faster than the target "
          f"({p_tps:,.0f} vs {t_tps:,.0f} tokens/s; forward FLOPs ratio {result['flops_ratio']:.2f}x)")


if __name__ == "__main__":
    main()
