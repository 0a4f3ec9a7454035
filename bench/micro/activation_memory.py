"""Activation memory of the sketch pass per token: measured points, and the config model's fit.

    .venv/bin/python -m bench.micro.activation_memory measure [--out FILE]   # the grid
    .venv/bin/python -m bench.micro.activation_memory point MODEL ROWS LENGTH [--loss-share S]
    .venv/bin/python -m bench.micro.activation_memory fit FILE
    .venv/bin/python -m bench.micro.activation_memory inputs   # bench/scale/budget_job.toml's inputs

Each point runs in a fresh process (resident-set growth is only honest there): the model loads
and every weight is read once (from_pretrained maps the safetensors file: its pages would
otherwise become resident in the batch and count as activations), the product's sketcher
(`make_sketcher`, default `SketchSpec`) is built, and batches of ROWS rows ×
LENGTH tokens (random ids, the last `loss-share` of each row trainable) go through the plan's own
timing code (`cost.measure.time_pass`: peak resident set above the loaded model). MODEL is a
random-init Llama shape `llama:LAYERS,HIDDEN,INTER,HEADS,KV,VOCAB`, a random-init model from a
shipped config `fixture:NAME` (tests/fixtures/configs/NAME.json: the SmolLM2-135M shape in the
grid), or `real` (SmolLM2-135M-Instruct, bench/real/REAL.md; not in the grid: loading it is the
heavy part, and its activations are the same shape's). `fit` compares each point with the config model
(`sketch/memory.py`) and prints the calibration table for bench/results/plan-and-cost.md.

Keep every point small on a shared machine: the grid stays under ~4 GB a process.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import numpy as np
import torch

from bench.common import OUT, REPO, module_command

FIXTURES = REPO / "tests" / "fixtures" / "configs"
REAL = OUT / "real" / "SmolLM2-135M-Instruct-hf"
if not REAL.exists():  # a worktree without the (git-ignored) real model: the main checkout's
    REAL = Path("/work/main/bench/out/real/SmolLM2-135M-Instruct-hf")

# (model, rows, length, loss share): shapes that move one config term at a time, and the real model
GRID = [
    ("llama:4,256,1024,4,4,4096", 8, 128, 1.0),
    ("llama:4,256,1024,4,4,4096", 16, 128, 1.0),
    ("llama:4,256,1024,4,4,4096", 4, 512, 1.0),
    ("llama:4,256,1024,4,4,4096", 16, 128, 0.25),
    ("llama:8,256,1024,4,4,4096", 16, 128, 1.0),
    ("llama:4,512,1024,8,8,4096", 16, 128, 1.0),
    ("llama:4,256,3072,4,4,4096", 16, 128, 1.0),
    ("llama:4,256,1024,4,4,32768", 16, 128, 1.0),
    ("llama:4,256,1024,4,4,32768", 16, 128, 0.25),
    ("llama:4,512,1024,16,4,4096", 16, 128, 1.0),
    ("fixture:smollm2-135m", 2, 256, 0.5),
    ("fixture:smollm2-135m", 4, 256, 0.5),
    ("fixture:smollm2-135m", 4, 256, 1.0),
    ("fixture:smollm2-135m", 8, 128, 1.0),
    ("fixture:smollm2-135m", 6, 256, 0.5),
    ("llama:4,256,1024,4,4,4096", 16, 128, 1.0, "eager"),
    ("llama:4,256,1024,4,4,4096", 4, 512, 1.0, "eager"),
]


def build(model: str, attn: str = "sdpa"):
    """(config, loader) for a MODEL argument."""
    from transformers import AutoConfig, LlamaConfig

    from iprox_ray.models.loading import load_pretrained, random_init

    if model == "real":
        return AutoConfig.from_pretrained(REAL), lambda: load_pretrained(REAL, "float32", attn)
    if model.startswith("fixture:"):
        config = AutoConfig.for_model(**json.loads((FIXTURES / f"{model.split(':', 1)[1]}.json").read_text()))
        return config, lambda: random_init(config, 0, attn=attn)
    layers, hidden, inter, heads, kv, vocab = (int(x) for x in model.split(":")[1].split(","))
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=4096,
                         tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return config, lambda: random_init(config, 0, attn=attn)


def point(model: str, rows: int, length: int, loss_share: float, attn: str = "sdpa") -> dict:
    import resource

    from iprox_ray.corpus.batching import Batch
    from iprox_ray.cost.measure import time_pass
    from iprox_ray.sketch.factory import make_sketcher
    from iprox_ray.spec import SketchSpec

    torch.set_num_threads(2)
    config, load = build(model, attn)
    rng = np.random.default_rng(0)
    ids = rng.integers(3, min(config.vocab_size, 4096), size=(rows, length)).astype(np.int64)
    mask = np.ones_like(ids)
    trainable = np.zeros_like(ids, dtype=bool)
    trainable[:, length - max(1, int(round(loss_share * length))):] = True
    batch = Batch(np.arange(rows), ids, mask, trainable)

    def loader():
        model = load()
        with torch.no_grad():  # every weight resident first (from_pretrained maps the file), as plan does
            for param in model.parameters():
                param.sum()
        sketcher = make_sketcher(model, SketchSpec())
        return lambda b: sketcher.sketch(*(torch.from_numpy(a) for a in (b.input_ids, b.attention_mask,
                                                                         b.trainable))).sketch.numpy()

    m = time_pass(loader, [batch], 1, "cpu", 2)
    return {"model": model, "rows": rows, "length": length, "loss_share": loss_share, "attn": attn,
            "activation_bytes": m.activation_bytes, "model_bytes": m.model_bytes,
            "process_peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "config": config.to_dict()}


def measure(out: Path) -> None:
    done = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    have = {(d["model"], d["rows"], d["length"], d["loss_share"], d.get("attn", "sdpa")) for d in done}
    for model, rows, length, share, *rest in GRID:
        attn = rest[0] if rest else "sdpa"
        if (model, rows, length, share, attn) in have:
            continue
        cmd = module_command(__spec__.name, "point", model, str(rows), str(length), "--loss-share", str(share),
                             "--attn", attn)
        line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        with open(out, "a") as fh:
            fh.write(line + "\n")
        d = json.loads(line)
        print(f"{model:<28} {attn:<5} {rows:>3} x {length:<4} loss {share:<4} "
              f"activation {d['activation_bytes'] / 2**20:8.1f} MiB",
              flush=True)


def _config(d: dict):
    from transformers import AutoConfig

    config = dict(d["config"])
    return AutoConfig.for_model(config.pop("model_type"), **config)


def _shape(d: dict):
    from iprox_ray.sketch.memory import ModelShape

    return ModelShape.from_config(_config(d))


def least_squares(points: list[dict]) -> None:
    """The unconstrained fit of the model's terms (floats per unit; fixed MiB), for calibration."""
    from iprox_ray.sketch.memory import FLOAT_BYTES

    rows, y = [], []
    for d in points:
        s, tokens = _shape(d), d["rows"] * d["length"]
        eager = d.get("attn", "sdpa") == "eager"
        rows.append([tokens * s.layers * s.hidden, tokens * s.layers * s.kv_dim, tokens * s.layers * s.intermediate,
                     tokens * s.layers * s.heads * d["length"] * eager, tokens * s.vocab * d["loss_share"],
                     1.0 / FLOAT_BYTES])
        y.append(d["activation_bytes"] / FLOAT_BYTES)
    coef, *_ = np.linalg.lstsq(np.asarray(rows), np.asarray(y), rcond=None)
    names = ("hidden", "kv", "intermediate", "head x position (eager)", "vocab (per loss token)")
    print("least squares, floats per unit: " + ", ".join(f"{n} {c:.2f}" for n, c in zip(names, coef))
          + f"; fixed {coef[-1] / 2**20:.0f} MiB")


