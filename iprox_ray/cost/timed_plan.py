"""The measured plan: a few batches of the sample through the workers' own sketcher (and embedder),
on this machine's device with a worker's threads, timed alone and beside the node's other CPU
workers (cost/contention.py), scaled to every shard and spread over the profile's workers as the
actor pool spreads them; the driver's warm-up step measured in a fresh process
(cost/driver_steps.py)."""

from __future__ import annotations

import functools
import os

import torch

from iprox_ray.cost.contention import siblings_to_run, time_beside_siblings
from iprox_ray.cost.counts import SplitSample, sample_batches, shard_padded_tokens
from iprox_ray.cost.driver_steps import measure_warmup
from iprox_ray.cost.measure import PassMeasure, close_held, fresh_worker, time_pass
from iprox_ray.cost.plan_inputs import MAIN_SPLIT, Inputs, common_notes
from iprox_ray.cost.result import CostPlan, PassTiming, SplitCost, WorkerCost
from iprox_ray.cost.target_model import target_bytes
from iprox_ray.cost.timed import TimedModel, embed_step, sketch_step
from iprox_ray.cost.workers import driver_peak, list_schedule, parameter_bytes
from iprox_ray.execution.worker_layout import Layout
from iprox_ray.sketch.kinds import describe_settings
from iprox_ray.spec import JobSpec
from iprox_ray.store.layout import POOL

WORKER_MODULES = ("ray", "iprox_ray.tasks.sketch_task", "iprox_ray.tasks.embed_task")


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


def timed_plan(job: JobSpec, scoring, inputs: Inputs, layout: Layout, base: int, timed: TimedModel, dim: int,
               split_costs: list[SplitCost], padded: dict[str, dict[int, float]], batches: int, notes: list[str],
               profile: str) -> CostPlan:
    """The plan with seconds and memory measured on this machine (the job's token budget an integer)."""
    needs = scoring.needs
    samples, n_ckpt, seed, pad_id = inputs.samples, inputs.checkpoints, inputs.seed, inputs.pad_id
    pool = samples[POOL]
    device = "cuda" if layout.uses_gpu and torch.cuda.is_available() else "cpu"
    if layout.uses_gpu and device == "cpu":
        notes.append("the profile's workers use GPUs but this machine has none: CPU seconds were measured, "
                     "far above what the GPUs will take")
    if not layout.uses_gpu and torch.cuda.is_available():
        notes.append("the profile's workers use CPUs: timed on the CPU, not this machine's GPU")

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
        sk_batches = sample_batches(pool, job.sketch.token_budget, job.sketch.max_batch_rows, pad_id)
        sk = time_pass(make_sketch(holder), sk_batches, batches, device, used)
        weights = parameter_bytes(holder["model"])
        close_held(holder)
        sk_busy, together = time_beside_siblings(make_sketch, sk_batches, batches, device, used, siblings, sk, notes)
        em = em_busy = None
        if needs.embeddings:
            make_embed = functools.partial(embed_step, needs.embeddings[0], job, timed, device)
            em_batches = sample_batches(pool, job.scoring.embed.token_budget, job.scoring.embed.max_batch_rows, pad_id)
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
    kind = describe_settings(job.sketch.model_dump())
    # Ray actors are fresh processes (their imports are their base memory); inline runs in the driver.
    start, worker_base = (0.0, base) if job.cluster.executor == "inline" else fresh_worker(WORKER_MODULES)
    sk_timing = _timing(f"sketch ({kind}) of {timed.what}", device, used, sk, sk_busy, pool,
                        job.sketch.token_budget, model_bytes, worker_base, start, together)
    sketch_costs = []
    for split, sample in samples.items():
        sketch_costs += _shard_costs(sample, padded[split], inputs.share[split],
                                     sk_rate.seconds_per_padded_token * n_ckpt)
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
        for _, split in scoring.embed_jobs([POOL, MAIN_SPLIT]):
            sample = samples[split]
            em_padded = shard_padded_tokens(sample, job.scoring.embed.token_budget, job.scoring.embed.max_batch_rows,
                                            seed)
            costs += _shard_costs(sample, em_padded, 1.0, em_rate.seconds_per_padded_token)
        embed_busiest, _ = list_schedule(costs, layout.workers)
        embed_wall, embed_total = start + em.setup_seconds + embed_busiest, sum(costs)

    per_token = sk.activation_bytes / max(1, sk.largest_timed_batch)
    target = target_bytes(job)
    warmup = measure_warmup(job, target, pool, pad_id, notes)
    driver, driver_stage = driver_peak(job, base, target, timed.proxy_built_here, per_token, pool.manifest.n_rows,
                                       pool.manifest.rows_per_shard, samples[MAIN_SPLIT].manifest.n_rows, dim, n_ckpt,
                                       warmup)
    common_notes(job, scoring, inputs, notes)
    worker_peak = max(sk_timing.peak_bytes, em_timing.peak_bytes if em_timing else 0)
    return CostPlan(
        job=job.run.name, profile=profile or (job.cluster.profile or job.cluster.kind), method=job.scoring.method,
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
