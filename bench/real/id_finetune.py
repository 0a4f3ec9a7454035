"""A short fine-tune on each selection, scored by held-out target-domain loss (the real model).

    .venv/bin/python -m bench.real.id --selections     # writes bench/out/real/id/selections.json
    .venv/bin/python -m bench.real.id_finetune [--epochs 3] [--lr 1e-4]

Each selection (pool row indices) fine-tunes a fresh copy of SmolLM2-135M-Instruct with the
product's `finetune` (AdamW, linear decay, assistant-only loss, batch 4, every parameter), then
the mean assistant-token loss on the held-out eval set (40 rows of the target's domain, disjoint
from pool and target) is measured. Lower is better; "none" is the model before fine-tuning. The
same seed orders every selection's batches, so selections differ only in their rows.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.common import REAL
from bench.real.common import eval_loss, fine_tuned_loss, finetune_inputs
from iprox_ray.models.loading import load_pretrained

OUT = REAL / "id"


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
