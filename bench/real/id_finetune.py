"""A short fine-tune on each selection, scored by held-out target-domain loss (the real model).

    .venv/bin/python bench/real_id.py --selections     # writes bench/out/real/id/selections.json
    .venv/bin/python bench/real_id_finetune.py [--epochs 3] [--lr 1e-4]

Each selection (pool row indices) fine-tunes a fresh copy of SmolLM2-135M-Instruct with the
product's `finetune` (AdamW, linear decay, assistant-only loss, batch 4, every parameter), then
the mean assistant-token loss on the held-out eval set (40 rows of the target's domain, disjoint
from pool and target) is measured. Lower is better; "none" is the model before fine-tuning. The
same seed orders every selection's batches, so selections differ only in their rows.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_fidelity import REAL, encode_file, keep_freed_memory  # noqa: E402

from iprox_ray.corpus.batching import make_batches  # noqa: E402
from iprox_ray.corpus.encode import ChatEncoder  # noqa: E402
from iprox_ray.models.finetune import finetune  # noqa: E402
from iprox_ray.models.loading import load_pretrained, load_tokenizer  # noqa: E402
from iprox_ray.sketch.loss import per_sample_loss  # noqa: E402

OUT = REAL / "id"


def tensors(batch):
    return tuple(torch.from_numpy(a) for a in (batch.input_ids, batch.attention_mask, batch.trainable))


def eval_loss(model, rows, pad_id: int) -> float:
    """Token-weighted mean assistant-token loss."""
    total = weight = 0.0
    with torch.no_grad():
        for b in make_batches(rows, 4096, 16, pad_id):
            ids, mask, train = tensors(b)
            loss = per_sample_loss(model(input_ids=ids, attention_mask=mask).logits, ids, train)
            n = train[:, 1:].sum(1).float()
            total += float((loss * n).sum())
            weight += float(n.sum())
    return total / weight


def epochs_for(rows, n_epochs: int, batch: int, seed: int, pad_id: int):
    out = []
    for e in range(n_epochs):
        order = np.random.default_rng([seed, e]).permutation(len(rows))
        chunks = [order[i : i + batch] for i in range(0, len(order), batch)]
        out.append([tensors(make_batches([rows[j] for j in c], 1 << 30, batch, pad_id)[0]) for c in chunks])
    return out


def finetune_inputs():
    """(model folder, pad id, the 600 encoded pool rows, the 40 held-out target-domain rows)."""
    keep_freed_memory()
    torch.manual_seed(0)
    folder = REAL / "SmolLM2-135M-Instruct-hf"
    tokenizer = load_tokenizer(folder)
    encoder = ChatEncoder(tokenizer, 1024)
    pool, _ = encode_file(REAL / "corpus" / "pool.jsonl", encoder, None)
    held_out, _ = encode_file(REAL / "corpus" / "eval.jsonl", encoder, None)
    return folder, tokenizer.pad_token_id, pool, held_out


def fine_tuned_loss(folder, rows, held_out, pad: int, epochs: int, batch: int, lr: float, seed: int = 0) -> dict:
    """Fine-tune a fresh copy of the model on `rows` (batches ordered by `seed`); its held-out loss."""
    start = time.perf_counter()
    model = load_pretrained(folder, "float32")
    finetune(model, epochs_for(rows, epochs, batch, seed, pad), lr, 0.0, (0.9, 0.999), 1e-8)
    return {"eval_loss": eval_loss(model, held_out, pad), "rows": len(rows), "seconds": time.perf_counter() - start}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--selections", type=Path, default=OUT / "selections.json")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--out", type=Path, default=OUT / "finetune.json")
    args = ap.parse_args()
    folder, pad, pool, held_out = finetune_inputs()
    selections = json.loads(args.selections.read_text())
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    if "none" not in results:
        results["none"] = {"eval_loss": eval_loss(load_pretrained(folder, "float32"), held_out, pad)}
    for name, rows in selections.items():
        if name in results:
            continue
        results[name] = fine_tuned_loss(folder, [pool[i] for i in rows], held_out, pad, args.epochs, args.batch,
                                        args.lr)
        print(name, results[name], flush=True)
        args.out.write_text(json.dumps(results, indent=1))
    args.out.write_text(json.dumps(results, indent=1))
    print("| selection | held-out target-domain loss after fine-tuning |")
    print("|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['eval_loss']:.4f} |")


if __name__ == "__main__":
    main()
