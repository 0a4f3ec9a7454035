"""The typed result of `iprox-ray plan`: what a job will cost, and what was measured to say so."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class SplitCost:
    """One split (the pool or a target set) as the sketch stage will see it."""

    split: str
    rows: int  # rows in the input files (metadata / newline count, nothing tokenised)
    shards: int
    rows_per_shard: int
    sampled_rows: int  # rows tokenised to estimate the tokens
    usable_share: float  # sampled rows that parse and encode (the rest are quarantined)
    mean_tokens: float  # per sampled row after truncation (0 for a quarantined row)
    tokens: int  # rows x mean_tokens
    padded_tokens: int  # what the batches of every shard hold (length-sorted, token_budget)
    sketched_rows: int  # rows whose sketch is computed (the rest: metadata only)
    sketch_bytes: int  # the split's sketch arrays (every checkpoint), chunk files on disk


@dataclass
class PassTiming:
    """A pass (sketch or embed) timed on this machine through the workers' own code."""

    what: str  # e.g. "sketch kronecker 16x16 of the target model (proxy not built)"
    device: str
    threads: int
    start_seconds: float  # a fresh worker process importing the worker's modules (inline: 0)
    setup_seconds: float  # model load + sketcher/embedder construction, once per worker
    timed_batches: int
    timed_padded_tokens: int
    seconds_per_padded_token: float
    cpu_share: float  # of the worker's threads the timed batches got (below 1: other work on the CPUs)
    read_seconds_per_row: float  # reading + parsing the shard's file
    encode_seconds_per_row: float  # chat template + tokeniser
    model_bytes: int  # resident growth from loading the model (GPU: allocated)
    activation_bytes: int  # growth above the loaded model (its weights resident) during the timed batches
    largest_timed_batch: int  # padded tokens of the largest timed batch
    peak_bytes: int  # one worker at token_budget (activation_bytes scaled to the budget)
    concurrent_workers: int = 1  # workers running the same batches at once while timed (a node's CPU workers)
    alone_seconds_per_padded_token: float = 0.0  # the same pass timed with no sibling running


@dataclass
class WorkerCost:
    workers: int
    nodes: int
    device: str  # what the profile's workers use (cpu | cuda)
    threads_per_worker: int
    max_shards: int  # most shards one worker gets (list scheduling in stage order)
    sketch_seconds: float | None  # the busiest worker: setup + its shards (None: nothing was timed)
    embed_seconds: float | None


@dataclass
class CostPlan:
    job: str
    profile: str
    method: str
    rows: int  # pool rows
    tokens: int  # pool tokens after truncation
    shards: int  # pool shards
    store_bytes: int  # sketch arrays of every sketched split, on disk
    # Seconds are None when nothing was timed (sizes_from = "config": the model was not loaded).
    sketch_seconds: float | None  # wall-clock of the sketch stage with the profile's workers, at the load measured
    sketch_seconds_idle: float | None  # the same on idle CPUs (timed seconds x cpu_share; = sketch_seconds on GPU)
    sketch_worker_seconds: float | None  # the same work done by one worker (sum over shards)
    sketch_cpu_seconds: float | None  # CPU seconds of the shards' work (load-independent: cpu_share x threads)
    embed_seconds: float | None  # wall-clock of the embedding pass(es); 0 when the method needs none
    embed_worker_seconds: float | None
    worker_peak_bytes: int  # measured and scaled to the budget; modelled when nothing was timed
    driver_peak_bytes: int
    driver_peak_stage: str  # which driver-side step sets driver_peak_bytes
    timed: str  # what was timed: model and device
    per_worker: WorkerCost
    splits: list[SplitCost]
    sketch_timing: PassTiming | None
    embed_timing: PassTiming | None = None
    notes: list[str] = field(default_factory=list)
    # cost.sizes.SketchSizes: width (columns of a stored row), row_bytes (the row at dtype, its norm
    # and int8 scale), dtype, and the width's parts (modules, matrix_block, vector_block)
    sketch_sizes: dict = field(default_factory=dict)
    token_budget: int = 0  # the sketch batches' budget the run uses (auto: as chosen)
    token_budget_auto: dict | None = None  # sketch.token_budget = "auto": the choice (tasks/sketch_budget.py)
    sizes_from: str = "model"  # model: the loaded model was timed; config: meta device, nothing timed
    worker_peak_modelled_bytes: int = 0  # the config's memory model at token_budget (sketch/memory.py)

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def human_seconds(s: float) -> str:
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def _seconds(s: float | None) -> str:
    return "not timed" if s is None else human_seconds(s)


def format_plan(plan: CostPlan) -> str:
    """A short readable table."""
    w = plan.per_worker
    rows = [
        ("job", f"{plan.job} ({plan.method}), profile {plan.profile}"),
        ("timed", plan.timed),
        ("pool", f"{plan.rows:,} rows, {plan.shards} shards, {plan.tokens:,} tokens"),
    ]
    for s in plan.splits:
        if s.split != "pool":
            rows.append((s.split, f"{s.rows:,} rows, {s.shards} shards, {s.tokens:,} tokens"))
    source = "the model's config (meta device)" if plan.sizes_from == "config" else "the model"
    sizes = plan.sketch_sizes
    rows += [
        ("sketch row", f"{sizes['width']:,} columns, {sizes['row_bytes']:,} bytes a row ({sizes['dtype']}), "
                       f"from {source}"),
        ("store", f"{human_bytes(plan.store_bytes)} of sketch arrays ({plan.store_bytes:,} bytes)"),
        ("token budget", f"{plan.token_budget:,} tokens a batch"
                         + (" (auto)" if plan.token_budget_auto else "")),
        ("workers", f"{w.workers} x {w.device} ({w.threads_per_worker} thread(s) each) on {w.nodes} node(s); "
                    f"at most {w.max_shards} shard(s) each"),
    ]
    if plan.sketch_seconds is None:
        rows.append(("sketch", "not timed (the model was not loaded)"))
    else:
        rows.append(("sketch", f"{human_seconds(plan.sketch_seconds)} wall ({_seconds(plan.sketch_worker_seconds)} "
                               f"on one worker); {_seconds(plan.sketch_seconds_idle)} on idle CPUs"))
    if plan.embed_timing is not None:
        rows.append(("embed", f"{_seconds(plan.embed_seconds)} wall "
                              f"({_seconds(plan.embed_worker_seconds)} on one worker)"))
    if plan.sketch_timing is not None and plan.sketch_timing.cpu_share < 0.9:
        rows.append(("load", "the timed batches got "
                             f"{plan.sketch_timing.cpu_share:.0%} of the worker's CPU threads: other work is running"))
    measured = plan.sketch_timing is not None
    rows += [
        ("worker peak", f"{human_bytes(plan.worker_peak_bytes)} per worker at the token budget "
                        + (f"(measured; the config's model says {human_bytes(plan.worker_peak_modelled_bytes)})"
                           if measured else "(modelled from the config)")),
        ("driver peak", f"{human_bytes(plan.driver_peak_bytes)} ({plan.driver_peak_stage})"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    lines += [f"note: {n}" for n in plan.notes]
    return "\n".join(lines)
