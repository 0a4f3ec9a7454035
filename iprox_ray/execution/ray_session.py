"""Start or join Ray: an embedded local cluster by default, an existing one by address."""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

import ray


@contextlib.contextmanager
def ray_session(address: str = "local", num_cpus: int | None = None) -> Iterator[dict]:
    """Yields the cluster's resources. Leaves Ray running only if it was already running."""
    if ray.is_initialized():
        yield ray.cluster_resources()
        return
    kwargs = {"include_dashboard": False, "log_to_driver": True, "configure_logging": False}
    if address == "local":
        # "local" always starts a fresh embedded cluster (never a stale /tmp/ray one).
        kwargs["num_cpus"] = num_cpus or os.cpu_count()
    ray.init(address=address, **kwargs)
    try:
        yield ray.cluster_resources()
    finally:
        ray.shutdown()
