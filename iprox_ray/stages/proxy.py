"""Stage: proxy. Stage 1 (IPSVD or a baseline) then stage-2 alignment, saved as an artifact."""

from __future__ import annotations

from pathlib import Path

import torch

from iprox_ray.diagnostics.proxy_verdict import choose_model
from iprox_ray.execution.context import RunContext
from iprox_ray.models.loading import (
    count_parameters,
    load_config,
    load_pretrained,
    load_tokenizer,
)
from iprox_ray.proxy.artifact import save_proxy
from iprox_ray.proxy.build import alignment_split, device_for_build, make_proxy, stage2_summary
from iprox_ray.spec.proxy import auto_checks_candidate
from iprox_ray.store.layout import PROXY_STAGE
from iprox_ray.tasks.inputs import (
    POOL,
    encode_sample,
    fixed_batches,
    make_encoder,
    manifest_for,
    sample_rows,
    shuffled_epochs,
    tokenizer_path,
)
from iprox_ray.tasks.model_ref import ModelRef

STAGE = PROXY_STAGE  # stages/<STAGE>.json


def construction_rows(ctx: RunContext):
    """The seeded construction share of the pool, split into (probe rows, alignment rows), encoded."""
    spec, job = ctx.job.proxy, ctx.job
    manifest = manifest_for(ctx, POOL)
    chosen = sample_rows(manifest, spec.construction_fraction, seed=job.run.seed + 3, min_rows=spec.min_probe_rows)
    flat = [(shard, row) for shard, rows in sorted(chosen.items()) for row in rows]
    order = torch.randperm(len(flat), generator=torch.Generator().manual_seed(job.run.seed + 6)).tolist()
    n_probe = min(len(flat), max(spec.min_probe_rows, round(spec.probe_fraction * len(flat))))
    encoder = make_encoder(ctx, POOL)

    def encode(picks):
        grouped: dict[int, list[int]] = {}
        for i in picks:
            shard, row = flat[i]
            grouped.setdefault(shard, []).append(row)
        return encode_sample(ctx, manifest, grouped, encoder)

    return encode(order[:n_probe]), encode(order[n_probe:]), encoder.tokenizer.pad_token_id


def off_the_shelf(ctx: RunContext) -> ModelRef:
    """A smaller pretrained model as the proxy; it must read the target's tokens."""
    path = ctx.job.resolve_path(ctx.job.proxy.model_path)
    vocab = load_config(path).vocab_size
    tokens = len(load_tokenizer(tokenizer_path(ctx.job)))
    if vocab < tokens:
        raise ValueError(f"proxy model {path} has vocab {vocab} < the tokenizer's {tokens} tokens")
    return ModelRef("hf", path, ctx.job.model.dtype, ctx.job.model.attn_implementation)


@torch.no_grad()
def finite_rows(model: torch.nn.Module, encoded: list, pad_id: int, batch_size: int = 8) -> tuple[list, int]:
    """The rows whose logits are finite at every real token; a NaN weight some rows reach would
    otherwise turn every probe moment (and every aligned weight) into NaN."""
    device = next(model.parameters()).device
    keep = []
    for start in range(0, len(encoded), batch_size):
        order = list(range(start, min(start + batch_size, len(encoded))))
        input_ids, mask, _ = fixed_batches(encoded, order, batch_size, pad_id)[0]
        logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits
        ok = (torch.isfinite(logits).all(dim=-1) | ~mask.bool().to(device)).all(dim=1).cpu()
        keep += [encoded[i] for i, good in zip(order, ok.tolist()) if good]
    return keep, len(encoded) - len(keep)


