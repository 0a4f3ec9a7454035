"""P0 / P1 / P2: iprox-ray's sketcher vs bergson, vs the physical floor, vs a LESS-style path.

Same random-init 7 M Llama (saved once, loaded by both), same 512 rows of 128–256 tokens, same
16×16 per-module projection of q,k,v,o,gate,up,down (bergson: --projection_dim 16 and
--filter_modules lm_head), same token budget per batch (both sort by length and pack), same
threads. The two sides run alternately, `--rounds` times; each side's best round is reported
(the machine is shared, so the minimum is the least disturbed measurement).

    .venv/bin/python -m bench.micro.sketch_vs_bergson [--rounds 2] [--threads 2] [--budget 8192]

bergson must be installed in bench/.venv-bergson (see bench/results/sketch-and-store.md); without it P0 is
skipped. bergson runs bench/micro/bergson_build_timed.py by path, in its own venv.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import torch

from bench.common import (
    OUT,
    REPO,
    TOKENIZER,
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
from iprox_ray.models.loading import load_pretrained, save_model
from iprox_ray.models.loss import per_sample_loss
from iprox_ray.models.patterns import select_modules
from iprox_ray.sketch.capture import HookSketcher
from iprox_ray.sketch.dense_projection import DenseProjector
from iprox_ray.sketch.kronecker import KroneckerSketcher
from iprox_ray.spec.patterns import DEFAULT_LINEAR_PATTERNS

BERGSON = REPO / "bench" / ".venv-bergson" / "bin" / "python"
BERGSON_TIMED = Path(__file__).resolve().parent / "bergson_build_timed.py"  # run by path in bergson's venv


class NullSketcher(HookSketcher):
    """The same capture machinery with no projection work: our approach's own floor."""

    @property
    def matrix_dim(self) -> int:
        return 1

    def _capture(self, name, x):
        return None

    def _accumulate(self, name, kept, grad, rows):
        return None


def naive_floor(model, batch_list) -> None:
    """Forward with full logits + activation-only backward down to the embeddings (weights frozen)."""
    for p in model.parameters():
        p.requires_grad_(False)
    for ids, mask, train in batch_list:
        embeds = model.get_input_embeddings()(ids).detach().requires_grad_(True)
        logits = model(inputs_embeds=embeds, attention_mask=mask).logits
        per_sample_loss(logits, ids, train).sum().backward()


def weight_grad_pass(model, batch_list) -> None:
    """A plain padded batched forward+backward with weight gradients (a training step's work)."""
    for p in model.parameters():
        p.requires_grad_(True)
    for ids, mask, train in batch_list:
        model.zero_grad(set_to_none=True)
        logits = model(input_ids=ids, attention_mask=mask).logits
        per_sample_loss(logits, ids, train).sum().backward()
    for p in model.parameters():
        p.requires_grad_(False)


def prepare(model_dir: Path, data_dir: Path, rows) -> None:
    # bergson caps the token batch at the tokenizer's model_max_length: give it the model's.
    tokenizer = OUT / "tokenizer"
    if not tokenizer.exists():
        shutil.copytree(TOKENIZER, tokenizer)
        config = json.loads((tokenizer / "tokenizer_config.json").read_text())
        config["model_max_length"] = 8192
        (tokenizer / "tokenizer_config.json").write_text(json.dumps(config))
    if not (model_dir / "config.json").exists():
        save_model(make_model("7m", seed=0), model_dir)
    if not data_dir.exists():
        from datasets import Dataset

        Dataset.from_dict({"input_ids": [r.tolist() for r in rows]}).save_to_disk(str(data_dir))


