"""Stage: proxy. Compress the warmed target into a low-rank proxy (IPSVD stage 1 or a baseline)."""

from __future__ import annotations

from pathlib import Path

import torch

from iprox_ray.models.loading import count_parameters, load_pretrained
from iprox_ray.models.selection import select_modules
from iprox_ray.proxy.artifact import save_proxy
from iprox_ray.proxy.compress import compress, plan_ranks
from iprox_ray.proxy.probes import ProbeCollector
from iprox_ray.stages.context import RunContext
from iprox_ray.stages.inputs import POOL, encode_sample, make_encoder, manifest_for, sample_rows, to_tensors
from iprox_ray.stages.model_ref import ModelRef

STAGE = "proxy"


def _collect_probes(ctx: RunContext, model: torch.nn.Module) -> ProbeCollector:
    spec, job = ctx.job.proxy, ctx.job
    manifest = manifest_for(ctx, POOL)
    construction = sample_rows(manifest, spec.construction_fraction, seed=job.run.seed + 3, min_rows=spec.min_probe_rows)
    # The probe rows are the first `probe_fraction` of the (seeded) construction sample.
    flat = [(shard, row) for shard, rows in sorted(construction.items()) for row in rows]
    n_probe = min(len(flat), max(spec.min_probe_rows, round(spec.probe_fraction * len(flat))))
    probes: dict[int, list[int]] = {}
    for shard, row in flat[:n_probe]:
        probes.setdefault(shard, []).append(row)
    encoder = make_encoder(ctx)
    encoded = encode_sample(ctx, manifest, probes, encoder)
    modules = select_modules(model, spec.modules, expand_lowrank=False)
    collector = ProbeCollector(modules, spec.max_probe_columns, len(encoded), seed=job.run.seed + 4)
    try:
        for input_ids, attention_mask, _ in to_tensors(encoded, ctx.job.sketch.token_budget, 64,
                                                       encoder.tokenizer.pad_token_id):
            collector.run(model, input_ids, attention_mask)
    finally:
        collector.close()
    return collector


def run_proxy(ctx: RunContext, warmed_dir: Path) -> ModelRef:
    spec, model_spec = ctx.job.proxy, ctx.job.model
    if spec.method == "none":
        return ModelRef("hf", warmed_dir, model_spec.dtype, model_spec.attn_implementation)
    ref = ModelRef("proxy", ctx.layout.proxy_dir, model_spec.dtype, model_spec.attn_implementation)
    if ctx.stage_done(STAGE):
        return ref
    model = load_pretrained(warmed_dir, "float32", model_spec.attn_implementation)
    full_params = count_parameters(model)
    plans = plan_ranks(model, spec.modules, spec.rho, spec.rank_multiple)
    columns = None
    if spec.method == "ipsvd":
        collector = _collect_probes(ctx, model)
        columns = collector.columns
    compress(model, plans, spec.method, columns, spec.ridge, seed=ctx.job.run.seed + 5)
    info = {
        "method": spec.method,
        "rho": spec.rho,
        "rank_multiple": spec.rank_multiple,
        "target_dir": str(warmed_dir),
        "target_parameters": full_params,
        "proxy_parameters": count_parameters(model),
        "fingerprint": ctx.job.stage_fingerprint("model", "data.pool", "warmup", "proxy", "run.seed"),
    }
    save_proxy(model, ref.path, plans, info)
    ctx.say(f"proxy ({spec.method}, rho={spec.rho}): {info['proxy_parameters']:,} of "
            f"{full_params:,} parameters; {sum(1 for p in plans if p.rank)} of {len(plans)} layers factored")
    ctx.mark_stage_done(STAGE, info)
    return ref
