"""P5: KRR propagation throughput as a fraction of this machine's measured matmul throughput.

Influence Distillation's propagation p̂ = RBF(E_block, E_L)·α is two matrix products per pool
block plus an exp. Measured side by side in one process, alternating, best of `--repeats`:
  - matmul: a float32 [block, dim] @ [dim, L] product (numpy / the same BLAS), GFLOP/s;
  - KRR in memory: KernelRidge.predict over `--rows` rows in blocks of `--block`;
  - KRR from the store: the same rows streamed from a Zarr float32 array (the real read path).
FLOPs per row come from KernelRidge.flops_per_row() (2·L·E for the distances, 2·L·C for α, 4·L
for the kernel). The fit (an L×L solve, once per target) is timed separately.

    .venv/bin/python -m bench.micro.krr_throughput [--rows 32768] [--landmarks 4096] [--dim 4096]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from iprox_ray.influence import krr


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=32768)
    ap.add_argument("--landmarks", type=int, default=4096)
    ap.add_argument("--dim", type=int, default=4096)
    ap.add_argument("--columns", type=int, default=1)
    ap.add_argument("--block", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    L, E, C, B = args.landmarks, args.dim, args.columns, args.block
    emb = rng.standard_normal((args.rows, E), dtype=np.float32)
    landmarks = emb[np.sort(rng.choice(args.rows, L, replace=False))]
    scores = rng.standard_normal((L, C))
    t = time.perf_counter()
    model = krr.fit(landmarks, scores, "rbf", 0.01)
    fit_s = time.perf_counter() - t
    a, b = emb[:B], np.ascontiguousarray(landmarks.T)

    with tempfile.TemporaryDirectory() as tmp:
        import zarr

        arr = zarr.create_array(str(Path(tmp) / "emb.zarr"), shape=emb.shape, chunks=(B, E), dtype="float32",
                                compressors=None)
        for o in range(0, args.rows, B):
            arr[o : o + B] = emb[o : o + B]

        def mm():
            a @ b

        def predict_memory():
            for o in range(0, args.rows, B):
                model.predict(emb[o : o + B])

        def predict_store():
            for o in range(0, args.rows, B):
                model.predict(arr[o : o + B])

        mm_s = best_of(mm, args.repeats)
        mem_s = best_of(predict_memory, args.repeats)
        store_s = best_of(predict_store, args.repeats)
        mm_s = min(mm_s, best_of(mm, args.repeats))  # again, after: the machine is shared
    mm_gflops = 2 * B * E * L / mm_s / 1e9
    flops = model.flops_per_row() * args.rows
    print(f"{os.cpu_count()} cores; L={L} landmarks, E={E} dims, C={C} columns, {args.rows:,} rows in blocks of {B}")
    print(f"fit (median bandwidth + {L}x{L} solve): {fit_s:.2f} s")
    print(f"{'side':<22}{'seconds':>9}{'rows/s':>12}{'GFLOP/s':>10}{'of matmul':>11}")
    print(f"{'matmul [B,E]@[E,L]':<22}{mm_s:>9.3f}{'':>12}{mm_gflops:>10.1f}{1:>11.2f}")
    for name, sec in [("KRR predict, memory", mem_s), ("KRR predict, Zarr", store_s)]:
        gflops = flops / sec / 1e9
        print(f"{name:<22}{sec:>9.3f}{args.rows / sec:>12,.0f}{gflops:>10.1f}{gflops / mm_gflops:>11.2f}")


if __name__ == "__main__":
    main()
