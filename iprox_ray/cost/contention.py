"""Busy siblings for a timing: while one worker's batches are timed, the node's other workers run
the same batches in their own processes, so the seconds measured include their competition for
the cores, caches and memory bandwidth a real node shares (one timing process alone on a
fully subscribed node reads fast)."""

from __future__ import annotations

import contextlib
import functools
import multiprocessing as mp
import os
import time
from typing import Callable, Iterator

import psutil
import torch

from iprox_ray.corpus.batching import Batch
from iprox_ray.cost.measure import PassMeasure, close_held, rss, time_pass

READY_TIMEOUT_S = 900.0


def _sibling(make_load: Callable[[], Callable[[], Callable[[Batch], object]]], batches: list[Batch],
             threads: int, ready, stop) -> None:
    """Load the worker's model as the timed process does, then run batches until told to stop."""
    torch.set_num_threads(threads)
    step = make_load()()
    step(batches[0])
    ready.release()
    i = 0
    while not stop.is_set():
        step(batches[i % len(batches)])
        i += 1


def _wait_ready(procs: list, ready, deadline: float) -> None:
    for _ in procs:
        while not ready.acquire(timeout=0.5):
            dead = [p for p in procs if p.exitcode is not None]
            if dead:
                raise RuntimeError(f"a sibling timing process exited with code {dead[0].exitcode} before it was "
                                   "ready (its error is printed above); plan cannot time the node's workers together")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the sibling timing processes were not ready after {READY_TIMEOUT_S:.0f} s")


@contextlib.contextmanager
def busy_siblings(count: int, make_load: Callable, batches: list[Batch], threads: int) -> Iterator[None]:
    """`count` fresh processes (spawned: no forked torch state) each loading `make_load()()` and
    running `batches` over and over while the context is open. `make_load` must pickle: a
    module-level function or a functools.partial of one over picklable arguments."""
    if count <= 0:
        yield
        return
    ctx = mp.get_context("spawn")
    ready, stop = ctx.Semaphore(0), ctx.Event()
    procs = [ctx.Process(target=_sibling, args=(make_load, batches, threads, ready, stop), daemon=True)
             for _ in range(count)]
    try:
        for p in procs:
            p.start()
        _wait_ready(procs, ready, time.monotonic() + READY_TIMEOUT_S)
        yield
    finally:
        stop.set()
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.terminate()
                p.join()


def siblings_to_run(layout, device: str, used: int, notes: list[str]) -> int:
    """How many other workers run beside the timed one: a node's CPU workers share its cores
    (GPU workers each own a device), as many as fit on this machine's cores."""
    if device == "cuda" or layout.uses_gpu or layout.per_node <= 1:
        return 0
    together = min(layout.per_node, max(1, (os.cpu_count() or 1) // used))
    if together < layout.per_node:
        notes.append(f"the profile runs {layout.per_node} workers per node; {together} fit on this machine's cores "
                     f"at {used} thread(s) each and were timed together")
    return together - 1


def time_beside_siblings(make_load: Callable[[dict], Callable], batches: list[Batch], count: int, device: str,
                         threads: int, siblings: int, alone: PassMeasure,
                         notes: list[str]) -> tuple[PassMeasure | None, int]:
    """(the pass timed again while siblings run the same batches, workers timed together); None
    and 1 without any. As many siblings as this machine's free memory holds at what one worker
    took alone; a sibling that fails leaves the timing alone, said in `notes`. `make_load(holder)`
    is a picklable partial. Memory figures come from the timing alone: a second load in this
    process reuses freed memory."""
    each = rss() + alone.model_bytes + alone.activation_bytes  # a worker: imports, model, batch
    fit = min(siblings, int(0.8 * psutil.virtual_memory().available // max(1, each)))
    if fit < siblings:
        notes.append(f"{fit} of {siblings} sibling worker(s) fit in this machine's free memory: timed with {fit}")
    if fit <= 0:
        return None, 1
    try:
        with busy_siblings(fit, functools.partial(make_load, {}), batches, threads):
            holder: dict = {}
            measure = time_pass(make_load(holder), batches, count, device, threads)
            close_held(holder)
    except RuntimeError as exc:
        notes.append(f"timed alone: {exc}")
        return None, 1
    return measure, fit + 1
