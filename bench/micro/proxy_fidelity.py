"""Proxy fidelity table on the demo: Spearman / top-5% overlap vs the target for each proxy
method and ρ, with stage-1 and stage-2 times. The target's scores are computed once.

    python -m bench.micro.proxy_fidelity [--rows 512] [--rhos 0.3 0.5 0.7] [--out bench/out/proxy_fidelity.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import OUT, REPO
from iprox_ray.diagnostics.proxy_fidelity import influence_scores, probe_data
from iprox_ray.driver.pipeline import build_models
from iprox_ray.driver.run import Run
from iprox_ray.driver.rundir import open_run
from iprox_ray.execution.context import RunContext
from iprox_ray.influence.agreement import spearman, top_overlap
from iprox_ray.models.loading import load_pretrained
from iprox_ray.spec import load_job
from iprox_ray.stages.proxy import build_proxy
from iprox_ray.tasks.model_ref import ModelRef

VARIANTS = [  # (label, proxy overrides)
    ("IPSVD + alignment", ["proxy.method=\"ipsvd\""]),
    ("IPSVD only", ["proxy.method=\"ipsvd\"", "proxy.align_epochs=0"]),
    ("plain SVD", ["proxy.method=\"svd\"", "proxy.align_epochs=0"]),
    ("layer extraction", ["proxy.method=\"layer_extraction\""]),
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--rhos", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    parser.add_argument("--job", default=str(REPO / "jobs" / "demo.toml"))
    parser.add_argument("--out", default=str(OUT / "proxy_fidelity.json"))
    args = parser.parse_args()
    base = [f"fidelity.pool_rows={args.rows}", "proxy.method=\"none\""]
    run_dir = Path(tempfile.mkdtemp(prefix="proxy-bench-"))
    with open_run(load_job(args.job, base), run_dir, quiet=True) as ctx:
        warmed, _ = build_models(Run(ctx))  # warm-up once; every proxy starts from it
        pool, target, pad_id = probe_data(ctx)
        full = load_pretrained(warmed, "float32", ctx.job.model.attn_implementation)
        full_scores, full_tps = influence_scores(full, pool, target, ctx.job.sketch, pad_id)
    rows = []
    for rho in args.rhos:
        for label, overrides in VARIANTS:
            job = load_job(args.job, base[:1] + overrides + [f"proxy.rho={rho}"])
            vctx = RunContext(job, ctx.layout, quiet=True)
            out = Path(tempfile.mkdtemp(prefix="proxy-", dir=run_dir))
            start = time.perf_counter()
            info = build_proxy(vctx, warmed, out)
            build_seconds = time.perf_counter() - start
            scores, tps = influence_scores(ModelRef("proxy", out).load(), pool, target, vctx.job.sketch, pad_id)
            ok = np.isfinite(full_scores) & np.isfinite(scores)
            share, _, _ = top_overlap(full_scores[ok], scores[ok], 0.05)
            stage2 = info["stage2"]
            rows.append({
                "rho": rho, "proxy": label, "spearman": spearman(full_scores[ok], scores[ok]), "top5_overlap": share,
                "params_ratio": info["proxy_parameters"] / info["target_parameters"],
                "stage1_s": info["stage1_seconds"], "stage2_s": stage2["seconds"] if stage2 else 0.0,
                "build_s": build_seconds, "sketch_speedup": tps / full_tps,
            })
            print(json.dumps(rows[-1]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2))
    print("\n| ρ | proxy | Spearman | top-5% overlap | params | stage 1 s | stage 2 s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['rho']} | {r['proxy']} | {r['spearman']:.3f} | {r['top5_overlap']:.2f} | "
              f"{r['params_ratio']:.2f}× | {r['stage1_s']:.1f} | {r['stage2_s']:.1f} |")


if __name__ == "__main__":
    main()