def build_proxy(ctx: RunContext, target_dir: Path, out_dir: Path) -> dict:
    """Make the proxy of the model at target_dir and save it in out_dir; returns its manifest info."""
    spec, seed = ctx.job.proxy.model_copy(update={"method": ctx.job.proxy.built_method}), ctx.job.run.seed
    target = load_pretrained(target_dir, "float32", ctx.job.model.attn_implementation).to(device_for_build())
    probes, align_rows, pad_id = construction_rows(ctx)
    probes, bad_probes = finite_rows(target, probes, pad_id)
    align_rows, bad_align = finite_rows(target, align_rows, pad_id) if align_rows else (align_rows, 0)
    if bad_probes or bad_align:
        ctx.say(f"proxy: left out {bad_probes + bad_align} construction row(s) whose logits are not finite")
    if not probes:
        raise ValueError("proxy: no construction row has finite logits under the model; is the model damaged?")
    probe_batches = fixed_batches(probes, list(range(len(probes))), spec.probe_batch_size, pad_id)
    epochs, heldout, train = None, [], []
    if spec.is_low_rank and spec.align_epochs and align_rows:
        train, held = alignment_split(align_rows, spec, seed + 9)
        epochs = shuffled_epochs(train, spec.align_batch_size, pad_id, seed + 7, spec.align_epochs)
        heldout = fixed_batches(held, list(range(len(held))), spec.align_batch_size, pad_id)
    built = make_proxy(target, spec, probe_batches, len(probes), epochs, seed, heldout)
    proxy, report, plans, kept = built.model, built.stage2, built.plans, built.kept_layers
    info = {
        "method": spec.method,  # the construction that ran (under 'auto': the candidate)
        "rho": spec.rho,
        "rank_multiple": spec.rank_multiple,
        "target_fingerprint": ctx.job.stage_fingerprint("run.seed", "model", "data.pool", "warmup"),
        "fingerprint": ctx.job.stage_fingerprint("run.seed", "model", "data.pool", "warmup", "proxy"),
        "target_parameters": count_parameters(target),
        "proxy_parameters": count_parameters(proxy),
        "kept_layers": kept,
        "probe_rows": len(probes) if spec.method == "ipsvd" else 0,
        "nonfinite_construction_rows": bad_probes + bad_align,
        "stage1_seconds": round(built.stage1_seconds, 3),
        "stage2": None if report is None else {
            "epochs": spec.align_epochs, "batch_size": spec.align_batch_size, "rows": len(train),
            "heldout_rows": sum(int(b[0].shape[0]) for b in heldout), **report.summary(),
        },
    }
    save_proxy(proxy.to("cpu"), out_dir, plans, info)
    return info


def run_proxy(ctx: RunContext, warmed_dir: Path) -> ModelRef:
    """The model the sketch stage uses: the warmed target, an off-the-shelf model, or the built
    proxy (under 'auto' only when the fidelity check says it pays: diagnostics/proxy_verdict.py)."""
    spec, model_spec = ctx.job.proxy, ctx.job.model
    target = ModelRef("hf", warmed_dir, model_spec.dtype, model_spec.attn_implementation)
    if spec.method == "none":
        return target
    if spec.method == "model":
        return off_the_shelf(ctx)
    if spec.method == "auto" and not auto_checks_candidate(spec.method, bool(ctx.job.sketch.checkpoints)):
        ctx.say("proxy: method 'auto' sketches the target itself: sketch.checkpoints sketch their own models")
        return target
    ref = built_proxy(ctx, warmed_dir)
    if spec.method != "auto":
        return ref
    return choose_model(ctx, warmed_dir, ref, target)


def proxy_ref(ctx: RunContext) -> ModelRef:
    """The run's proxy artifact (built or not yet)."""
    return ModelRef("proxy", ctx.layout.proxy_dir, ctx.job.model.dtype, ctx.job.model.attn_implementation)


def checked_model(ctx: RunContext, used: ModelRef) -> ModelRef:
    """The model the fidelity report compares with the target: the one sketching, or under 'auto'
    the candidate proxy whether or not it was chosen."""
    auto = auto_checks_candidate(ctx.job.proxy.method, bool(ctx.job.sketch.checkpoints))
    return proxy_ref(ctx) if auto else used


def built_proxy(ctx: RunContext, warmed_dir: Path) -> ModelRef:
    """Build (or reuse) the run's proxy artifact."""
    spec = ctx.job.proxy
    ref = proxy_ref(ctx)
    if ctx.stage_done(STAGE):
        return ref
    ctx.guard("build the proxy")
    info = build_proxy(ctx, warmed_dir, ref.path)
    stage2 = info["stage2"]
    aligned = f"; {stage2_summary(stage2)}" if stage2 else ""
    ctx.say(f"proxy ({spec.built_method}, rho={spec.rho}): "
            f"{info['proxy_parameters']:,} of {info['target_parameters']:,} "
            f"parameters; stage 1 {info['stage1_seconds']:.1f}s{aligned}")
    ctx.mark_stage_done(STAGE, info, outputs=(ref.path,))
    return ref
