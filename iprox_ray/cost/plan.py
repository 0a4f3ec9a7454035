"""`iprox-ray plan`: predict a job's rows, tokens, store size, stage seconds and memory before it runs.

Counts come from the inputs' metadata and a seeded, tokenised sample; seconds and memory from a
few batches run on this machine through the workers' own code (the sketcher of sketch.factory,
the embedder of embed_task, the batches of corpus.batching), timed beside the node's other CPU
workers (cost/contention.py), scaled to every shard and spread over the cluster profile's workers
as the actor pool spreads them; the driver's warm-up step is measured in a fresh process
(cost/driver_steps.py).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from iprox_ray.cost.contention import siblings_to_run, time_beside_siblings
from iprox_ray.cost.counts import (
    SplitSample, manifest_of, sample_batches, sample_split, shard_padded_tokens, sketch_array_bytes,
)
from iprox_ray.cost.driver_steps import measure_warmup
from iprox_ray.cost.measure import PassMeasure, close_held, fresh_worker, rss, time_pass
from iprox_ray.cost.result import CostPlan, PassTiming, SplitCost, WorkerCost
from iprox_ray.cost.target_model import target_bytes, target_loader
from iprox_ray.cost.workers import driver_peak, list_schedule, parameter_bytes, worker_layout
from iprox_ray.methods.registry import method_for
from iprox_ray.models.optimizer_state import load_adam_state
from iprox_ray.sketch.factory import make_sketcher, sketch_dim, sketched_modules, vectors_record
from iprox_ray.spec import JobSpec, SpecError
from iprox_ray.stages.embed_task import make_embedder
from iprox_ray.stages.inputs import encoder_for, render_now, windowed
from iprox_ray.stages.model_ref import ModelRef
from iprox_ray.stages.rr_candidates import check_round_robin_estimate
from iprox_ray.store.layout import POOL, target_split

MAIN_TARGET = target_split("main")
WORKER_MODULES = ("ray", "iprox_ray.stages.sketch_task", "iprox_ray.stages.embed_task")


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
        from iprox_ray.pipeline import build_models, open_run
        from iprox_ray.stages.sketch import plan_checkpoints

        with open_run(job, run_dir) as ctx:  # its progress goes to stderr: --json output stays clean
            done = [ctx.layout.stage_done("warmup").exists() or not job.warmup.enabled]
            if building:
                done.append(ctx.layout.stage_done("proxy").exists())
            _, ref = build_models(ctx)
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
    return model.to("cuda") if device == "cuda" else model


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
    """EmbedShardTask.setup and one batch of its loop (eager attention when JVPs are due)."""
    def load():
        if kind != "jvp":
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


def _timing(what: str, device: str, threads: int, m: PassMeasure, busy: PassMeasure | None, sample: SplitSample,
            budget: int, model_bytes: int, base: int, start: float, together: int) -> PassTiming:
    rate = busy or m
    scale = max(1.0, budget / max(1, m.largest_timed_batch))  # activations grow with the batch's tokens
    peak = (0 if device == "cuda" else base) + model_bytes + int(m.activation_bytes * scale)
    return PassTiming(what, device, threads, start, m.setup_seconds, rate.timed_batches, rate.timed_padded_tokens,
                      rate.seconds_per_padded_token, round(rate.cpu_share, 3), sample.read_seconds_per_row,
                      sample.encode_seconds_per_row, model_bytes, m.activation_bytes, m.largest_timed_batch, peak,
                      together, m.seconds_per_padded_token)


def _shard_costs(sample: SplitSample, padded: dict[int, float], share: float, per_token: float) -> list[float]:
    per_row = sample.read_seconds_per_row + sample.encode_seconds_per_row
    return [s.n_rows * per_row + padded[s.shard_id] * share * per_token for s in sample.manifest.shards]


def plan_job(job: JobSpec, run_dir: Path | None = None, sample_rows: int = 256, batches: int = 4,
             profile: str = "") -> CostPlan:
    """Predict the job's cost on the cluster profile it names; times on this machine."""
    scoring = method_for(job)
    scoring.validate(job)
    notes: list[str] = []
    base = rss()  # the driver's interpreter and imports, before any model or data
    layout = worker_layout(job)
    device = "cuda" if layout.uses_gpu and torch.cuda.is_available() else "cpu"
    if layout.uses_gpu and device == "cpu":
        notes.append("the profile's workers use GPUs but this machine has none: CPU seconds were measured, "
                     "far above what the GPUs will take")
    if not layout.uses_gpu and torch.cuda.is_available():
        notes.append("the profile's workers use CPUs: timed on the CPU, not this machine's GPU")
    method, needs = job.scoring.method, scoring.needs
    # Windowed text splits are sampled as documents, each counted as all its windows.
    encoders = {split: encoder_for(job, split, render_now(run_dir), documents=True) for split in (MAIN_TARGET, POOL)}
    tokenizer = encoders[POOL].tokenizer
    seed = job.run.seed + 1009  # a sample of its own, not the warm-up's
    samples = {split: sample_split(split, manifest_of(job, split, source, encoders[split]), source, encoders[split],
                                   sample_rows, seed)
               for split, source in ((MAIN_TARGET, job.data.target), (POOL, job.data.pool))}
    for split, sample in samples.items():
        if windowed(job, split):
            notes.append(f"{split}: data.text_windows = \"all\": its {sample.manifest.n_rows} documents make about "
                         f"{sample.manifest.n_rows * sample.usable_share:.0f} window rows ({sample.usable_share:.2f} "
                         "per document in the sample); tokens, seconds and sketched rows count every window, its "
                         "rows, shards and store bytes count documents")
    pool = samples[POOL]
    usable_pool = max(1, int(round(pool.manifest.n_rows * pool.usable_share)))
    share = {MAIN_TARGET: 1.0 if needs.target_sketch else 0.0,
             POOL: {"all": 1.0, "none": 0.0}.get(needs.pool_sketch, 1.0)}
    if needs.pool_sketch == "landmarks" and job.scoring.landmarks.sketch == "landmarks":
        share[POOL] = min(1.0, job.scoring.landmarks.count / usable_pool)
    n_ckpt = max(1, len(job.sketch.checkpoints))
    timed = choose_model(job, run_dir, notes)

    # A worker's threads, as far as this machine has cores (a SLURM profile may give more).
    used = min(layout.threads, os.cpu_count() or 1)
    if used < layout.threads:
        notes.append(f"timed with {used} thread(s): this machine has fewer cores than a worker's "
                     f"{layout.threads} threads")
    threads = torch.get_num_threads()
    torch.set_num_threads(used)
    siblings = siblings_to_run(layout, device, used, notes)
    holder: dict = {}
    try:
        make_sketch = functools.partial(sketch_step, job, timed, device, notes)
        sk_batches = sample_batches(pool, job.sketch.token_budget, job.sketch.max_batch_rows, tokenizer.pad_token_id)
        sk = time_pass(make_sketch(holder), sk_batches, batches, device, used)
        model = holder["model"]
        weights = parameter_bytes(model)
        dim = sketch_dim(job.sketch, len(sketched_modules(model, job.sketch)), vectors_record(model, job.sketch))
        close_held(holder)
        del model
        sk_busy, together = time_beside_siblings(make_sketch, sk_batches, batches, device, used, siblings, sk, notes)
        em = em_busy = None
        if needs.embeddings:
            make_embed = functools.partial(embed_step, needs.embeddings[0], job, timed, device)
            em_batches = sample_batches(pool, job.scoring.embed.token_budget, job.scoring.embed.max_batch_rows,
                                        tokenizer.pad_token_id)
            em = time_pass(make_embed(holder), em_batches, batches, device, used)
            close_held(holder)
            em_busy, _ = time_beside_siblings(make_embed, em_batches, batches, device, used, together - 1, em, notes)
    finally:
        torch.set_num_threads(threads)
    # Seconds from the timing beside the node's other workers; memory from the timing alone.
    sk_rate, em_rate = sk_busy or sk, em_busy or em

    # The model's resident growth on CPU also counts the allocator's and loader's overhead; never
    # less than the weights themselves.
    model_bytes = max(sk.model_bytes, weights) * n_ckpt
    kind = job.sketch.kind + (f" {job.sketch.proj_in}x{job.sketch.proj_out}" if job.sketch.kind == "kronecker" else
                              f" dim {job.sketch.dim}")
    # Ray actors are fresh processes (their imports are their base memory); inline runs in the driver.
    start, worker_base = (0.0, base) if job.cluster.executor == "inline" else fresh_worker(WORKER_MODULES)
    sk_timing = _timing(f"sketch ({kind}) of {timed.what}", device, used, sk, sk_busy, pool,
                        job.sketch.token_budget, model_bytes, worker_base, start, together)
    split_costs, sketch_costs = [], []
    for split, sample in samples.items():
        padded = shard_padded_tokens(sample, job.sketch.token_budget, job.sketch.max_batch_rows, seed)
        m = sample.manifest
        split_costs.append(SplitCost(
            split, m.n_rows, m.n_shards, m.rows_per_shard, sample.sampled, round(sample.usable_share, 4),
            round(sample.mean_tokens, 2), sample.tokens, int(round(sum(padded.values()))),
            int(round(m.n_rows * sample.usable_share * share[split])),
            sketch_array_bytes(m, dim, share[split]) * n_ckpt))
        sketch_costs += _shard_costs(sample, padded, share[split], sk_rate.seconds_per_padded_token * n_ckpt)
    busiest, max_shards = list_schedule(sketch_costs, layout.workers)
    # One actor pool serves every stage: when an embedding pass runs first, it pays the start.
    sketch_start = 0.0 if em is not None else start
    sketch_wall = sketch_start + sk.setup_seconds * n_ckpt + busiest

    em_timing, embed_wall, embed_total = None, 0.0, 0.0
    if em is not None:
        em_timing = _timing(f"{needs.embeddings[0]} embedding of {timed.what}", device, used, em, em_busy, pool,
                            job.scoring.embed.token_budget, max(em.model_bytes, weights), worker_base, start,
                            together)
        costs = []
        for _, split in scoring.embed_jobs([POOL, MAIN_TARGET]):
            sample = samples[split]
            padded = shard_padded_tokens(sample, job.scoring.embed.token_budget, job.scoring.embed.max_batch_rows, seed)
            costs += _shard_costs(sample, padded, 1.0, em_rate.seconds_per_padded_token)
        embed_busiest, _ = list_schedule(costs, layout.workers)
        embed_wall, embed_total = start + em.setup_seconds + embed_busiest, sum(costs)

    per_token = sk.activation_bytes / max(1, sk.largest_timed_batch)
    target = target_bytes(job)
    warmup = measure_warmup(job, target, pool, tokenizer.pad_token_id, notes)
    driver, driver_stage = driver_peak(job, base, target, timed.proxy_built_here, per_token, pool.manifest.n_rows,
                                       pool.manifest.rows_per_shard, samples[MAIN_TARGET].manifest.n_rows, dim, n_ckpt,
                                       warmup)
    if n_ckpt > 1:
        notes.append(f"{n_ckpt} checkpoints: the first was timed; seconds and model memory scaled by {n_ckpt}")
    if job.selection.strategy == "round-robin" and not scoring.single_score:
        t_sample = samples[MAIN_TARGET]
        try:  # the preflight's own check, from the samples' usable shares
            check_round_robin_estimate(job.selection, max(1, round(t_sample.manifest.n_rows * t_sample.usable_share)),
                                       pool.manifest.n_rows, pool.usable_share)
        except SpecError as exc:
            notes.append(f"the run would stop at preflight: {exc}")
    worker_peak = max(sk_timing.peak_bytes, em_timing.peak_bytes if em_timing else 0)
    return CostPlan(
        job=job.run.name, profile=profile or (job.cluster.profile or job.cluster.kind), method=method,
        rows=pool.manifest.n_rows, tokens=pool.tokens, shards=pool.manifest.n_shards,
        store_bytes=sum(s.sketch_bytes for s in split_costs),
        sketch_seconds=round(sketch_wall, 2), sketch_seconds_idle=round(sketch_wall * sk_rate.cpu_share, 2),
        sketch_cpu_seconds=round(sum(sketch_costs) * sk_rate.cpu_share * used, 2),
        sketch_worker_seconds=round(sketch_start + sk.setup_seconds * n_ckpt + sum(sketch_costs), 2),
        embed_seconds=round(embed_wall, 2),
        embed_worker_seconds=round((em.setup_seconds if em else 0.0) + embed_total, 2),
        worker_peak_bytes=int(worker_peak), driver_peak_bytes=driver, driver_peak_stage=driver_stage,
        timed=f"{sk_timing.what} on {device} ({used} thread(s))"
              + (f", beside {together - 1} other worker(s) running the same batches" if together > 1 else ""),
        per_worker=WorkerCost(layout.workers, layout.nodes, "cuda" if layout.uses_gpu else "cpu", layout.threads,
                              max_shards, round(sketch_wall, 2), round(embed_wall, 2)),
        splits=split_costs, sketch_timing=sk_timing, embed_timing=em_timing, notes=notes,
    )
