import json
import os
import socket

import numpy as np
import pytest
import zarr

from iprox_ray.store.lock import RunLock, RunLockedError
from iprox_ray.store.markers import ShardMarkers
from iprox_ray.store.sketch_store import OK, ROW_ARRAYS, SCALE, SKETCH, SplitStore, StoreMismatchError

from conftest import REPO


def _rows(n, prefix="x"):
    return {
        "sample_id": [f"{prefix}{i}" for i in range(n)], "domain": ["d"] * n, "subtask": [""] * n,
        "n_tokens": np.arange(n), "loss": np.ones(n), "sketch_norm": np.ones(n),
        "written": np.full(n, OK),
    }


def test_each_corpus_shard_owns_whole_zarr_shards(tmp_path):
    store = SplitStore.create(tmp_path / "s.zarr", "pool", n_shards=3, rows_per_shard=16, sketch_dim=8, attrs={})
    assert store.group[SKETCH].shards == (16, 8)
    assert all(store.group[name].chunks == (16,) for name in ROW_ARRAYS)
    store.write_shard(1, np.full((10, 8), 0.5, np.float16), _rows(10))
    sketch = store.read(SKETCH)
    assert (sketch[16:26] == 0.5).all() and (sketch[26:32] == 0).all() and (sketch[:16] == 0).all()
    written = store.read("written")
    assert written[16:26].tolist() == [OK] * 10 and written[26:].sum() == 0
    assert store.read("sample_id", slice(16, 18)).tolist() == ["x0", "x1"]
    files = sorted(p.relative_to(tmp_path / "s.zarr" / "pool" / SKETCH).as_posix()
                   for p in (tmp_path / "s.zarr" / "pool" / SKETCH).rglob("c/*/*"))
    assert files == ["c/1/0"]  # one file, owned by shard 1 alone


def test_reopening_with_other_settings_refuses(tmp_path):
    SplitStore.create(tmp_path / "s.zarr", "pool", 2, 8, 4, {"sketch_fingerprint": "aaa"})
    SplitStore.create(tmp_path / "s.zarr", "pool", 2, 8, 4, {"sketch_fingerprint": "aaa"})  # same: fine
    with pytest.raises(StoreMismatchError, match="sketch_fingerprint: store has 'aaa', run wants 'bbb'"):
        SplitStore.create(tmp_path / "s.zarr", "pool", 2, 8, 4, {"sketch_fingerprint": "bbb"})
    with pytest.raises(StoreMismatchError, match="sketch_dim"):
        SplitStore.create(tmp_path / "s.zarr", "pool", 2, 8, 5, {"sketch_fingerprint": "aaa"})


def test_gather_reads_rows_across_shards(tmp_path):
    store = SplitStore.create(tmp_path / "s.zarr", "pool", 3, 4, 2, {})
    for shard in range(3):
        store.write_shard(shard, np.zeros((4, 2), np.float16), _rows(4, prefix=f"s{shard}-"))
    assert store.gather("sample_id", np.array([9, 0, 5])).tolist() == ["s2-1", "s0-0", "s1-1"]


def test_markers_are_plain_files(tmp_path):
    markers = ShardMarkers(tmp_path / "done", tmp_path / "failed")
    markers.record_failure(3, "boom", attempt=1, final=False)
    markers.mark_done(3, {"rows": 5})
    assert markers.done_ids() == {3} and markers.is_done(3)
    assert json.loads((tmp_path / "done" / "000003.json").read_text())["rows"] == 5
    assert markers.read_failures() == []  # success clears the failure record


