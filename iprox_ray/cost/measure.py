"""Time a few batches of a worker's pass (sketch or embed) on this machine, through the objects
the workers build (sketch.factory / embed_task's embedder, corpus.batching's batches), and watch
the memory they take: resident set on CPU (sampled by a thread: ru_maxrss cannot be reset),
allocated bytes on GPU."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import psutil
import torch

from iprox_ray.corpus.batching import Batch


class PeakRss:
    """Highest resident set of this process while the context is open."""

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.peak = 0
        self._proc = psutil.Process(os.getpid())
        self._stop = threading.Event()

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self) -> "PeakRss":
        self.peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def rss() -> int:
    return psutil.Process(os.getpid()).memory_info().rss


def fresh_worker(modules: tuple[str, ...]) -> tuple[float, int]:
    """(wall seconds, resident bytes) of a fresh interpreter importing a worker's modules: what
    each Ray actor pays before its setup (torch, transformers, the store), at the machine's load."""
    # Resident now, not ru_maxrss: Linux carries the parent's high-water mark over fork + exec.
    code = f"import psutil, {', '.join(modules)}; print(psutil.Process().memory_info().rss)"
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    return time.perf_counter() - start, int(out.stdout.split()[-1])


def pick_spread(n: int, count: int) -> list[int]:
    """`count` batch indices spread over a length-sorted batch list (short, middle and long rows)."""
    if n <= count:
        return list(range(n))
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, count)})


@dataclass
class PassMeasure:
    setup_seconds: float
    timed_batches: int
    timed_padded_tokens: int
    seconds_per_padded_token: float
    cpu_share: float  # CPU seconds of the process over wall seconds x threads: 1 on an idle machine
    model_bytes: int
    activation_bytes: int
    largest_timed_batch: int


def padded(batch: Batch) -> int:
    return int(batch.input_ids.shape[0] * batch.input_ids.shape[1])


def time_pass(load: Callable[[], Callable[[Batch], object]], batches: list[Batch], count: int,
              device: str, threads: int) -> PassMeasure:
    """`load()` builds the worker's model and returns a function running one batch (forcing the
    result to the host, as the worker does). One untimed batch first: lazy initialisation (hooks,
    kernels, allocator) is paid once per worker, not per batch."""
    if not batches:
        raise ValueError("no batch to time: the sample holds no usable row")
    cuda = device == "cuda"
    before = torch.cuda.memory_allocated() if cuda else rss()
    start = time.perf_counter()
    step = load()
    setup = time.perf_counter() - start
    loaded = torch.cuda.memory_allocated() if cuda else rss()
    chosen = [batches[i] for i in pick_spread(len(batches), count)]
    seconds = cpu = 0.0
    # The peak counts from the loaded model, so the untimed batch's memory is part of it.
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        step(batches[0])
        for b in chosen:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            step(b)
            torch.cuda.synchronize()
            seconds += time.perf_counter() - t0
        activation = torch.cuda.max_memory_allocated() - loaded
    else:
        with PeakRss() as watch:
            step(batches[0])
            for b in chosen:
                t0, c0 = time.perf_counter(), time.process_time()
                step(b)
                seconds += time.perf_counter() - t0
                cpu += time.process_time() - c0
        activation = watch.peak - loaded
    tokens = sum(padded(b) for b in chosen)
    share = 1.0 if cuda else min(1.0, cpu / max(seconds * threads, 1e-9))
    return PassMeasure(setup, len(chosen), tokens, seconds / tokens, share, max(0, loaded - before),
                       max(0, activation), max(padded(b) for b in chosen))


def close_held(holder: dict) -> None:
    """Release what a pass's loader left in `holder` (its sketcher's or embedder's hooks)."""
    for key in ("sketcher", "embedder"):
        if key in holder:
            holder[key].close()
    holder.clear()
