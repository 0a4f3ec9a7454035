"""The sketch batches' token budget of a run: the spec's number, or for `sketch.token_budget =
"auto"` the one chosen when the run first needed it, recorded in stages/sketch-budget.json and read
back on every resume, so a resumed run (or `iprox-ray score`) batches its rows exactly as the first
did whatever memory is free now. The choice: the largest budget whose predicted worker peak
(sketch/memory.py, from the model's config) fits the worker's share of its node's memory
(execution/worker_layout.py); `iprox-ray plan` asks the same function."""

from __future__ import annotations

from torch import nn

from iprox_ray.execution.context import RunContext
from iprox_ray.execution.worker_layout import Layout, worker_layout, worker_memory
from iprox_ray.models.loading import load_config, meta_model
from iprox_ray.sketch.memory import BudgetChoice, choose_budget, peak_model
from iprox_ray.spec import JobSpec, SketchSpec, SpecError
from iprox_ray.store.layout import SKETCH_BUDGET_STAGE
from iprox_ray.tasks.model_ref import ModelRef


def budget_for(job: JobSpec, model: nn.Module, config, layout: Layout | None = None) -> BudgetChoice | None:
    """The auto budget for sketching `model` (meta-device or loaded; `config` the transformers
    config its activations are modelled from) with the job's workers. None where the worker's
    memory cannot be known here (GPU workers, no GPU visible)."""
    memory = worker_memory(job, layout or worker_layout(job))
    if memory is None:
        return None
    return choose_budget(peak_model(job, model, config, memory.base_bytes), memory.share_bytes, memory.source,
                         job.sketch.max_batch_rows)


def sketched_config(job: JobSpec, ref: ModelRef):
    """The config the activation memory of sketching `ref` is modelled from: a proxy's widths are
    its target's or smaller, so the target's config bounds them."""
    return load_config(ref.path if ref.kind == "hf" else job.resolve_path(job.model.path))


def sketch_spec(ctx: RunContext, ref: ModelRef) -> SketchSpec:
    """`ctx.job.sketch` with an integer token budget, for sketching with the model `ref`."""
    spec = ctx.job.sketch
    if spec.token_budget != "auto":
        return spec
    done = ctx.stage_done(SKETCH_BUDGET_STAGE)
    if done is None:
        config = sketched_config(ctx.job, ref)
        # Under proxy.method = "auto" a proxy's fidelity check chooses before the verdict, which may
        # sketch the target instead: size for the target (the larger model) then.
        undecided = ref.kind == "proxy" and ctx.job.proxy.method == "auto"
        choice = budget_for(ctx.job, meta_model(config) if undecided else ref.meta(), config)
        if choice is None:
            raise SpecError("sketch.token_budget = 'auto' needs the GPU workers' memory, and this driver sees no "
                            "GPU; set sketch.token_budget")
        done = choice.record()
        ctx.mark_stage_done(SKETCH_BUDGET_STAGE, done)
        ctx.say(f"sketch.token_budget = auto: {choice.describe()}")
    return spec.model_copy(update={"token_budget": int(done["token_budget"])})


def budget_summary(ctx: RunContext) -> dict:
    """The budget the sketches were batched with, for the run summary."""
    spec = ctx.job.sketch
    if spec.token_budget != "auto":
        return {"sketch_token_budget": {"tokens": spec.token_budget, "auto": False}}
    done = ctx.stage_done(SKETCH_BUDGET_STAGE) or {}
    keep = ("token_budget", "predicted_peak_bytes", "share_bytes", "source", "limit")
    return {"sketch_token_budget": {"tokens": done.get("token_budget"), "auto": True,
                                    **{k: done[k] for k in keep[1:] if k in done}}}
