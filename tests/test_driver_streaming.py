"""Driver stages whose memory is flat in the pool size, against plain in-memory references:
per-domain counts of the report, mid-PPL's band of quantiles, round-robin candidate lists."""

import numpy as np
import pytest

from iprox_ray.stages import batched_reads
from iprox_ray.stages.report import domain_shares, domain_shares_from_counts, pool_domain_counts, rows_with_status
from iprox_ray.store.sketch_store import CANDIDATES, EMPTY, NONFINITE, NOT_SKETCHED, OK, QUARANTINED, SplitStore


def _pool(tmp_path, n_shards=11, S=16, seed=0):
    store = SplitStore.create(tmp_path / "store.zarr", "pool", n_shards, S, 1, {})
    rng = np.random.default_rng(seed)
    n = n_shards * S
    store.group["domain"][:] = rng.choice(["math", "code", "", "chat", "(none)"], n)
    store.group["written"][:] = rng.choice([OK, OK, NONFINITE, NOT_SKETCHED, QUARANTINED, EMPTY], n).astype(np.uint8)
    return store


def test_pool_domain_counts_equal_the_in_memory_shares(tmp_path, monkeypatch):
    pool = _pool(tmp_path)
    monkeypatch.setattr(batched_reads, "READ_ROWS", 48)  # several batches of three whole shards
    written, domains = pool.read("written"), pool.read("domain")
    ok = np.isin(written, CANDIDATES)
    counts = pool_domain_counts(pool)
    assert counts["(none)"] == int((ok & np.isin(domains, ["", "(none)"])).sum())
    assert sum(counts.values()) == int(ok.sum())
    assert domain_shares_from_counts(counts) == domain_shares(domains[ok].tolist())
    assert rows_with_status(pool, NONFINITE) == int((written == NONFINITE).sum())