def fit(path: Path) -> None:
    from iprox_ray.sketch.memory import activation_bytes

    points = [json.loads(line) for line in path.read_text().splitlines()]
    least_squares(points)
    print("\n| model | attention | rows × length | loss share | measured MiB | predicted MiB | predicted / measured |")
    print("|---|---|---|---:|---:|---:|---:|")
    ratios = []
    for d in points:
        attn = d.get("attn", "sdpa")
        predicted = activation_bytes(_shape(d), d["rows"] * d["length"], d["length"], d["loss_share"], attn)
        ratio = predicted / d["activation_bytes"]
        ratios.append(ratio)
        print(f"| {d['model']} | {attn} | {d['rows']} × {d['length']} | {d['loss_share']} | "
              f"{d['activation_bytes'] / 2**20:,.0f} | {predicted / 2**20:,.0f} | {ratio:.2f} |")
    print(f"\nratio min {min(ratios):.2f}, median {np.median(ratios):.2f}, max {max(ratios):.2f}")


def inputs(out: Path) -> None:
    """bench/scale/budget_job.toml's model folder (the SmolLM2-135M config, random-init by the run) and 32
    pool / 8 target rows of ~420 words, so every row fills max_length and every batch its budget."""
    import random
    import shutil

    (out / "model").mkdir(parents=True, exist_ok=True)
    shutil.copy(FIXTURES / "smollm2-135m.json", out / "model" / "config.json")
    rng = random.Random(0)
    words = ("the model reads every row and writes a sketch of its gradient into the store so that scoring can "
             "stream it later").split()
    for split, n in (("pool", 32), ("target", 8)):
        with open(out / f"{split}.jsonl", "w") as fh:
            for i in range(n):
                row = {"id": f"{split}-{i}", "domain": split, "prompt": " ".join(rng.choice(words) for _ in range(20)),
                       "response": " ".join(rng.choice(words) for _ in range(400))}
                fh.write(json.dumps(row) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("point")
    p.add_argument("model")
    p.add_argument("rows", type=int)
    p.add_argument("length", type=int)
    p.add_argument("--loss-share", type=float, default=1.0)
    p.add_argument("--attn", choices=("sdpa", "eager"), default="sdpa")
    m = sub.add_parser("measure")
    m.add_argument("--out", type=Path, default=OUT / "activation_memory.jsonl")
    f = sub.add_parser("fit")
    f.add_argument("path", type=Path, nargs="?", default=OUT / "activation_memory.jsonl")
    sub.add_parser("inputs")
    args = ap.parse_args()
    if args.cmd == "point":
        print(json.dumps(point(args.model, args.rows, args.length, args.loss_share, args.attn)))
    elif args.cmd == "inputs":
        inputs(OUT / "budget")
    elif args.cmd == "measure":
        args.out.parent.mkdir(parents=True, exist_ok=True)
        measure(args.out)
    else:
        fit(args.path)


if __name__ == "__main__":
    main()
