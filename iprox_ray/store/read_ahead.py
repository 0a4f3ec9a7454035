"""Reading the next shard in a background thread while the caller works on this one.

A streaming reader (the score stage) works shard by shard: read a shard's sketch rows, score them.
Read then compute in turn leaves the disk idle while the CPU scores and the CPU idle while the disk
reads; shards read ahead in threads overlap the two (file reads and the Numba kernels release the GIL).
Only a bounded number of shards is ever held: what was started for shards the caller has moved
past is dropped.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Callable, Hashable, Iterator

import numba

READERS = 2
_EXECUTOR: ThreadPoolExecutor | None = None
_LOCK = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    """The process's reader threads: two, so that two reads are in flight (a disk serves two
    streams faster than one), while the caller computes on a third."""
    global _EXECUTOR
    with _LOCK:
        if _EXECUTOR is None:
            _EXECUTOR = ThreadPoolExecutor(max_workers=READERS, thread_name_prefix="iprox-read-ahead")
        return _EXECUTOR


@contextmanager
def threads_beside_readers() -> Iterator[None]:
    """Numba kernels of the calling thread use one core fewer while it reads ahead: the readers
    copy and checksum on that core (on 2 cores, scoring with one kernel thread ran 7.1 s against
    8.6 s with two, the two fighting the readers for a core; bench/RESULTS.md)."""
    before = numba.get_num_threads()
    numba.set_num_threads(max(1, before - 1))
    try:
        yield
    finally:
        numba.set_num_threads(before)


class ReadAhead:
    """Reads started for (name, shard) keys, taken at most once by the caller."""

    def __init__(self) -> None:
        self._pending: dict[tuple[Hashable, int], Future] = {}

    def start(self, name: Hashable, part: int, read: Callable[[], Any]) -> None:
        """Begin `read()` for part `part` (a shard, a window of shards) in the background."""
        if (name, part) not in self._pending:
            self._pending[(name, part)] = _executor().submit(read)

    def drop_before(self, part: int) -> None:
        """Forget reads of parts before `part` (the caller has moved past them)."""
        for key in [k for k in self._pending if k[1] < part]:
            self._pending.pop(key).cancel()

    def take(self, name: Hashable, part: int, keep: bool = False) -> Any | None:
        """What the background read returned (its exception raised here), or None if none was
        started; `keep`: leave it for later calls (a window read once, used shard by shard)."""
        future = self._pending.get((name, part)) if keep else self._pending.pop((name, part), None)
        return None if future is None else future.result()

    def __len__(self) -> int:
        return len(self._pending)
