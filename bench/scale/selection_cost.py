"""Selection cost on the demo: Influence Distillation vs LESS vs RDS+ (wall time and FLOPs).

Runs `iprox-ray run jobs/demo.toml` once per method (same warm-up and proxy settings, fresh run
directories, the demo's embedded Ray with 2 CPU actors) and reports the selection stages' wall
time: embed + landmarks + sketch + score + select (warm-up, proxy, dedup and outputs are the
same for all and left out). FLOPs: torch's flop registry (a dispatch mode) on the run's own proxy over the first
pool shard's batches gives FLOPs per token for each model pass (sketch: forward + activation
backward + projections; JVP embedding; pooled forward), multiplied by the tokens each stage
processed (its completion markers); KRR and scoring FLOPs are counted analytically.

    .venv/bin/python -m bench.scale.selection_cost [--landmarks 290] [--blocks 1] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from bench.common import REPO, flop_count

SELECTION_STAGES = ("embed", "landmarks", "sketch", "score", "select")


def run(method: str, run_dir: Path, extra: list[str]) -> dict:
    args = [sys.executable, "-m", "iprox_ray.cli.main", "run", str(REPO / "jobs" / "demo.toml"), "--run-dir",
            str(run_dir), "-q", "--set", f'scoring.method="{method}"']
    for item in extra:
        args += ["--set", item]
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads((run_dir / "summary.json").read_text())


def marker_tokens(run_dir: Path, stage: str) -> int:
    folder = run_dir / "completions" / stage
    return sum(json.loads(p.read_text()).get("tokens", 0) for p in folder.glob("*.json")) if folder.exists() else 0


def flops_per_token(run_dir: Path) -> dict[str, float]:
    """Measured FLOPs per token of each model pass, on the run's proxy and first pool shard."""
    from iprox_ray.corpus.batching import make_batches
    from iprox_ray.corpus.manifest import Manifest
    from iprox_ray.corpus.shard_reader import read_shard
    from iprox_ray.execution.context import RunContext
    from iprox_ray.sketch.kronecker import KroneckerSketcher
    from iprox_ray.sketch.pooled import PooledEmbedder
    from iprox_ray.spec.job import build_job
    from iprox_ray.store.layout import RunLayout
    from iprox_ray.tasks.embed_task import make_embedder
    from iprox_ray.tasks.inputs import make_encoder
    from iprox_ray.tasks.model_ref import ModelRef

    config = json.loads((run_dir / "config.json").read_text())
    job = build_job(config["spec"], Path(config["base_dir"]), "config.json")
    ctx = RunContext(job, RunLayout(run_dir), quiet=True)
    encoder = make_encoder(ctx, "pool")
    manifest = Manifest.load(ctx.layout.manifest("pool"), ctx.layout.manifest_info("pool"))
    rows = read_shard("pool", manifest.shards[0], job.data.pool, encoder)
    batches = [tuple(torch.from_numpy(a) for a in (b.input_ids, b.attention_mask, b.trainable))
               for b in make_batches(rows.encoded, job.sketch.token_budget, job.sketch.max_batch_rows,
                                     encoder.tokenizer.pad_token_id)]
    tokens = sum(int(m.sum()) for _, m, _ in batches)
    model = ModelRef("proxy", run_dir / "proxy", attn="eager").load()
    e = job.scoring.embed
    out = {}
    passes = {
        "jvp": lambda emb: [emb.embed(i, m) for i, m, _ in batches],
        "pooled": lambda emb: [emb.embed(i, m) for i, m, _ in batches],
        "sketch": lambda emb: [emb.sketch(i, m, t) for i, m, t in batches],
    }
    makers = {
        "jvp": lambda: make_embedder("jvp", model, e),
        "pooled": lambda: PooledEmbedder(model),
        "sketch": lambda: KroneckerSketcher(model, job.sketch.modules, job.sketch.proj_in, job.sketch.proj_out,
                                            job.sketch.seed, job.sketch.projection),
    }
    for name in ("jvp", "pooled", "sketch"):  # the sketcher freezes the weights: last
        embedder = makers[name]()
        with flop_count() as counter:
            with torch.no_grad() if name != "sketch" else torch.enable_grad():
                passes[name](embedder)
        embedder.close()
        out[name] = counter.total / tokens
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--landmarks", type=int, default=290,
                    help="Influence Distillation landmarks (~10%% of the demo pool)")
    ap.add_argument("--blocks", type=int, default=1, help="JVP blocks (the paper: 4 of 32; the demo model has 4)")
    ap.add_argument("--keep", help="keep the run directories here")
    args = ap.parse_args()
    out_root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="selection-cost-"))
    methods = {
        "influence-distillation": [f"scoring.landmarks.count={args.landmarks}", f"scoring.embed.blocks={args.blocks}"],
        "less": [],
        "rds+": [],
    }
    results = {}
    for method, extra in methods.items():
        run_dir = out_root / method.replace("+", "plus")
        summary = run(method, run_dir, extra) if not (run_dir / "summary.json").exists() else \
            json.loads((run_dir / "summary.json").read_text())
        results[method] = (run_dir, summary)
    print(f"demo pool {results['less'][1]['valid_pool_rows']} rows")
    print(f"{'method':<24}{'select s':>9}  {'stage seconds':<56}{'TFLOPs':>9}  FLOPs/token (M)")
    for method, (run_dir, summary) in results.items():
        fpt = flops_per_token(run_dir)  # each run's own settings (e.g. its JVP depth)
        secs = {k: v for k, v in summary["stage_seconds"].items() if k in SELECTION_STAGES}
        sketch_tokens = marker_tokens(run_dir, "sketch-pool") + marker_tokens(run_dir, "sketch-targets-main")
        flops = fpt["sketch"] * sketch_tokens
        if method == "influence-distillation":
            flops += fpt["jvp"] * marker_tokens(run_dir, "embed-jvp-pool")
            import zarr

            root = zarr.open_group(str(run_dir / "store.zarr"), mode="r")
            L, N = root["scores/main"].attrs["landmarks_used"], summary["valid_pool_rows"]
            E = root["embeddings/jvp/pool"].attrs["dim"]
            flops += N * (2 * L * E + 6 * L) + 2 * L**3 / 3  # propagation + the landmark solve
        if method == "rds+":
            flops += fpt["pooled"] * (marker_tokens(run_dir, "embed-rds-pool")
                                      + marker_tokens(run_dir, "embed-rds-targets-main"))
        detail = ", ".join(f"{k} {v:.1f}" for k, v in secs.items())
        per_token = ", ".join(f"{k} {v / 1e6:.2f}" for k, v in fpt.items())
        print(f"{method:<24}{sum(secs.values()):>9.1f}  {detail:<56}{flops / 1e12:>9.3f}  {per_token}")
    print(f"run directories: {out_root} (a rerun with --keep reuses finished runs)")


if __name__ == "__main__":
    main()
