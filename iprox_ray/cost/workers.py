"""How shards spread over a profile's workers (execution/worker_layout.py says how many), and what the driver holds."""

from __future__ import annotations

import heapq

import torch

from iprox_ray.influence.column_topk import candidate_bytes
from iprox_ray.spec import JobSpec


def list_schedule(costs: list[float], workers: int) -> tuple[float, int]:
    """(busiest worker's seconds, most shards one worker runs) when each free worker takes the next
    shard in order, as the actor pool hands them out."""
    free = [(0.0, i, 0) for i in range(max(1, workers))]
    heapq.heapify(free)
    for cost in costs:
        busy, i, n = heapq.heappop(free)
        heapq.heappush(free, (busy + cost, i, n + 1))
    return max(b for b, _, _ in free), max(n for _, _, n in free)


def parameter_bytes(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def driver_peak(job: JobSpec, base_bytes: int, target_bytes: int, proxy_built_here: bool,
                activation_per_token: float, pool_rows: int, shard_rows: int, target_rows: int,
                sketch_dim: int, checkpoints: int, warmup_bytes: int | None = None) -> tuple[int, str]:
    """(bytes, step) of the driver's largest step above `base_bytes` (its interpreter and imports).

    warm-up: `warmup_bytes` as measured (cost.driver_steps), else the model, its gradients and two
    Adam moments (4x the weights) plus one batch of activations at batch_size x max_length;
    proxy/fidelity: target and proxy side by side plus a batch at the token budget; scoring: the
    target's fp32 sketches, one pool shard in fp32 and the per-row score arrays (and round-robin's
    per-example candidates)."""
    steps = {}
    if job.warmup.enabled and not job.warmup.checkpoint:
        steps["warm-up"] = warmup_bytes if warmup_bytes is not None else \
            4 * target_bytes + activation_per_token * job.warmup.batch_size * job.data.max_length
    if proxy_built_here:
        steps["proxy construction"] = 2 * target_bytes + activation_per_token * job.sketch.token_budget
    # Round-robin keeps each target example's best k rows (C x k candidates), not a rows x C matrix.
    candidates = candidate_bytes(target_rows, job.selection.size_for(pool_rows)) \
        if job.selection.strategy == "round-robin" else 0
    steps["scoring"] = (target_rows * sketch_dim * 4 * checkpoints
                        + shard_rows * sketch_dim * 4
                        + pool_rows * 4 * 3 + candidates)
    name = max(steps, key=steps.get)
    return int(base_bytes + steps[name]), name
