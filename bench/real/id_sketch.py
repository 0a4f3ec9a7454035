"""The product's default sketch of every real pool and target row, and the measured FLOPs of each pass.

    .venv/bin/python -m bench.real.id_sketch [--flop-rows 32]

Sketches with `make_sketcher(model, SketchSpec())` (what LESS and Influence Distillation's landmarks
get by default) and writes bench/out/real/id/sketch-default.npz (pool / target sketch rows), so
`id.py --features default` scores ID's own exact p and LESS's selection from the sketches a
user's run writes. FLOPs per token, counted by torch's flop registry (bench/common.py's
flop_count, as bench/scale/selection_cost.py counts) over the first --flop-rows pool rows: the
default sketch, the official ID landmark sketch (SRHT 32768), and the JVP embedding at each depth
with the readouts id.py compares.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from bench.common import REAL, flop_count
from bench.real.common import encode_file, keep_freed_memory
from iprox_ray.corpus.batching import make_batches
from iprox_ray.corpus.encode import ChatEncoder
from iprox_ray.diagnostics.proxy_fidelity import sketch_rows
from iprox_ray.models.loading import load_pretrained, load_tokenizer
from iprox_ray.sketch.factory import make_sketcher
from iprox_ray.spec import SketchSpec
from iprox_ray.spec.scoring import DEFAULT_FINAL_NORM_PATTERNS, EmbedSpec
from iprox_ray.tasks.embed_task import make_embedder

OUT = REAL / "id"
# token_budget 4096: the default 8192 needs ~18 GB on this model (OOM beside a second process).
SKETCHES = {"default": SketchSpec(token_budget=4096),
            "srht32768": SketchSpec(kind="srht", dim=32768, token_budget=4096)}
JVP = {f"jvp-d{d}{'-mean+norm' if n else ''}": EmbedSpec(blocks=d, readout="mean" if n else "last",
                                                        final_norm=DEFAULT_FINAL_NORM_PATTERNS if n else [])
       for d in (1, 2, 4, 8) for n in (False, True)}


def flops_per_token(make, run, batches) -> float:
    tokens = sum(b.n_tokens for b in batches)
    worker = make()
    with flop_count() as counter:
        run(worker, batches)
    worker.close()
    return counter.total / tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flop-rows", type=int, default=32)
    ap.add_argument("--pool-rows", type=int, default=600)
    args = ap.parse_args()
    keep_freed_memory()
    folder = REAL / "SmolLM2-135M-Instruct-hf"
    tokenizer = load_tokenizer(folder)
    encoder = ChatEncoder(tokenizer, 1024)
    pool, _ = encode_file(REAL / "corpus" / "pool.jsonl", encoder, args.pool_rows)
    target, _ = encode_file(REAL / "corpus" / "target.jsonl", encoder, None)
    pad = tokenizer.pad_token_id
    model = load_pretrained(folder, "float32", attn="eager")
    flop_batches = make_batches(pool[: args.flop_rows], 4096, 64, pad)
    cost = OUT / "cost.json"
    flops = json.loads(cost.read_text())["flops_per_token"] if cost.exists() else {}
    for name, spec in JVP.items():  # before any sketcher: it freezes the weights
        if name in flops:
            continue
        flops[name] = flops_per_token(lambda: make_embedder("jvp", model, spec),
                                      lambda w, bs: [w.embed(torch.from_numpy(b.input_ids),
                                                             torch.from_numpy(b.attention_mask)) for b in bs],
                                      flop_batches)
        print(name, f"{flops[name] / 1e6:.1f} MFLOP/token", flush=True)
    for name, spec in SKETCHES.items():
        if f"sketch-{name}" in flops:
            continue
        flops[f"sketch-{name}"] = flops_per_token(
            lambda: make_sketcher(model, spec),
            lambda w, bs: [w.sketch(*(torch.from_numpy(a) for a in (b.input_ids, b.attention_mask, b.trainable)))
                           for b in bs], flop_batches)
        print(f"sketch-{name}", f"{flops[f'sketch-{name}'] / 1e6:.1f} MFLOP/token", flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    cost.write_text(json.dumps({"flops_per_token": flops}, indent=1))  # kept if the sketching below dies
    tokens = {"pool": sum(e.n_tokens for e in pool), "target": sum(e.n_tokens for e in target)}
    pool_sketch, pool_tps = sketch_rows(model, pool, SKETCHES["default"], pad)  # the fidelity report's loop
    target_sketch, _ = sketch_rows(model, target, SKETCHES["default"], pad)
    pool_seconds = tokens["pool"] / pool_tps
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez(OUT / "sketch-default.npz", pool=pool_sketch, target=target_sketch,
             pool_tokens=np.asarray([e.n_tokens for e in pool]))
    info = {"flops_per_token": flops, "tokens": tokens, "default_sketch_pool_seconds": pool_seconds,
            "default_sketch_tokens_per_s": pool_tps}
    cost.write_text(json.dumps(info, indent=1))
    print(json.dumps(info, indent=1))


if __name__ == "__main__":
    main()