def test_lock_names_its_owner_and_takes_over_only_dead_owners(tmp_path):
    path = tmp_path / "LOCK"
    with RunLock(path):
        with pytest.raises(RunLockedError, match=f"host {socket.gethostname()}, pid {os.getpid()}"):
            RunLock(path).acquire()
    # A lock left by a dead process on this host is reported and taken over.
    path.write_text(json.dumps({"host": socket.gethostname(), "pid": 2**22 + 12345, "since": 0}))
    messages = []
    lock = RunLock(path, report=messages.append)
    lock.acquire()
    assert "owner is gone" in messages[0]
    lock.release()
    # Another host's lock cannot be proven dead: refuse unless forced.
    path.write_text(json.dumps({"host": "elsewhere", "pid": 1, "since": 0}))
    with pytest.raises(RunLockedError, match="host elsewhere"):
        RunLock(path).acquire()
    RunLock(path, force=True, report=messages.append).acquire()


@pytest.mark.parametrize("dtype", ["float16", "int8"])
def test_schema_file_describes_every_array_the_store_writes(tmp_path, dtype):
    schema = json.loads((REPO / "storage_schema" / "v2.json").read_text())
    store = SplitStore.create(tmp_path / "s.zarr", "pool", 1, 4, 2, {"sketch_dtype": dtype})
    documented = {name: spec for name, spec in schema["split_groups"]["arrays"].items()
                  if "only" not in spec or dtype in spec["only"]}
    assert set(documented) == set(ROW_ARRAYS) | {SKETCH} | ({SCALE} if dtype == "int8" else set())
    assert set(documented) == set(store.group.array_keys())
    for name, spec in documented.items():
        dtype_of = store.group[name].dtype
        if spec["dtype"].startswith("string"):
            assert "str" in str(dtype_of).lower() or dtype_of.kind in "OUT", name
        else:
            assert str(np.dtype(dtype_of)) in spec["dtype"], name
    root = zarr.open_group(str(tmp_path / "s.zarr"))
    assert set(schema["root_attributes"]) <= set(root.attrs)
    assert set(schema["split_groups"]["attributes"]) >= set(store.group.attrs)


def test_checkpoint_arrays_follow_the_schema(tmp_path):
    from iprox_ray.store.sketch_store import PER_CHECKPOINT, checkpoint_array

    schema = json.loads((REPO / "storage_schema" / "v2.json").read_text())
    attrs = {"checkpoints": [{"name": "a", "weight": 0.5}, {"name": "b", "weight": 0.25},
                             {"name": "c", "weight": 0.25}]}
    store = SplitStore.create(tmp_path / "s.zarr", "pool", 2, 4, 3, attrs)
    extra = set(store.group.array_keys()) - set(schema["split_groups"]["arrays"])
    documented = {n.replace("<c>", str(c)) for n in schema["checkpoint_arrays"]["names"] for c in (1, 2)
                  if not n.startswith(SCALE)}  # float16: no scales
    assert extra == documented == {checkpoint_array(n, c) for n in PER_CHECKPOINT for c in (1, 2) if n != SCALE}
    rows = {name: np.zeros(3, dtype=object if name in ("sample_id", "domain", "subtask") else np.float32)
            for name in store.group.array_keys() if store.group[name].ndim == 1}
    sketches = [np.full((3, 3), c + 1, np.float32) for c in range(3)]
    store.write_shard(1, sketches, rows)
    for c in range(3):
        assert (store.read(checkpoint_array("sketch", c), store.shard_rows(1))[:3] == c + 1).all()
    with pytest.raises(ValueError, match="3 checkpoints"):
        store.write_shard(0, sketches[0], rows)


def test_remove_tree_inside_refuses_the_root_and_anything_outside(tmp_path):
    from iprox_ray.store.atomic import remove_tree_inside

    root = tmp_path / "run"
    (root / "selections" / "x").mkdir(parents=True)
    outside = tmp_path / "precious"
    outside.mkdir()
    (root / "selections" / "link").symlink_to(outside)
    for bad in (root, root / "selections" / "..", outside, root / "selections" / "link"):
        with pytest.raises(ValueError, match="refusing to delete"):
            remove_tree_inside(root, bad)
    assert root.exists() and outside.exists()
    remove_tree_inside(root, root / "selections" / "x")
    assert not (root / "selections" / "x").exists()
