"""P4: streaming exact top-k over a chunked Zarr array of 1e8 float32 scores vs one numpy pass.

Both sides read the same chunks of the same Zarr array (from the page cache after a warm-up
pass); the baseline does `chunk.max()` per chunk, iprox-ray feeds each chunk to StreamingTopK.
Each measurement runs in a fresh process (so its peak RSS is its own), alternating sides,
`--repeats` times; medians are reported. Numba kernels are compiled (or loaded from cache) on a
tiny array before timing.

    .venv/bin/python -m bench.micro.topk_stream [--rows 100000000] [--chunk 1000000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import module_command


def build(path: Path, rows: int, chunk: int, seed: int = 0) -> None:
    import zarr

    arr = zarr.create_array(str(path), shape=(rows,), chunks=(chunk,), dtype="float32", fill_value=np.nan,
                            compressors=None)
    rng = np.random.default_rng(seed)
    for start in range(0, rows, chunk):
        block = rng.standard_normal(min(chunk, rows - start), dtype=np.float32)
        block[rng.random(block.size) < 1e-3] = np.nan  # a few non-finite scores, as real runs have
        arr[start : start + block.size] = block


def measure(path: str, mode: str, k: int) -> dict:
    import zarr

    from iprox_ray.influence.topk import StreamingTopK

    StreamingTopK(5).push(np.random.default_rng(0).random(5000, dtype=np.float32), 0)  # JIT / cache load
    arr = zarr.open_array(path, mode="r")
    chunk = arr.chunks[0]
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    if mode == "max":
        best = -np.inf
        for lo in range(0, arr.shape[0], chunk):
            best = max(best, float(arr[lo : lo + chunk].max()))
        out = {"max": best}
    else:
        acc = StreamingTopK(k)
        for lo in range(0, arr.shape[0], chunk):
            acc.push(arr[lo : lo + chunk], lo)
        rows, scores = acc.result()
        out = {"k": k, "last": float(scores[-1]), "non_finite": acc.non_finite}
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {**out, "mode": mode, "seconds": seconds, "peak_rss_mb": peak / 1024, "rss_before_mb": base_rss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000_000)
    ap.add_argument("--chunk", type=int, default=1_000_000)
    ap.add_argument("--ks", type=int, nargs="+", default=[10_000, 1_000_000])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dir", default=None, help="where to build the array (default: a temp dir)")
    ap.add_argument("--child", nargs=3, metavar=("PATH", "MODE", "K"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], args.child[1], int(args.child[2]))))
        return
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "scores.zarr"
        t = time.perf_counter()
        build(path, args.rows, args.chunk)
        print(f"built {args.rows:.0e} float32 scores in chunks of {args.chunk:,} in {time.perf_counter() - t:.1f} s "
              f"({os.cpu_count()} cores, NUMBA_NUM_THREADS={os.environ.get('NUMBA_NUM_THREADS', 'default')})")
        runs: dict[str, list[dict]] = {}
        plan = [("max", 0)] + [("topk", k) for k in args.ks]
        for _ in range(args.repeats + 1):  # the first round warms the page cache and is dropped
            for mode, k in plan:
                proc = subprocess.run(module_command(__spec__.name, "--child", str(path), mode, str(k)),
                                      capture_output=True, text=True, check=True)
                runs.setdefault(f"{mode}{k or ''}", []).append(json.loads(proc.stdout.strip().splitlines()[-1]))
        base = statistics.median(r["seconds"] for r in runs["max"][1:])
        print(f"{'side':<14}{'median s':>10}{'× numpy max':>14}{'peak RSS MB':>13}{'RSS before MB':>15}")
        for name, rs in runs.items():
            rs = rs[1:]
            sec = statistics.median(r["seconds"] for r in rs)
            print(f"{name:<14}{sec:>10.3f}{sec / base:>14.2f}{max(r['peak_rss_mb'] for r in rs):>13.0f}"
                  f"{max(r['rss_before_mb'] for r in rs):>15.0f}")


if __name__ == "__main__":
    main()
