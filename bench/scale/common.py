"""The scale benchmark's synthetic pool (no model), shared by its stages (bench/scale/stages.py)
and by the score read-rate benchmark (bench/micro/score_disk.py): Parquet inputs with id/domain
columns, their manifest, and a RunContext whose JobSpec names no real model (none is loaded).

Kept apart from bench/common.py because each scale stage measures its own process: this module
imports at load time exactly what the stages imported before (pyarrow and the light product
modules, no torch), so neither a stage's peak RSS nor its timed seconds change.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from iprox_ray.corpus.manifest import Manifest
from iprox_ray.execution.context import RunContext
from iprox_ray.spec import JobSpec
from iprox_ray.store.layout import POOL, RunLayout

ROWS_PER_FILE = 1 << 17  # input rows per Parquet file
ROW_GROUP = 8192
TOKENS_PER_ROW = 512.0  # what the auto sizer's tokenizer probe would have measured (no tokenizer here)
DUP_EVERY = 1000  # every 1000th row repeats the previous row's id (0.1 % duplicates)
DOMAINS = np.array(["math", "code", "chat", "science", "law", "medicine", "news", ""])
TARGET = "t"
TARGET_EXAMPLES = 64
RR_MEMORY_GIB = 8.0


def ids_of(g: np.ndarray) -> np.ndarray:
    """The id of global input row g ('s' + row; row g ≡ 1 mod DUP_EVERY repeats row g-1's id)."""
    base = np.where(g % DUP_EVERY == 1, g - 1, g)
    return np.strings.add("s", base.astype(np.dtypes.StringDType()))


def domains_of(g: np.ndarray) -> np.ndarray:
    return DOMAINS[(g * 2654435761 >> 11) % len(DOMAINS)]


def context(work: Path, k: int, strategy: str) -> RunContext:
    job = JobSpec.model_validate({
        "model": {"path": str(work / "no-model")},
        "data": {"pool": {"paths": [str(work / "inputs" / "*.parquet")], "format": "parquet"},
                 "target": {"paths": [str(work / "inputs" / "*.parquet")], "format": "parquet"}},
        "scoring": {"method": "less"},
        "selection": {"k": k, "strategy": strategy, "round_robin_memory_gib": RR_MEMORY_GIB},
    })
    return RunContext(job, RunLayout(work / "run"), quiet=True)


def load_manifest(ctx: RunContext) -> Manifest:
    return Manifest.load(ctx.layout.manifest(POOL), ctx.layout.manifest_info(POOL))


def write_inputs(work: Path, n: int) -> dict:
    """N input rows as Parquet files of ROWS_PER_FILE rows under work/inputs."""
    folder = work / "inputs"
    folder.mkdir(parents=True, exist_ok=True)
    n_files = -(-n // ROWS_PER_FILE)
    for f in range(n_files):
        g = np.arange(f * ROWS_PER_FILE, min(n, (f + 1) * ROWS_PER_FILE), dtype=np.int64)
        ids = pc.binary_join_element_wise("s", pa.array(np.where(g % DUP_EVERY == 1, g - 1, g)).cast(pa.string()), "")
        table = pa.table({"id": ids, "domain": pa.array(domains_of(g))})
        pq.write_table(table, folder / f"part-{f:05d}.parquet", row_group_size=ROW_GROUP)
    return {"files": n_files, "bytes": sum(p.stat().st_size for p in folder.iterdir())}


def write_manifest(work: Path, k: int) -> dict:
    """The product's manifest of the inputs (`build_manifest`, "auto" shards, TOKENS_PER_ROW)."""
    from iprox_ray.corpus.manifest import build_manifest
    from iprox_ray.corpus.sources import discover

    ctx = context(work, k, "topk")
    files = discover([str(work / "inputs" / "*.parquet")], "parquet", work)
    manifest = build_manifest(files, "auto", tokens_per_row=lambda probe: TOKENS_PER_ROW)
    manifest.save(ctx.layout.manifest(POOL), ctx.layout.manifest_info(POOL), {"synthetic": True})
    return {"files": len(files), "rows": manifest.n_rows, "n_shards": manifest.n_shards,
            "rows_per_shard": manifest.rows_per_shard}
