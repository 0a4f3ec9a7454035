"""Busy siblings for a timing: while one worker's batches are timed, the node's other workers run
the same batches in their own processes, so the seconds measured include their competition for
the cores, caches and memory bandwidth a real node shares (one timing process alone on a
fully subscribed node reads fast)."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import time
from typing import Callable, Iterator

import torch

from iprox_ray.corpus.batching import Batch

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
