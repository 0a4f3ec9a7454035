"""JVP tangents of the real model, captured once for every embedding variant `id.py` compares.

    .venv/bin/python -m bench.real.id_embed [--depths 1,2,4,8,12] [--tangents 2] [--seed 0]

One forward-mode pass per tangent through the first max(depths) blocks, with the product's own
JvpEmbedder (its tangents, seeded by parameter name, and its cheap softmax rule). A tangent over
the first B blocks' parameters restricted to blocks ≤ b is the depth-b tangent of the same seed,
so hooks on the earlier blocks give every depth from the one pass. At each depth it keeps the
T·d_model tangent outputs under four readouts: last real token or mean over real tokens, each
with or without the model's final norm applied (the official code reads the logits with
lm_head = identity, i.e. after the final norm). Seconds per depth are measured by the product's
`embed` on a subset, at that depth alone.

Writes bench/out/real/id/tangents-T{T}-s{seed}.npz: raw[depth, readout] -> [N, T, d_model].
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.autograd.forward_ad as fwAD

from bench.common import REAL
from bench.real.common import encode_file, keep_freed_memory
from iprox_ray.corpus.batching import make_batches
from iprox_ray.corpus.encode import ChatEncoder
from iprox_ray.models.loading import load_pretrained, load_tokenizer
from iprox_ray.sketch.jvp import JvpEmbedder, final_norm, read_out
from iprox_ray.sketch.softmax_jvp import CheapSoftmaxJvp
from iprox_ray.spec.scoring import DEFAULT_BLOCK_PATTERNS, DEFAULT_FINAL_NORM_PATTERNS

OUT = REAL / "id"
READOUTS = ("last", "last+norm", "mean", "mean+norm", "answer", "answer+norm", "hidden:mean+norm")


def readouts(hidden, norm, mask: torch.Tensor, answer: torch.Tensor) -> dict[str, torch.Tensor]:
    """[B, d] tangents of one dual hidden state under each readout (the product's read_out):
    last token, mean over real tokens, mean over the answer (trainable) tokens; and the primal's
    mean (hidden:, no tangent) for comparison."""
    out = {}
    for suffix, x in (("", hidden), ("+norm", norm(hidden))):
        primal, t = fwAD.unpack_dual(x)
        for readout in ("last", "mean"):
            out[f"{readout}{suffix}"] = read_out(t, mask, readout)
        out[f"answer{suffix}"] = read_out(t, answer, "mean")
        if suffix:
            out["hidden:mean+norm"] = read_out(primal, mask, "mean")
    return out


def capture(embedder: JvpEmbedder, norm, depths: list[int], batch) -> dict[tuple[int, str], torch.Tensor]:
    ids, mask = torch.from_numpy(batch.input_ids), torch.from_numpy(batch.attention_mask)
    answer = torch.from_numpy(batch.trainable).long()
    parts: dict[tuple[int, str], list[torch.Tensor]] = {}
    for tangent in embedder.tangents:
        got: dict[int, dict] = {}
        handles = [embedder.blocks[d - 1][1].register_forward_hook(
            lambda m, i, o, d=d: got.__setitem__(d, readouts(o[0] if isinstance(o, tuple) else o, norm, mask, answer)))
            for d in depths if d < len(embedder.blocks)]
        try:
            with torch.no_grad(), CheapSoftmaxJvp(), fwAD.dual_level():
                duals = {n: fwAD.make_dual(p, tangent[n]) for n, p in embedder.params.items()}
                hidden = embedder._hidden_after_last_block(ids, mask, duals)
                got[len(embedder.blocks)] = readouts(hidden, norm, mask, answer)
        finally:
            for h in handles:
                h.remove()
        for d in depths:
            for r, t in got[d].items():
                parts.setdefault((d, r), []).append(t)
    return {k: torch.stack(v, dim=1) for k, v in parts.items()}  # [B, T, d]


def product_seconds(model, depth: int, tangents: int, encoded, pad_id: int) -> dict:
    """The product's embed() at one depth alone on these rows: seconds per 1k tokens."""
    emb = JvpEmbedder(model, DEFAULT_BLOCK_PATTERNS, depth, tangents, 4096, 0)
    batches = make_batches(encoded, 4096, 64, pad_id)
    start = time.perf_counter()
    for b in batches:
        emb.embed(torch.from_numpy(b.input_ids), torch.from_numpy(b.attention_mask))
    seconds = time.perf_counter() - start
    tokens = sum(b.n_tokens for b in batches)
    return {"depth": depth, "tangents": tangents, "tokens": tokens, "seconds": seconds,
            "seconds_per_1k_tokens": 1000 * seconds / tokens}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--depths", default="1,2,4,8,12")
    ap.add_argument("--tangents", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pool-rows", type=int, default=600)
    ap.add_argument("--suffix", default="", help="appended to the output file's name")
    ap.add_argument("--timing-rows", type=int, default=60, help="rows for the product's per-depth timing")
    args = ap.parse_args()
    keep_freed_memory()
    depths = sorted(int(d) for d in args.depths.split(","))
    folder = REAL / "SmolLM2-135M-Instruct-hf"
    tokenizer = load_tokenizer(folder)
    pool, _ = encode_file(REAL / "corpus" / "pool.jsonl", ChatEncoder(tokenizer, 1024), args.pool_rows)
    model = load_pretrained(folder, "float32", attn="eager")
    embedder = JvpEmbedder(model, DEFAULT_BLOCK_PATTERNS, max(depths), args.tangents, 4096, args.seed)
    norm = final_norm(model, DEFAULT_FINAL_NORM_PATTERNS, embedder.blocks)
    out = {(d, r): np.zeros((len(pool), args.tangents, embedder.d_model), np.float32) for d in depths for r in READOUTS}
    start = time.perf_counter()
    for i, batch in enumerate(make_batches(pool, 4096, 64, tokenizer.pad_token_id)):
        for key, t in capture(embedder, norm, depths, batch).items():
            out[key][batch.rows] = t.numpy()
        print(f"  batch {i}: {time.perf_counter() - start:.0f} s", flush=True)
    timing = [product_seconds(model, d, args.tangents, pool[: args.timing_rows], tokenizer.pad_token_id)
              for d in depths if args.timing_rows]
    for t in timing:
        print(t, flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"tangents-T{args.tangents}-s{args.seed}{args.suffix}.npz"
    np.savez(path, depths=np.asarray(depths), readouts=np.asarray(READOUTS),
             timing=np.asarray([[t["depth"], t["seconds_per_1k_tokens"]] for t in timing]).reshape(-1, 2),
             **{f"d{d}:{r}": v for (d, r), v in out.items()})
    print(f"wrote {path} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
