"""Scale benchmark of the driver (issue 15, goal P6): synthetic pool metadata and sketch store of N
rows (no model), then manifest, dedup, score, top-k, round-robin, domain counts, mid-PPL, subset
writing and the quarantine records' merge and counts, each stage in its own process
(bench/scale/stages.py) so its peak RSS (os.wait4's ru_maxrss) is its own.

    python -m bench.scale.driver --rows 1e7 1e8 --dim 16 --out /tmp/scale
    python -m bench.scale.driver --rows 1e7 1e8 --k-fraction 0.05 \
        --stages inputs manifest store score topk subset qgen quarantine     # issue 24: k = 5 % of N
    python -m bench.scale.driver --rows 1e7 1e8 --k-fraction 0.05 \
        --stages inputs manifest selgen subset qgen quarantine    # the same without store and scores

With --k-fraction the selection stages (topk, subset) select that share of N; the round-robin
candidates (score, roundrobin) and mid-PPL keep --k (their memory is C·k and k by design). `selgen`
writes a random selection of k rows where top-k would, for the subset stage without a store.

P6: peak RSS of every stage grows < 1.2x from the smallest to the largest N, and the sketch array
on disk is N·D·itemsize (+ < 1 %). A tiny warm-up size runs first (not reported) so Numba's
on-disk caches are filled before any measured stage (a compile would inflate one size's RSS).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from bench.common import REPO, module_command
from iprox_ray.store.sketch_store import SKETCH_DTYPE

GENERATE = ("inputs", "store", "selgen", "qgen")  # synthetic data, not product stages (timed, not judged)
STAGES = ("inputs", "manifest", "store", "dedup", "score", "topk", "roundrobin", "domains", "midppl", "selgen",
          "subset", "qgen", "quarantine")
SELECTION_STAGES = ("topk", "selgen", "subset")  # the stages whose k is --k-fraction of N when given
P6_RATIO = 1.2


def run_stage(stage: str, work: Path, n: int, dim: int, k: int) -> dict:
    """One stage in a fresh process; its own peak RSS from wait4 (KiB on Linux)."""
    cmd = module_command("bench.scale.stages", stage, str(work), str(n), str(dim), str(k))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"stage {stage} at N={n} failed (exit {proc.returncode})")
    info = json.loads(out.strip().splitlines()[-1])
    return {**info, "wall": wall, "rss_bytes": usage.ru_maxrss * 1024}


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run_size(out: Path, n: int, dim: int, k: int, keep: bool, quiet: bool = False, stages=STAGES,
             k_fraction: float | None = None) -> dict:
    work = out / f"n{n:.0e}".replace("+", "")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    results = {}
    for stage in stages:
        stage_k = int(k_fraction * n) if k_fraction and stage in SELECTION_STAGES else k
        results[stage] = r = run_stage(stage, work, n, dim, stage_k)
        r["k"] = stage_k
        if not quiet:
            extra = {key: v for key, v in r.items() if key not in ("stage", "seconds", "wall", "rss_bytes")}
            print(f"  N={n:.0e} {stage:<10} {r['seconds']:8.1f} s  peak RSS {r['rss_bytes'] / 2**20:7.0f} MiB  "
                  f"{extra}", flush=True)
    store = work / "run" / "store.zarr"
    manifest = results["manifest"]
    sizes = {"sketch_bytes": tree_bytes(store / "pool" / "sketch"), "store_bytes": tree_bytes(store / "pool"),
             "ideal_bytes": n * dim * SKETCH_DTYPE.itemsize,
             "store_rows": manifest["n_shards"] * manifest["rows_per_shard"],
             "inputs_bytes": results["inputs"]["bytes"]}
    if not keep:
        shutil.rmtree(work)
    return {"n": n, "stages": results, **sizes, "rows_per_shard": manifest["rows_per_shard"],
            "n_shards": manifest["n_shards"]}


def report(runs: list[dict], dim: int, k: int) -> str:
    small, large = runs[0], runs[-1]
    stages = [s for s in STAGES if s in small["stages"] and s in large["stages"]]
    mib = lambda b: f"{b / 2**20:.0f} MiB"  # noqa: E731
    lines = [f"| stage | k @{small['n']:.0e} / @{large['n']:.0e} | s @{small['n']:.0e} | s @{large['n']:.0e} | "
             f"peak RSS @{small['n']:.0e} | peak RSS @{large['n']:.0e} | RSS ratio |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    worst = (0.0, "")
    for stage in stages:
        a, b = small["stages"][stage], large["stages"][stage]
        ratio = b["rss_bytes"] / a["rss_bytes"]
        label = f"{stage} (data generation)" if stage in GENERATE else stage
        ks = f"{a.get('k', k):,} / {b.get('k', k):,}"
        lines.append(f"| {label} | {ks} | {a['seconds']:.1f} | {b['seconds']:.1f} | {mib(a['rss_bytes'])} | "
                     f"{mib(b['rss_bytes'])} | {ratio:.2f}x |")
        if stage not in GENERATE and ratio > worst[0]:
            worst = (ratio, stage)
    lines.append("")
    for r in runs:
        over = r["sketch_bytes"] / r["ideal_bytes"] - 1
        lines.append(f"N={r['n']:.0e}: S={r['rows_per_shard']} (auto), {r['n_shards']} shards, {r['store_rows']} "
                     f"store rows; sketch array {r['sketch_bytes']:,} B vs N·D·{SKETCH_DTYPE.itemsize} = "
                     f"{r['ideal_bytes']:,} B (+{100 * over:.2f} %); whole pool group {r['store_bytes']:,} B "
                     f"(+{100 * (r['store_bytes'] / r['ideal_bytes'] - 1):.1f} %); inputs {r['inputs_bytes']:,} B")
    if len(runs) < 2:
        lines.append("")
        lines.append(f"P6 not judged: one size only (N={small['n']:.0e}); run two sizes, "
                     "or --report a JSON holding both")
        return "\n".join(lines)
    size_ok = all(r["sketch_bytes"] / r["ideal_bytes"] - 1 < 0.01 for r in runs)
    rss_ok = worst[0] < P6_RATIO
    lines.append("")
    lines.append(f"P6 {'met' if rss_ok and size_ok else 'NOT met'}: worst product-stage peak-RSS ratio "
                 f"{worst[0]:.2f}x ({worst[1]}) from N={small['n']:.0e} to N={large['n']:.0e} (goal < {P6_RATIO}x); "
                 f"sketch array within 1 % of N·D·{SKETCH_DTYPE.itemsize}: {'yes' if size_ok else 'no'} "
                 f"(D={dim}, sketch dtype {SKETCH_DTYPE}, k per stage as listed, {len(stages)} stages)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", type=float, default=[1e7, 1e8], help="pool sizes N")
    parser.add_argument("--dim", type=int, default=16, help="sketch dim D (1e8 x 16 x 2 B = 3.2 GB)")
    parser.add_argument("--k", type=int, default=100_000, help="selected rows, the same at every N (memory "
                        "proportional to k is by design; P6 is about N)")
    parser.add_argument("--k-fraction", type=float, help="select this share of N in the selection stages "
                        f"({', '.join(SELECTION_STAGES)}); e.g. 0.05")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES),
                        help="stages to run, in the order of STAGES (a stage needs the ones it reads)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/scale"))
    parser.add_argument("--warmup-rows", type=float, default=2e5, help="unreported first size (Numba caches)")
    parser.add_argument("--keep", action="store_true", help="keep the synthetic data")
    parser.add_argument("--json", type=Path, help="raw results, rewritten after each size")
    parser.add_argument("--report", type=Path, help="only print the table of a --json file (two sizes or more)")
    args = parser.parse_args()
    if args.report:
        saved = json.loads(args.report.read_text())
        print(report(saved["runs"], saved["dim"], saved["k"]))
        return
    sizes = sorted(int(n) for n in args.rows)
    stages = [s for s in STAGES if s in args.stages]
    if args.warmup_rows:
        run_size(args.out, int(args.warmup_rows), args.dim, min(args.k, int(args.warmup_rows) // 10), False, quiet=True,
                 stages=stages, k_fraction=args.k_fraction)
    runs = []
    for n in sizes:
        runs.append(run_size(args.out, n, args.dim, args.k, args.keep, stages=stages, k_fraction=args.k_fraction))
        if args.json:
            args.json.write_text(json.dumps({"dim": args.dim, "k": args.k, "runs": runs}, indent=1))
    print(report(runs, args.dim, args.k))
    if not args.keep:
        shutil.rmtree(args.out, ignore_errors=True)


if __name__ == "__main__":
    main()
