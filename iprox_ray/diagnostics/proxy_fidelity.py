"""The influence-fidelity report: does the proxy rank the pool like the target would?

Draws a seeded probe sample of the pool and the target set, sketches both with the full (warmed)
target model and with the proxy (same sketch settings, same projection seed), scores them the
same way, and reports Spearman, Kendall, top-share overlap, and what the proxy costs.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from iprox_ray.corpus.batching import make_batches
from iprox_ray.corpus.shard_reader import read_shard
from iprox_ray.execution.context import RunContext
from iprox_ray.influence.agreement import kendall_tau_b, spearman, top_overlap
from iprox_ray.influence.exact import exact_less_scores
from iprox_ray.influence.less import cosine_scores, target_direction
from iprox_ray.models.loading import count_parameters, load_pretrained
from iprox_ray.proxy.artifact import read_manifest
from iprox_ray.proxy.build import stage2_summary
from iprox_ray.proxy.fidelity import forward_flops_per_token, sketch_flops_per_token
from iprox_ray.sketch.factory import make_sketcher, sketched_modules
from iprox_ray.spec import FidelitySpec, SketchSpec
from iprox_ray.spec.base import fingerprint
from iprox_ray.spec.proxy import LOW_RANK_METHODS
from iprox_ray.store.atomic import atomic_write_json, read_json
from iprox_ray.store.layout import MAIN_TARGET, POOL, target_split
from iprox_ray.tasks.compute import device_kind, sketch_precision
from iprox_ray.tasks.inputs import (
    encode_sample,
    make_encoder,
    manifest_for,
    sample_rows,
    source_for,
)
from iprox_ray.tasks.model_ref import ModelRef
from iprox_ray.tasks.sketch_budget import sketch_spec


def sketch_rows(model: torch.nn.Module, encoded, s: SketchSpec, pad_id: int) -> tuple[np.ndarray, float]:
    """(sketch rows in input order, tokens/s) for a list of encoded rows, in this process."""
    sketcher = make_sketcher(model, s)  # plain gradients on both sides: fidelity compares models
    out = np.zeros((len(encoded), sketcher.dim), dtype=np.float32)
    tokens = 0
    start = time.perf_counter()
    try:
        for batch in make_batches(encoded, s.token_budget, s.max_batch_rows, pad_id):
            result = sketcher.sketch(*(torch.from_numpy(a)
                                       for a in (batch.input_ids, batch.attention_mask, batch.trainable)))
            out[batch.rows] = result.sketch.cpu().numpy()
            tokens += batch.n_tokens
    finally:
        sketcher.close()
    return out, tokens / max(time.perf_counter() - start, 1e-9)


def probe_data(ctx: RunContext):
    spec = ctx.job.fidelity
    encoder = make_encoder(ctx, POOL)
    pool_manifest = manifest_for(ctx, POOL)
    fraction = min(1.0, spec.pool_rows / pool_manifest.n_rows)
    pool = encode_sample(ctx, pool_manifest, sample_rows(pool_manifest, fraction, seed=ctx.job.run.seed + 8), encoder)
    split = target_split(MAIN_TARGET)
    target_manifest, target_encoder = manifest_for(ctx, split), make_encoder(ctx, split)
    target = []
    for shard in target_manifest.shards:
        target += read_shard(split, shard, source_for(ctx, split), target_encoder).encoded
        if len(target) >= spec.target_rows:
            break
    return pool, target[: spec.target_rows], encoder.tokenizer.pad_token_id


def influence_scores(model, pool, target, spec: SketchSpec, pad_id: int) -> tuple[np.ndarray, float]:
    """LESS cosine of each probe pool row to the target; tokens/s of sketching the pool rows."""
    pool_sketch, tokens_per_s = sketch_rows(model, pool, spec, pad_id)
    target_sketch, _ = sketch_rows(model, target, spec, pad_id)
    return cosine_scores(pool_sketch, target_direction(target_sketch)), tokens_per_s


def report_key(ctx: RunContext, proxy: ModelRef) -> str:
    """What a report depends on: the job's science (model, data, proxy, sketch, seeds), the
    [fidelity] settings (not fingerprinted with the run) and the proxy actually built."""
    return fingerprint({"job": ctx.job.fingerprint(), "fidelity": ctx.job.fidelity.model_dump(mode="json"),
                        "proxy": proxy.identity()})


def fidelity_report(ctx: RunContext, warmed_dir: Path, proxy: ModelRef) -> dict:
    """The report, computed once per settings: a resumed run (or a second `iprox-ray fidelity`)
    reads the one written before instead of sketching the probe rows with both models again."""
    report_path, scatter_path = ctx.layout.fidelity_report, ctx.layout.fidelity_scatter
    key = report_key(ctx, proxy)
    if report_path.exists() and scatter_path.exists():
        earlier = read_json(report_path)
        if earlier.get("key") == key:
            return {**earlier, "plot": str(scatter_path), "reused": True}
    spec = ctx.job.fidelity
    pool, target, pad_id = probe_data(ctx)
    full = load_pretrained(warmed_dir, ctx.job.model.dtype, ctx.job.model.attn_implementation)
    small = proxy.load()
    sketch = sketch_spec(ctx, proxy)
    full_scores, full_tps = influence_scores(full, pool, target, sketch, pad_id)
    proxy_scores, proxy_tps = influence_scores(small, pool, target, sketch, pad_id)
    ok = np.isfinite(full_scores) & np.isfinite(proxy_scores)
    a, b = full_scores[ok], proxy_scores[ok]
    share, hits, k = top_overlap(a, b, spec.top_fraction)
    exact = _exact_section(full, pool, target, full_scores, proxy_scores, spec)
    mean_len = float(np.mean([e.n_tokens for e in pool]))
    loss_share = float(sum(int(e.trainable.sum()) for e in pool) / max(1, sum(e.n_tokens for e in pool)))
    s = ctx.job.sketch
    bound = {name: sketch_flops_per_token(m, sketched_modules(m, s), mean_len, loss_share, s.proj_in, s.proj_out)
             for name, m in (("target", full), ("proxy", small))}
    report = {
        "proxy": {"kind": proxy.kind, "method": ctx.job.proxy.built_method, "rho": ctx.job.proxy.rho},
        "pool_rows": int(ok.sum()), "target_rows": len(target),
        "spearman": spearman(a, b), "kendall": kendall_tau_b(a, b),
        "top_fraction": spec.top_fraction, "top_overlap": share, "top_hits": hits, "top_k": k,
        "parameters": {"target": count_parameters(full), "proxy": count_parameters(small)},
        "forward_flops_per_token": {"target": forward_flops_per_token(full, mean_len),
                                    "proxy": forward_flops_per_token(small, mean_len), "mean_length": mean_len},
        "sketch_tokens_per_s": {"target": full_tps, "proxy": proxy_tps},
        "sketch_flops_per_token": bound,
        "flop_bound_speedup": bound["target"] / max(bound["proxy"], 1.0),
        # What these sketches were computed in (the store's rows are then kept in store.sketch_dtype).
        "precision": {"compute": sketch_precision(ctx.job.model.dtype, sketch.autocast, _on_gpu(full)),
                      "device": device_kind(_on_gpu(full)), "store_dtype": ctx.job.store.sketch_dtype},
        **_build_info(proxy),
        "exact": exact,
        # the HTML report's scatter
        "points": {"target": _finite_list(full_scores), "proxy": _finite_list(proxy_scores)},
        "key": key,
    }
    report["pays"], report["verdict"] = verdict(report, spec)
    _scatter(a, b, report, scatter_path)
    atomic_write_json(report_path, report)  # last: its key marks the report complete
    report["plot"] = str(scatter_path)
    return report


def _on_gpu(model: torch.nn.Module) -> bool:
    return next(model.parameters()).is_cuda


def _build_info(proxy: ModelRef) -> dict:
    """build_seconds (stage 1 + 2) and the stage-2 summary from a built proxy's manifest; None
    for an off-the-shelf model."""
    if proxy.kind != "proxy":
        return {"build_seconds": None, "stage2": None}
    info = read_manifest(proxy.path)
    stage2 = info.get("stage2")
    return {"build_seconds": info.get("stage1_seconds", 0.0) + ((stage2 or {}).get("seconds") or 0.0),
            "stage2": stage2}


def verdict(r: dict, spec: FidelitySpec) -> tuple[bool, str]:
    """(pays, one line): does the proxy pay at this ρ on these rows? Thresholds: spec.pays_*."""
    t = r["sketch_tokens_per_s"]
    speed = t["proxy"] / max(t["target"], 1e-9)
    exact = r.get("exact")
    if exact:
        kept = exact["proxy"]["spearman"] / max(exact["target_sketch"]["spearman"], 1e-9)
        faithful, how = kept >= spec.pays_fidelity_share, f"keeps {kept:.0%} of the target sketch's Spearman vs exact"
        need = f"{spec.pays_fidelity_share:.0%}"
    else:
        faithful, how = r["spearman"] >= spec.pays_spearman, f"Spearman {r['spearman']:.2f} vs the target"
        need = f"{spec.pays_spearman}"
    fast = speed >= spec.pays_speedup
    pays = fast and faithful
    why = [] if fast else [f"sketches only {speed:.2f}x faster (needs {spec.pays_speedup}x)"]
    why += [] if faithful else [f"{how} (needs {need})"]
    detail = "; ".join(why) if why else f"{speed:.2f}x the sketch throughput, {how}"
    return pays, f"verdict: the proxy {'pays' if pays else 'does not pay'} at rho={r['proxy']['rho']} ({detail})"


def _exact_section(full, pool, target, full_scores, proxy_scores, spec) -> dict | None:
    """Both models' sketched scores against exact influence on the first `exact_rows` probe rows."""
    n = min(spec.exact_rows, len(pool))
    if n == 0:
        return None
    start = time.perf_counter()
    exact = exact_less_scores(full.float(), pool[:n], target)
    seconds = time.perf_counter() - start

    def versus(scores):
        ok = np.isfinite(exact) & np.isfinite(scores[:n])
        share, _, _ = top_overlap(exact[ok], scores[:n][ok], spec.top_fraction)
        return {"spearman": spearman(exact[ok], scores[:n][ok]), "top_overlap": share}

    return {"rows": n, "seconds": seconds, "target_sketch": versus(full_scores), "proxy": versus(proxy_scores),
            "scores": _finite_list(exact)}  # the first n probe rows', as in points


