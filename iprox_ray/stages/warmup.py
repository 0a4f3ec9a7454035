"""Stage: warm-up. A brief fine-tune on a random share of the pool; keeps the AdamW state."""

from __future__ import annotations

from pathlib import Path

import torch

from iprox_ray.execution.context import RunContext
from iprox_ray.models.finetune import finetune
from iprox_ray.models.loading import (
    load_config,
    load_pretrained,
    random_init,
    save_model,
)
from iprox_ray.store.layout import WARMUP_STAGE
from iprox_ray.tasks.inputs import (
    POOL,
    encode_sample,
    make_encoder,
    manifest_for,
    sample_rows,
    shuffled_epochs,
)

STAGE = WARMUP_STAGE  # stages/<STAGE>.json


def base_model(ctx: RunContext) -> torch.nn.Module:
    spec = ctx.job.model
    path = ctx.job.resolve_path(spec.path)
    if spec.init == "random":
        return random_init(load_config(path), ctx.job.run.seed, spec.dtype, spec.attn_implementation)
    return load_pretrained(path, spec.dtype, spec.attn_implementation)


def run_warmup(ctx: RunContext) -> Path:
    """Returns the folder of the model every later stage starts from."""
    done = ctx.stage_done(STAGE)
    if done:
        return Path(done["model_dir"])
    spec, job = ctx.job.warmup, ctx.job
    if spec.checkpoint:
        model_dir = job.resolve_path(spec.checkpoint)
        ctx.mark_stage_done(STAGE, {"model_dir": str(model_dir), "trained": False})
        return model_dir
    if not spec.enabled and job.model.init == "pretrained":
        model_dir = job.resolve_path(job.model.path)
        ctx.mark_stage_done(STAGE, {"model_dir": str(model_dir), "trained": False})
        return model_dir
    model = base_model(ctx)
    out_dir = ctx.layout.warmup_dir
    info = {"model_dir": str(out_dir / "model"), "trained": spec.enabled}
    if spec.enabled:
        manifest = manifest_for(ctx, POOL)
        encoder = make_encoder(ctx, POOL)
        chosen = sample_rows(manifest, spec.fraction, seed=job.run.seed + 1)
        encoded = encode_sample(ctx, manifest, chosen, encoder)
        epochs = shuffled_epochs(encoded, spec.batch_size, encoder.tokenizer.pad_token_id, job.run.seed + 2,
                                 spec.epochs)
        losses: list[float] = []
        skipped: list[int] = []
        torch.manual_seed(job.run.seed)
        state = finetune(model, epochs, spec.lr, spec.weight_decay, spec.betas, spec.eps,
                         on_step=lambda step, loss: losses.append(loss), on_skip=skipped.append)
        if skipped:
            ctx.say(f"warm-up: skipped {len(skipped)} batch(es) with a non-finite loss or gradient")
        ctx.guard("save the warm-up's model and Adam state")
        state.save(out_dir)
        info.update({"rows": len(encoded), "steps": len(losses), "skipped_nonfinite_batches": len(skipped),
                     "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None})
        trend = f", loss {losses[0]:.3f} -> {losses[-1]:.3f}" if losses else ""
        ctx.say(f"warm-up: {len(encoded)} rows, {len(losses)} steps{trend}")
    ctx.guard("save the warm-up's model")
    save_model(model, out_dir / "model")
    ctx.mark_stage_done(STAGE, info, outputs=(out_dir / "model",))
    return out_dir / "model"
