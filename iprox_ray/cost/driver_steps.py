"""The driver's warm-up step measured, not modelled: one AdamW step of the job's model on the
longest sampled rows, through the warm-up's own code (models.finetune), in a fresh spawned
process. A process of its own because this one's freed memory would hide the growth."""

from __future__ import annotations

import multiprocessing as mp
from typing import Callable

import psutil
import torch

from iprox_ray.corpus.encode import Encoded
from iprox_ray.cost.counts import SplitSample
from iprox_ray.cost.measure import PeakRss, rss
from iprox_ray.cost.target_model import target_loader
from iprox_ray.models.finetune import finetune
from iprox_ray.spec import JobSpec
from iprox_ray.tasks.inputs import fixed_batches

STEP_TIMEOUT_S = 1800.0


def _one_step(load: Callable[[], torch.nn.Module], batch, hyper: tuple, conn) -> None:
    try:
        base = rss()  # the interpreter and imports: the driver's own base is counted by the caller
        with PeakRss() as watch:
            model = load()
            finetune(model, [[batch]], *hyper)
        conn.send(("ok", watch.peak - base))
    except BaseException as exc:  # the parent reports it: a child's traceback alone is easy to miss
        conn.send(("error", f"{type(exc).__name__}: {exc}"))


def warmup_step_bytes(job: JobSpec, load: Callable[[], torch.nn.Module], encoded: list[Encoded],
                      pad_id: int) -> int:
    """Resident growth of one warm-up step (weights, gradients, both Adam moments, one batch of
    `warmup.batch_size` of the longest sampled rows). `load` must pickle."""
    spec = job.warmup
    longest = sorted(encoded, key=lambda e: -e.n_tokens)[: spec.batch_size]
    if not longest:
        raise ValueError("no usable sampled row to measure the warm-up step with")
    batch = fixed_batches(longest, list(range(len(longest))), spec.batch_size, pad_id)[0]
    ctx = mp.get_context("spawn")
    ours, theirs = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_one_step, args=(load, batch, (spec.lr, spec.weight_decay, spec.betas, spec.eps),
                                               theirs), daemon=True)
    proc.start()
    theirs.close()  # so that a child that dies reads as end-of-file here
    try:
        if not ours.poll(STEP_TIMEOUT_S):
            raise RuntimeError(f"the warm-up step measurement gave no answer in {STEP_TIMEOUT_S:.0f} s "
                               f"(exit code {proc.exitcode})")
        status, value = ours.recv()
    except EOFError:
        raise RuntimeError(f"the warm-up step measurement died (exit code {proc.exitcode}); "
                           "out of memory is the usual cause") from None
    finally:
        proc.join(timeout=60)
        if proc.is_alive():
            proc.terminate()
    if status != "ok":
        raise RuntimeError(f"the warm-up step measurement failed: {value}")
    return int(value)


def measure_warmup(job: JobSpec, target: int, pool: SplitSample, pad_id: int, notes: list[str]) -> int | None:
    """The driver's warm-up step measured (None: no warm-up here, or modelled instead, said in notes).
    Not tried where its weights, gradients and Adam moments alone would not fit in this machine's
    free memory: the run's driver may be a larger node than the one planning."""
    if not job.warmup.enabled or job.warmup.checkpoint:
        return None
    free = psutil.virtual_memory().available
    if 4 * target > 0.7 * free:
        notes.append(f"the warm-up step was modelled, not measured: its model, gradients and Adam moments "
                     f"({4 * target / 2**30:.1f} GiB) would not fit in this machine's free memory")
        return None
    try:
        return warmup_step_bytes(job, target_loader(job), pool.encoded, pad_id)
    except (RuntimeError, ValueError) as exc:
        notes.append(f"the warm-up step was modelled, not measured: {exc}")
        return None