def _finite_list(values: np.ndarray) -> list[float | None]:
    """JSON-safe scores (None where not finite)."""
    return [float(v) if np.isfinite(v) else None for v in np.asarray(values, dtype=np.float64).tolist()]


def _stage2_line(r: dict) -> str:
    s = r.get("stage2")
    if r["proxy"]["method"] not in LOW_RANK_METHODS:
        return ""
    if s is None:
        return "  stage 2 alignment: off (proxy.align_epochs = 0)"
    return f"  {stage2_summary(s)}"


def _scatter(a: np.ndarray, b: np.ndarray, report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.8, 4.5))
    ax.scatter(a, b, s=6, alpha=0.5)
    ax.set_xlabel("influence on the target model (cosine)")
    ax.set_ylabel("influence on the proxy (cosine)")
    ax.set_title(f"{report['proxy']['method']} ρ={report['proxy']['rho']}: Spearman {report['spearman']:.3f}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def format_report(r: dict) -> str:
    p, f, t = r["parameters"], r["forward_flops_per_token"], r["sketch_tokens_per_s"]
    return "\n".join(line for line in [
        f"influence fidelity: proxy ({r['proxy']['method']}, rho={r['proxy']['rho']}) vs target, "
        f"{r['pool_rows']} pool rows x {r['target_rows']} target rows",
        f"  Spearman {r['spearman']:.3f}   Kendall {r['kendall']:.3f}   "
        f"top-{r['top_fraction']:.0%} overlap {r['top_overlap']:.2f} ({r['top_hits']}/{r['top_k']})",
        f"  parameters {p['proxy']:,} / {p['target']:,} ({p['proxy'] / p['target']:.2f}x)   "
        f"forward FLOPs/token {f['proxy'] / f['target']:.2f}x   "
        f"sketch throughput {t['proxy']:,.0f} vs {t['target']:,.0f} tokens/s ({t['proxy'] / t['target']:.2f}x"
        + (f"; FLOP-bound {r['flop_bound_speedup']:.2f}x, "
           f"so {t['proxy'] / t['target'] / r['flop_bound_speedup']:.0%} of it"
           if r.get("flop_bound_speedup") else "") + ")"
        + (f"   proxy build {r['build_seconds']:.1f}s" if r.get("build_seconds") is not None else ""),
        *([] if not r.get("exact") else [
            f"  vs exact influence ({r['exact']['rows']} rows, bs=1, every trained parameter): "
            f"target sketch Spearman {r['exact']['target_sketch']['spearman']:.3f} "
            f"(top overlap {r['exact']['target_sketch']['top_overlap']:.2f}), "
            f"proxy Spearman {r['exact']['proxy']['spearman']:.3f} "
            f"(top overlap {r['exact']['proxy']['top_overlap']:.2f})"]),
        _stage2_line(r),
        _precision_line(r),
        f"  {r['verdict']}" if r.get("verdict") else "",
        f"  scatter plot: {r['plot']}"
        + ("   (computed by an earlier attempt with the same settings)" if r.get("reused") else ""),
    ] if line)


def _precision_line(r: dict) -> str:
    p = r.get("precision")
    if not p:
        return ""
    return (f"  sketches computed in {p['compute']} on {p['device']}, compared unquantized (the store keeps "
            f"{p['store_dtype']} rows)")

