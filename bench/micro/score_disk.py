"""Scoring at disk speed (issue 27 item 7): the score stage's read rate vs `cat` of the same files.

    # as root: it drops the page cache
    .venv/bin/python -m bench.micro.score_disk [--rows 1e6] [--out /tmp/score-disk] [--repeats 2]

A synthetic pool store of N rows at the default sketch width (`SketchSpec()`: 9,216 columns) in
the default store dtype (int8 rows + a float32 scale and norm per row), written straight into the
product's Zarr layout (random unit rows; no model), plus a 64-example target split. Then, each
after `sync; echo 3 > /proc/sys/vm/drop_caches` (cold page cache), alternately:
- `cat` of every file of the arrays the score stage reads (sketch, sketch_scale, sketch_norm,
  written) to /dev/null: the raw sequential read rate;
- the product's `run_score` (LESS, one target direction) over the same store.
Both rates are bytes of those files per wall second; the ratio is score / cat (goal ≥ 0.8).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np

from bench.scale.common import TARGET, TARGET_EXAMPLES, context, load_manifest, write_inputs, write_manifest
from iprox_ray.spec import SketchSpec, StoreSpec
from iprox_ray.store.batched_reads import shard_batches
from iprox_ray.store.layout import POOL, target_split
from iprox_ray.store.sketch_store import OK, SCALE, SKETCH, SplitStore

READ_ARRAYS = (SKETCH, SCALE, "sketch_norm", "written")  # what the LESS score stage reads of the pool


def default_width() -> int:
    spec = SketchSpec()
    return spec.reproject_dim + spec.vector_dim  # fixed whatever the model (README's sizes table)


def build_store(work: Path, n: int, dim: int, dtype: str) -> None:
    write_inputs(work, n)
    write_manifest(work, 1)
    ctx = context(work, 1, "topk")
    manifest = load_manifest(ctx)
    pool = SplitStore.create(ctx.layout.store, POOL, manifest.n_shards, manifest.rows_per_shard, dim,
                             attrs={"sketch_dtype": dtype})
    rng = np.random.default_rng(0)
    g = pool.group
    for span in shard_batches(pool, 16384):
        m = span.stop - span.start
        payload = rng.integers(-127, 128, (m, dim), dtype=np.int8)
        g[SKETCH][span] = payload
        g[SCALE][span] = (1.0 / np.linalg.norm(payload.astype(np.float32), axis=1)).astype(np.float32)
        g["sketch_norm"][span] = rng.gamma(2.0, 1.0, m).astype(np.float32)
        g["loss"][span] = rng.gamma(4.0, 0.5, m).astype(np.float32)
        g["n_tokens"][span] = np.full(m, 256, np.int32)
        g["written"][span] = np.full(m, OK, np.uint8)
        g["sample_id"][span] = np.strings.add("s", np.arange(span.start, span.stop).astype(np.dtypes.StringDType()))
        g["domain"][span] = np.full(m, "d")
    target = SplitStore.create(ctx.layout.store, target_split(TARGET), 1, TARGET_EXAMPLES, dim,
                               attrs={"sketch_dtype": dtype})
    t = rng.standard_normal((TARGET_EXAMPLES, dim), dtype=np.float32)
    norms = np.linalg.norm(t, axis=1)
    target.write_shard(0, t / norms[:, None], {
        "sample_id": np.array([f"t{i}" for i in range(TARGET_EXAMPLES)]), "domain": np.full(TARGET_EXAMPLES, "t"),
        "subtask": np.full(TARGET_EXAMPLES, ""), "n_tokens": np.full(TARGET_EXAMPLES, 100, np.int32),
        "loss": np.ones(TARGET_EXAMPLES, np.float32), "sketch_norm": norms.astype(np.float32),
        "written": np.full(TARGET_EXAMPLES, OK, np.uint8)})


def read_files(work: Path) -> list[Path]:
    folder = context(work, 1, "topk").layout.store / POOL
    return sorted(p for name in READ_ARRAYS for p in (folder / name).rglob("*") if p.is_file())


def drop_caches() -> None:
    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def time_cat(files: list[Path]) -> float:
    drop_caches()
    start = time.perf_counter()
    subprocess.run(["xargs", "-0", "cat"], input=b"\0".join(str(p).encode() for p in files),
                   stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def time_score(work: Path) -> float:
    from iprox_ray.stages.score import run_score

    ctx = context(work, 1, "topk")
    shutil.rmtree(ctx.layout.stages_dir, ignore_errors=True)  # score again, not "done"
    shutil.rmtree(ctx.layout.store / "scores", ignore_errors=True)
    drop_caches()
    start = time.perf_counter()
    run_score(ctx, target_split(TARGET), TARGET)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=float, default=1e6)
    ap.add_argument("--out", type=Path, default=Path("/tmp/score-disk"))
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="keep the synthetic store (a later run reuses it)")
    ap.add_argument("--build-only", action="store_true", help="build the store and stop (time it later, alone)")
    args = ap.parse_args()
    n, dim, dtype = int(args.rows), default_width(), StoreSpec().sketch_dtype
    if not (args.out / "run").exists():
        start = time.perf_counter()
        build_store(args.out, n, dim, dtype)
        print(f"store: {n:,} rows x {dim:,} ({dtype}) built in {time.perf_counter() - start:.0f} s", flush=True)
    if args.build_only:
        return
    files = read_files(args.out)
    size = sum(p.stat().st_size for p in files)
    cat, score = [], []
    for _ in range(args.repeats):
        cat.append(time_cat(files))
        score.append(time_score(args.out))
        print(f"cat {size / cat[-1] / 1e6:,.0f} MB/s, score {size / score[-1] / 1e6:,.0f} MB/s", flush=True)
    result = {"rows": n, "dim": dim, "dtype": dtype, "files": len(files), "bytes": size,
              "cat_seconds": cat, "score_seconds": score,
              "cat_mb_per_s": size / float(np.median(cat)) / 1e6,
              "score_mb_per_s": size / float(np.median(score)) / 1e6}
    result["ratio"] = result["score_mb_per_s"] / result["cat_mb_per_s"]
    print(json.dumps(result, indent=1))
    if not args.keep:
        shutil.rmtree(args.out, ignore_errors=True)


if __name__ == "__main__":
    main()