def run_bergson(model_dir: Path, data_dir: Path, budget: int, threads: int) -> dict:
    run_path = OUT / "bergson-index"
    for path in (run_path, Path(str(run_path) + ".part")):
        subprocess.run(["rm", "-rf", str(path)], check=True)
    cmd = [str(BERGSON), str(BERGSON_TIMED), str(threads), "build", str(run_path),
           "--model", str(model_dir), "--tokenizer", str(OUT / "tokenizer"), "--dataset", str(data_dir),
           "--precision", "fp32", "--projection_dim", "16", "--token_batch_size", str(budget),
           "--filter_modules", "lm_head", "--nproc_per_node", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    line = [x for x in proc.stdout.splitlines() if x.startswith("BERGSON_TIMING ")]
    if proc.returncode or not line:
        raise RuntimeError(f"bergson failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    result = json.loads(line[0].split(" ", 1)[1])
    processed = run_path / "total_processed.pt"
    if processed.exists():
        result["tokens"] = int(torch.load(processed))
    return result


def less_style(model, rows, dim: int, n_rows: int) -> tuple[float, int]:
    """One backward per row with weight gradients, flatten the 28 modules, dense SRHT to `dim`
    (SRHT is far faster than TRAK's CPU projector, so this flatters the LESS-style side)."""
    modules = select_modules(model, DEFAULT_LINEAR_PATTERNS)
    for p in model.parameters():
        p.requires_grad_(False)
    for _, m in modules:
        m.weight.requires_grad_(True)
    projector = DenseProjector(seed=0, k=dim, kind="srht")
    start = time.perf_counter()
    tokens = 0
    for row in rows[:n_rows]:
        ids = torch.from_numpy(row)[None]
        model.zero_grad(set_to_none=True)
        loss = per_sample_loss(model(input_ids=ids).logits, ids, torch.ones_like(ids, dtype=torch.bool))
        loss.sum().backward()
        flat = torch.cat([m.weight.grad.flatten() for _, m in modules])[None]
        projector.project("all", flat)
        tokens += len(row)
    for _, m in modules:
        m.weight.requires_grad_(False)
    return time.perf_counter() - start, tokens


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--budget", type=int, default=8192)
    ap.add_argument("--less-rows", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model_dir, data_dir = OUT / "model-7m", OUT / "rows-512"
    rows = make_rows(512)
    prepare(model_dir, data_dir, rows)
    model = load_pretrained(model_dir)
    batch_list = batches(rows, args.budget)
    tokens = n_tokens(batch_list)
    sketcher = KroneckerSketcher(model, DEFAULT_LINEAR_PATTERNS, 16, 16, seed=0)
    null = NullSketcher(model, DEFAULT_LINEAR_PATTERNS)
    times: dict[str, list[float]] = {}
    bergson_runs = []
    have_bergson = BERGSON.exists()
    run_sketcher(sketcher, batch_list[:1])  # warm-up: first-call allocations
    for r in range(args.rounds):
        for name, fn in (("iprox_sketch", lambda: run_sketcher(sketcher, batch_list)),
                         ("floor_tight", lambda: run_sketcher(null, batch_list)),
                         ("floor_naive", lambda: naive_floor(model, batch_list)),
                         ("weight_grads", lambda: weight_grad_pass(model, batch_list))):
            times.setdefault(name, []).append(timed(fn))
        if have_bergson:
            bergson_runs.append(run_bergson(model_dir, data_dir, args.budget, args.threads))
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f}s" for k, v in times.items())
              + (f", bergson collect {bergson_runs[-1]['collect_s']:.1f}s" if have_bergson else ""), flush=True)
    best = {k: min(v) for k, v in times.items()}
    rate = {k: tokens / v for k, v in best.items()}
    less_s, less_tokens = less_style(model, rows, sketcher.dim, args.less_rows)
    result = {
        "model_params": n_params(model), "rows": len(rows), "tokens": tokens, "batches": len(batch_list),
        "token_budget": args.budget, "threads": args.threads, "sketch_dim": sketcher.dim,
        "seconds_best": best, "seconds_all": times, "tokens_per_s": rate,
        "P1_sketch_over_floor_tight": best["iprox_sketch"] / best["floor_tight"],
        "P1_sketch_over_floor_naive": best["iprox_sketch"] / best["floor_naive"],
        "less_style": {"rows": args.less_rows, "tokens": less_tokens, "seconds": less_s,
                       "tokens_per_s": less_tokens / less_s},
        "P2_speedup_over_less_style": rate["iprox_sketch"] / (less_tokens / less_s),
        "load_average_end": load_average(),
    }
    if bergson_runs:
        collect = min(b["collect_s"] for b in bergson_runs)
        result["bergson"] = {"runs": bergson_runs, "collect_s_best": collect,
                             "tokens_per_s_collect": bergson_runs[0].get("tokens", tokens) / collect,
                             "tokens_per_s_wall": tokens / min(b["wall_s"] for b in bergson_runs)}
        result["P0_iprox_over_bergson_tokens_per_s"] = rate["iprox_sketch"] / result["bergson"]["tokens_per_s_collect"]
    print(json.dumps(result, indent=2))
    print("wrote", write_result("sketch_vs_bergson", result))


if __name__ == "__main__":
    main()
