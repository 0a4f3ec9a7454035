"""bf16 vs fp32 sketches on the real model, both against exact influence (issue 27 item 4).

    .venv/bin/python -m bench.real.sketch_frontier                 # once: the truth (fidelity.exact.npz)
    .venv/bin/python -m bench.real.sketch_bf16 [--sketch k=v,...] [--rows 300]

The product's sketcher (`make_sketcher`, the default SketchSpec plus --sketch overrides) sketches
the 300 scored pool rows and the 40 target rows twice: `autocast = "off"` (fp32) and
`autocast = "bf16"` (torch's CPU bf16 autocast: the model's matmuls in bf16, while the sketcher
keeps its projections, their accumulation, the vector block and the loss in fp32, as it does on
GPUs). Both LESS score vectors are compared with exact LESS (Spearman, top-5 %) and with each
other; the rows are stored as the store keeps them (`store.sketch_dtype`, --dtype). This CPU has
AVX2 only, so bf16 is emulated: the seconds say nothing about a GPU.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from bench.common import REAL
from bench.real.common import agreement, encode_file, keep_freed_memory, sketch, stratified
from iprox_ray.corpus.encode import ChatEncoder
from iprox_ray.influence.less import target_direction
from iprox_ray.models.loading import load_pretrained, load_tokenizer
from iprox_ray.spec import SketchSpec
from iprox_ray.store.quantize import dequantize_rows, quantize_rows


def stored_units(rows: np.ndarray, dtype: str) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return dequantize_rows(*quantize_rows(rows / np.where(norms > 0, norms, 1), dtype))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=300)
    ap.add_argument("--sketch", default="", help="SketchSpec fields as k=v,k=v")
    ap.add_argument("--dtype", default="float16", choices=("float32", "float16", "int8"))
    ap.add_argument("--out", default=str(REAL / "bf16.json"))
    args = ap.parse_args()
    keep_freed_memory()
    truth = np.load(REAL / "fidelity.exact.npz")
    folder = REAL / "SmolLM2-135M-Instruct-hf"
    tokenizer = load_tokenizer(folder)
    encoder = ChatEncoder(tokenizer, 1024)
    pool, domains = encode_file(REAL / "corpus" / "pool.jsonl", encoder, None)
    target, _ = encode_file(REAL / "corpus" / "target.jsonl", encoder, None)
    chosen = stratified(np.asarray(domains), args.rows)
    rows = [pool[i] for i in chosen]
    exact = truth["exact_all"][chosen]
    fields = dict(kv.split("=", 1) for kv in args.sketch.split(",") if kv)
    model = load_pretrained(folder, "float32")
    out, scores = {"sketch": fields, "dtype": args.dtype, "rows": len(rows)}, {}
    for mode in ("off", "bf16"):
        spec = SketchSpec(**fields, autocast=mode)
        start = time.perf_counter()
        pool_rows, tokens, _, _ = sketch(model, spec, rows, tokenizer.pad_token_id)
        target_rows, _, _, _ = sketch(model, spec, target, tokenizer.pad_token_id)
        seconds = time.perf_counter() - start
        direction = target_direction(stored_units(target_rows, args.dtype))
        scores[mode] = stored_units(pool_rows, args.dtype) @ direction
        out[mode] = {"vs_exact": agreement(exact, scores[mode]), "seconds": seconds, "tokens": tokens}
        print(mode, json.dumps(out[mode]), flush=True)
    out["bf16_vs_fp32"] = agreement(scores["off"], scores["bf16"])
    out["spearman_loss"] = out["off"]["vs_exact"]["spearman"] - out["bf16"]["vs_exact"]["spearman"]
    print(json.dumps(out, indent=1))
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
