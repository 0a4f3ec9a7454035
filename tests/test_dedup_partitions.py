"""Hash-partitioned external dedup against a plain first-occurrence reference."""

import numpy as np
import pytest

from iprox_ray.stages import dedup
from iprox_ray.store import batched_reads
from iprox_ray.store.sketch_store import DUPLICATE, EMPTY, NONFINITE, NOT_SKETCHED, OK, QUARANTINED, SplitStore


def _store(tmp_path, n_shards=9, S=16, seed=0, id_range=60):
    store = SplitStore.create(tmp_path / "store.zarr", "pool", n_shards, S, 1, {})
    rng = np.random.default_rng(seed)
    n = n_shards * S
    ids = np.array([f"id-{i}" if i % 7 else f"id-{i}\u00e9" for i in rng.integers(0, id_range, n)])
    ids[rng.random(n) < 0.05] = ""  # an empty id is an id too
    written = rng.choice([OK, OK, OK, NONFINITE, NOT_SKETCHED, QUARANTINED, EMPTY], n).astype(np.uint8)
    store.group["sample_id"][:] = ids
    store.group["written"][:] = written
    return store, ids, written


def _reference(ids, written):
    first: dict[str, int] = {}
    dup, kept = [], []
    for row, (sid, w) in enumerate(zip(ids.tolist(), written.tolist())):
        if w not in dedup.CANDIDATE:
            continue
        if sid in first:
            dup.append(row)
            kept.append(first[sid])
        else:
            first[sid] = row
    return dup, kept


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("partitions", [1, 2, 7])
def test_partitioned_dedup_equals_first_occurrence_reference(tmp_path, seed, partitions):
    store, ids, written = _store(tmp_path, seed=seed)
    dup, kept = dedup.find_duplicates(store, partitions=partitions, spill_dir=tmp_path)
    ref_dup, ref_kept = _reference(ids, written)
    assert len(ref_dup) > 20
    assert dup.tolist() == ref_dup
    assert kept.tolist() == ref_kept
    assert [p.name for p in tmp_path.iterdir()] == ["store.zarr"]  # partition files removed


def test_tiny_budget_spreads_over_many_partitions(tmp_path, monkeypatch):
    store, ids, written = _store(tmp_path, n_shards=12, S=32, id_range=100)
    budget = 40 * dedup.BYTES_PER_ROW
    assert dedup.partition_count(store.n_rows, budget) == 10
    used = []
    original = dedup._Partitions.load

    def spy(self, p):
        records = original(self, p)
        used.append((self.count, len(records), self.folder.exists() and any(self.folder.iterdir())))
        return records

    monkeypatch.setattr(dedup._Partitions, "load", spy)
    monkeypatch.setattr(batched_reads, "READ_ROWS", 64)  # several read batches of two whole shards
    dup, kept = dedup.find_duplicates(store, memory_bytes=budget, spill_dir=tmp_path)
    assert (dup.tolist(), kept.tolist()) == _reference(ids, written)
    assert len(used) == 10 and all(count == 10 and on_disk for count, _, on_disk in used)
    candidates = int(np.isin(written, dedup.CANDIDATE).sum())
    assert sum(n for _, n, _ in used) == candidates
    assert max(n for _, n, _ in used) < candidates / 3  # the records really are spread


def test_ids_are_read_back_once_per_budget_not_once_per_partition(tmp_path, monkeypatch):
    store, ids, written = _store(tmp_path, seed=3)
    reads = []
    original = dedup.read_rows_at

    def counting(store, name, rows):
        reads.append(len(rows))
        return original(store, name, rows)

    monkeypatch.setattr(dedup, "read_rows_at", counting)
    dup, kept = dedup.find_duplicates(store, partitions=7)  # the default budget holds every shared row
    assert (dup.tolist(), kept.tolist()) == _reference(ids, written)
    assert len(reads) == 1
    reads.clear()
    dup, kept = dedup.find_duplicates(store, partitions=7, memory_bytes=1)  # each partition its own read
    assert (dup.tolist(), kept.tolist()) == _reference(ids, written)
    assert 1 < len(reads) <= 7


def test_hash_collisions_never_quarantine_a_distinct_id(tmp_path, monkeypatch):
    store, ids, written = _store(tmp_path, seed=5)
    # Every id gets one of two hashes: runs mix many distinct ids, as a collision would.
    monkeypatch.setattr(dedup, "id_hashes", lambda s: np.array([len(x) % 2 for x in s.tolist()], np.uint64))
    for partitions in (1, 3):
        dup, kept = dedup.find_duplicates(store, partitions=partitions)
        assert (dup.tolist(), kept.tolist()) == _reference(ids, written)


def test_id_hashes_ignore_padding_width():
    a = dedup.id_hashes(np.array(["ab", "x"]))
    b = dedup.id_hashes(np.array(["ab", "a much longer id"]))
    assert a[0] == b[0] and a[1] != b[1]
    assert len(set(dedup.id_hashes(np.array([f"id-{i}" for i in range(5000)])).tolist())) == 5000


def test_read_rows_at_and_mark_duplicates_touch_whole_shards(tmp_path, monkeypatch):
    store, ids, written = _store(tmp_path)
    monkeypatch.setattr(batched_reads, "READ_ROWS", 40)
    rows = np.array([0, 3, 17, 18, 90, 143])
    assert batched_reads.read_rows_at(store, "sample_id", rows).tolist() == ids[rows].tolist()
    dedup.mark_duplicates(store, rows[[1, 3, 4]])
    expect = written.copy()
    expect[rows[[1, 3, 4]]] = DUPLICATE
    np.testing.assert_array_equal(store.read("written"), expect)
