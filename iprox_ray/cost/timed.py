"""The model `iprox-ray plan` times, and the worker steps it times through: the sketch worker's
setup and batch (SketchShardTask) and the embed worker's (EmbedShardTask), as loaders for
cost.measure.time_pass; or, where this machine cannot hold the model, why not (the plan then
sizes the sketch from the config alone)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import psutil
import torch

from iprox_ray.cost.target_model import target_loader, weight_bytes
from iprox_ray.models.fingerprint import has_weight_files
from iprox_ray.models.loading import load_config, meta_model
from iprox_ray.models.optimizer_state import load_adam_state
from iprox_ray.sketch.embedding_kinds import embedding_kind
from iprox_ray.sketch.factory import make_sketcher
from iprox_ray.spec import JobSpec
from iprox_ray.stages.model_files import sketched_model_folder
from iprox_ray.tasks.embed_task import make_embedder
from iprox_ray.tasks.model_ref import ModelRef
from iprox_ray.tasks.sketch_budget import sketched_config

# Timing loads the model beside this process's own memory, and loading may briefly hold a second copy.
LOADABLE_SHARE = 0.35  # of this machine's available memory a model's weights may take to be timed


@dataclass
class TimedModel:
    """The model a sketch worker would hold, how to load it, and how to say what it is."""

    load: Callable[[], torch.nn.Module]
    what: str
    adam_state: Path | None = None
    ref: ModelRef | None = None  # None: the target built from the job's model section
    proxy_built_here: bool = False  # the driver builds a proxy (memory) when the run does


def choose_model(job: JobSpec, run_dir: Path | None, notes: list[str]) -> TimedModel:
    """With a run directory: the warm-up and proxy stages run there (or are reused), and the
    model the sketch stage would use is timed. Without one: the model a worker would hold when it
    needs no building, else the target model (an upper bound for a proxy) -- said in `notes`."""
    method = job.proxy.method
    building = method not in ("none", "model")
    if run_dir is not None:
        from iprox_ray.driver.pipeline import build_models
        from iprox_ray.driver.run import Run
        from iprox_ray.driver.rundir import open_run
        from iprox_ray.stages.sketch import plan_checkpoints

        with open_run(job, run_dir) as ctx:  # its progress goes to stderr: --json output stays clean
            done = [ctx.layout.stage_done("warmup").exists() or not job.warmup.enabled]
            if building:
                done.append(ctx.layout.stage_done("proxy").exists())
            _, ref = build_models(Run(ctx))
            checkpoints = plan_checkpoints(ctx, ref)
        if not all(done):
            notes.append("the warm-up/proxy were built in this process: its freed memory is reused, so the worker "
                         "memory measured is low; plan again (they are reused) to measure it")
        first = checkpoints.models[0]
        what = f"{first.kind} model {first.path} (from run directory {run_dir})"
        return TimedModel(first.load, what, checkpoints.adam_states[0], first, building)
    if job.sketch.checkpoints:
        c = job.sketch.checkpoints[0]
        ref = ModelRef("hf", job.resolve_path(c.model), job.model.dtype, job.model.attn_implementation)
        state = job.resolve_path(c.optimizer) if c.optimizer else None
        return TimedModel(ref.load, f"checkpoint model {ref.path} (the first of {len(job.sketch.checkpoints)})",
                          state, ref)
    if method == "model":
        ref = ModelRef("hf", job.resolve_path(job.proxy.model_path), job.model.dtype, job.model.attn_implementation)
        return TimedModel(ref.load, f"off-the-shelf proxy model {ref.path}", None, ref)
    state = job.resolve_path(job.sketch.optimizer_state) if job.sketch.optimizer_state else None
    init = "random-init" if job.model.init == "random" else "pretrained"
    if method == "none":
        return TimedModel(target_loader(job), f"the target model ({init}, proxy.method = 'none'; warm-up not run: "
                                              "same shapes)", state)
    notes.append(f"proxy.method = {method!r} but no proxy was built: the target model was timed, an upper bound "
                 "on the proxy's seconds and memory; pass --run-dir to build (or reuse) the proxy and time it")
    return TimedModel(target_loader(job), f"the target model ({init}) in place of the {method} proxy", state,
                      proxy_built_here=True)


def _to_device(model: torch.nn.Module, device: str) -> torch.nn.Module:
    """On the device, every weight resident: from_pretrained maps the safetensors file, so its pages
    would otherwise become resident in the first timed batch and count as that batch's memory."""
    if device == "cuda":
        return model.to("cuda")
    with torch.no_grad():
        for param in model.parameters():
            param.sum()
    return model


