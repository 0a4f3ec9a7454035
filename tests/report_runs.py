"""Synthetic run directories for the report's tests: the files a run writes (config, manifest,
store row arrays, a score array, selection.parquet, quarantine records), built directly, in
seconds, at any size. The expected numbers come from the same arrays, in numpy."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import zarr

from iprox_ray.corpus.manifest import FileInfo, build_manifest, manifest_from_files
from iprox_ray.corpus.shard_reader import QUARANTINE_SCHEMA
from iprox_ray.corpus.sources import InputFile
from iprox_ray.spec import load_job
from iprox_ray.stages.select import SELECTION_SCHEMA
from iprox_ray.store.layout import POOL, RunLayout, score_array
from iprox_ray.store.sketch_store import NONFINITE, OK, QUARANTINED, SplitStore, open_root

from conftest import REPO

DOMAINS = ["arithmetic", "code", "dates", "prose"]


@dataclass
class Synthetic:
    layout: RunLayout
    scores: np.ndarray  # per store row (NaN where not a candidate)
    written: np.ndarray
    domains: np.ndarray
    selected: np.ndarray  # store rows in rank order
    ids: np.ndarray | None


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def make_run(root: Path, n_rows: int, rows_per_shard: int, k: int, *, pool_file: Path | None = None,
             ids: list[str] | None = None, domains: list[str] | None = None, seed: int = 0,
             selection: bool = True, quarantine: list[dict] | None = None, n_nonfinite: int = 0) -> Synthetic:
    """A run directory whose pool is `pool_file` (JSONL, n_rows rows) or, without one, a Parquet
    file that does not exist (the report then says the text is unavailable)."""
    layout = RunLayout(root)
    root.mkdir(parents=True, exist_ok=True)
    spec = load_job(REPO / "jobs" / "demo.toml",
                    ['proxy.method="none"', "fidelity.enabled=false"]).model_dump(mode="json")
    spec["data"]["pool"]["paths"] = [str(pool_file or root / "absent.parquet")]
    spec["data"]["pool"]["rows_per_shard"] = rows_per_shard
    layout.config.write_text(json.dumps({"fingerprint": "f00d", "inputs": {}, "spec": spec, "base_dir": str(root)}))
    if pool_file is not None:
        manifest = build_manifest([InputFile(pool_file, "jsonl")], rows_per_shard)
    else:
        manifest = manifest_from_files([FileInfo(str(root / "absent.parquet"), "parquet", 0, 0, "", n_rows)],
                                       rows_per_shard)
    layout.manifest_dir.mkdir(parents=True, exist_ok=True)
    manifest.save(layout.manifest(POOL), layout.manifest_info(POOL), {})

    rng = np.random.default_rng(seed)
    pool = SplitStore.create(layout.store, POOL, manifest.n_shards, rows_per_shard, 4, {})
    open_root(layout.store).attrs.update({"schema_version": 1})
    n_store = pool.n_rows
    written = np.zeros(n_store, np.uint8)
    written[:n_rows] = OK  # one file: the padding is at the end
    for q in quarantine or []:
        written[q["row"]] = QUARANTINED
    bad = rng.choice(np.flatnonzero(written == OK), size=n_nonfinite, replace=False) if n_nonfinite else []
    written[bad] = NONFINITE
    labels = np.array(domains if domains is not None else [DOMAINS[i % len(DOMAINS)] for i in range(n_rows)],
                      dtype=object)
    domain_col = np.full(n_store, "", dtype=object)
    domain_col[:n_rows] = labels
    pool.group["written"][:] = written
    pool.group["domain"][:] = domain_col.astype(str)
    id_col = None
    if ids is not None:
        id_col = np.full(n_store, "", dtype=object)
        id_col[:n_rows] = ids
        pool.group["sample_id"][:] = id_col.astype(str)
    scores = rng.standard_normal(n_store).astype(np.float32) + np.array(
        [DOMAINS.index(d) * 0.7 if d in DOMAINS else 0.0 for d in domain_col], np.float32)
    scores[written != OK] = np.nan
    root_group = zarr.open_group(str(layout.store), mode="r+")
    arr = root_group.create_array(score_array("main"), shape=(n_store,), chunks=(rows_per_shard,), dtype="float32",
                                  fill_value=float("nan"))
    arr[:] = scores
    arr.attrs.update({"method": "less", "target": "targets/main", "target_examples": 3, "aggregate": "mean"})
    order = np.lexsort((np.arange(n_store), -np.nan_to_num(scores, nan=-np.inf)))
    chosen = order[:k]
    if selection:
        files, local = manifest.locate(chosen)
        table = pa.table({
            "sample_id": pa.array([str(id_col[r]) if id_col is not None else "" for r in chosen.tolist()], pa.string()),
            "score": pa.array(scores[chosen].astype(np.float64)), "rank": pa.array(np.arange(1, k + 1, dtype=np.int64)),
            "weight": pa.array(np.full(k, n_rows / k)),
            "source_file": pa.array([manifest.files[f].file for f in files]),
            "source_row": pa.array(local.astype(np.int64)), "domain": pa.array(domain_col[chosen].astype(str).tolist()),
            "store_row": pa.array(chosen.astype(np.int64)), "picked_by": pa.nulls(k, pa.string())},
            schema=SELECTION_SCHEMA)
        layout.selection_dir("main").mkdir(parents=True, exist_ok=True)
        pq.write_table(table, layout.selection("main"), row_group_size=max(1, k // 3))  # several row groups
        layout.stages_dir.mkdir(parents=True, exist_ok=True)
        for stage, info in (("score-main", {}),
                            ("select-main", {"strategy": "topk", "valid_rows": int((written == OK).sum()),
                                             "cutoff": float(scores[chosen].min()), "k": k})):
            layout.stage_done(stage).write_text(json.dumps({**info, "stage": stage, "finished_at": 1.0, "outputs": []}))
    if quarantine:
        layout.quarantine_dir(POOL).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(quarantine, schema=QUARANTINE_SCHEMA), layout.quarantine_shard(POOL, 0))
    return Synthetic(layout, scores, written, domain_col, chosen, id_col)