def sketch_step(job: JobSpec, timed: TimedModel, device: str, notes: list[str], holder: dict):
    """A loader for time_pass: the worker's setup (SketchShardTask.setup) and one batch of its
    process loop (sketch, then the sketch, loss and finite flags brought to the host)."""
    spec = job.sketch

    def load():
        model = _to_device(timed.load(), device)
        state = None
        if spec.optimizer != "none":
            if timed.adam_state is not None and timed.adam_state.exists():
                state = load_adam_state(timed.adam_state, model)
            else:
                notes.append(f"sketch.optimizer = {spec.optimizer!r} but no Adam state exists yet: plain gradient "
                             "features were timed (pass --run-dir to run the warm-up first)")
        sketcher = make_sketcher(model, spec, state)
        holder.update(model=model, sketcher=sketcher)

        def step(batch):
            tensors = [torch.from_numpy(a) for a in (batch.input_ids, batch.attention_mask, batch.trainable)]
            out = sketcher.sketch(*tensors)
            return out.sketch.cpu().numpy(), out.loss.cpu().numpy(), out.finite.cpu().numpy()

        return step

    return load


def embed_step(kind: str, job: JobSpec, timed: TimedModel, device: str, holder: dict):
    """EmbedShardTask.setup and one batch of its loop (eager attention when the kind needs it)."""
    def load():
        if not embedding_kind(kind).needs_eager_attention:
            model = timed.load()
        elif timed.ref is not None:
            model = dataclasses.replace(timed.ref, attn="eager").load()
        else:
            model = target_loader(job, "eager")()
        model = _to_device(model, device)
        embedder = make_embedder(kind, model, job.scoring.embed)
        holder.update(model=model, embedder=embedder)
        return lambda batch: embedder.embed(torch.from_numpy(batch.input_ids),
                                            torch.from_numpy(batch.attention_mask)).cpu().numpy()

    return load


def config_only_reason(job: JobSpec) -> str | None:
    """Why this machine cannot time the sketched model (then the plan works from its config), or None."""
    folder = sketched_model_folder(job)
    # A random-init target is built from its config; every other sketched folder needs its weights.
    needs_weights = folder != job.resolve_path(job.model.path) or job.model.init == "pretrained"
    if needs_weights and not (folder.is_dir() and has_weight_files(folder)):
        return f"the weights of {folder} are absent"
    size, free = weight_bytes(job, folder), psutil.virtual_memory().available
    if size > LOADABLE_SHARE * free:
        return (f"the weights of {folder} ({size / 2**30:.1f} GiB at {job.model.dtype}) would not fit beside a timing "
                f"in this machine's free memory ({free / 2**30:.1f} GiB)")
    return None


def sketched_meta(job: JobSpec, timed: TimedModel | None) -> tuple[torch.nn.Module, object]:
    """(the sketched model on the meta device, the config its activations are modelled from: a
    proxy's is its target's, an upper bound). `timed` None: the model of `sketched_model_folder`."""
    if timed is not None and timed.ref is not None:
        return timed.ref.meta(), sketched_config(job, timed.ref)
    folder = sketched_model_folder(job) if timed is None else job.resolve_path(job.model.path)
    config = load_config(folder)
    return meta_model(config), config
