"""The sketch frontier on the real model: fidelity to exact influence vs bytes a row (issue 27).

    .venv/bin/python -m bench.real.sketch_frontier [--pool-rows 600] [--check-rows 16]
    .venv/bin/python -m bench.real.sketch_frontier --table          # from the saved results

For every pool and target row of the real corpus: the exact gradient of every trained parameter
(bs = 1, `ExactGradients`), exact LESS over all of them (the truth), and offline sketches through
the product's own projection code for every setting of the grid: Kronecker k² (k = 8, 12, 16, 32)
per linear, optionally re-projected by the product's SRHT (`sketch.reproject_dim`); the vector
block (norm weights) left out, exact, or projected to 1024 / 4096 / 8192 columns
(`sketch.vector_dim`, vectors.vector_project); rows stored as float32, float16 or int8 (the
store's unit rows, quantised as the store quantises them: `store/quantize.py`). Each setting's
LESS scores (cosine of the pool row to the mean unit target row, both as stored) are compared
with exact LESS: Spearman, top-5 % overlap. Bytes a row are the store's (sketch array + its
per-row scale and norm). A sketch is a linear map of the per-sample gradient, so the offline
sketch equals the sketcher's; `--check-rows` rows are run through the product's sketcher
(`make_sketcher`) for the candidate settings to show it (relative error) and to time them.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import REAL
from bench.real.common import agreement, load_inputs, product_check, stratified
from iprox_ray.influence.exact import ExactLess, trained_parameters
from iprox_ray.influence.less import target_direction
from iprox_ray.models.patterns import linear_dims, select_modules
from iprox_ray.sketch.dense_projection import DenseProjector
from iprox_ray.sketch.factory import REPROJECT_NAME
from iprox_ray.sketch.projection import projection_matrix
from iprox_ray.sketch.vectors import vector_params, vector_project, vector_record
from iprox_ray.spec import SketchSpec
from iprox_ray.spec.patterns import DEFAULT_LINEAR_PATTERNS, DEFAULT_VECTOR_PATTERNS
from iprox_ray.store.quantize import dequantize_rows, quantize_rows, row_bytes

KRON = (8, 12, 16, 32)
VECTORS = ("none", "exact", 1024, 4096, 8192)
REPROJECT = (0, 8192, 16384)
DTYPES = ("float32", "float16", "int8")


class FrontierSketches:
    """Every grid part of one exact flat gradient, by the product's projection code."""

    def __init__(self, model, grads, seed: int = 0):
        linear_modules = select_modules(model, DEFAULT_LINEAR_PATTERNS)
        self.linears = [(n, linear_dims(m)) for n, m in linear_modules]
        self.weight_spans = {n: grads.spans[f"{n}.weight"] for n, _ in self.linears}
        params = vector_params(model, DEFAULT_VECTOR_PATTERNS, linear_modules, True)
        self.vector_spans = [grads.spans[p.key] for p in params]
        self.records = {dim: vector_record(params, dim, seed) for dim in VECTORS if isinstance(dim, int)}
        self.proj = {k: {n: (projection_matrix(seed, n, "out", k, d_out), projection_matrix(seed, n, "in", k, d_in))
                         for n, (d_out, d_in) in self.linears} for k in KRON}
        self.reproject = {d: DenseProjector(seed, d, "srht") for d in REPROJECT if d}

    def __call__(self, flat: torch.Tensor) -> dict:
        out = {}
        for k in KRON:
            parts = [(p_out @ flat[self.weight_spans[n]].view(d_out, d_in) @ p_in.T).flatten()
                     for (n, (d_out, d_in)), (p_out, p_in) in zip(self.linears, self.proj[k].values())]
            block = torch.cat(parts)
            out[("kron", k, 0)] = block.numpy().copy()
            for d, projector in self.reproject.items():
                if d < block.numel():
                    out[("kron", k, d)] = projector.project(REPROJECT_NAME, block.unsqueeze(0))[0].numpy()
        values = [flat[s] for s in self.vector_spans]
        out[("vectors", "exact")] = torch.cat(values).numpy().copy()
        for dim, record in self.records.items():
            out[("vectors", dim)] = vector_project(values, record)
        return out


def settings(parts: dict) -> list[tuple]:
    """The grid's settings; a re-projection only where it is narrower than the block."""
    return [(k, vec, rep, dtype) for k, vec, rep, dtype in itertools.product(KRON, VECTORS, REPROJECT, DTYPES)
            if ("kron", k, rep) in parts]


def row_of(parts: dict, k: int, vec, rep: int) -> np.ndarray:
    pieces = [parts[("kron", k, rep)]]
    if vec != "none":
        pieces.append(parts[("vectors", vec)])
    return np.concatenate(pieces).astype(np.float32)


def stored(row: np.ndarray, dtype: str) -> np.ndarray:
    """The unit row as the store keeps it (and scoring reads it back)."""
    unit = row / max(float(np.linalg.norm(row)), 1e-30)
    return dequantize_rows(*quantize_rows(unit[None], dtype))[0]


def label(s) -> str:
    k, vec, rep, dtype = s
    v = "" if vec == "none" else f" + vectors {'exact' if vec == 'exact' else vec}"
    r = f" → SRHT {rep}" if rep else ""
    return f"Kronecker {k}²{r}{v}, {dtype}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=REAL / "SmolLM2-135M-Instruct-hf")
    ap.add_argument("--corpus", type=Path, default=REAL / "corpus")
    ap.add_argument("--pool-rows", type=int, default=600, help="pool rows read (the truth file covers these)")
    ap.add_argument("--rows", type=int, default=300, help="rows scored: the first rows/6 of each domain, the "
                                                         "rows bench/real/proxy.py and proxy_align.py score")
    ap.add_argument("--check-rows", type=int, default=16)
    ap.add_argument("--target-rows", type=int, default=None, help="first target rows used (default: all 40)")
    ap.add_argument("--out", type=Path, default=REAL / "frontier.json")
    ap.add_argument("--table", action="store_true")
    args = ap.parse_args()
    if not args.table:
        compute(args)
    print_table(json.loads(args.out.read_text()))


def compute(args) -> None:
    tokenizer, all_pool, domains, target, model, grads = load_inputs(args)
    chosen = stratified(np.asarray(domains), args.rows)
    pool = [all_pool[i] for i in chosen]
    target = target[: args.target_rows]
    offline = FrontierSketches(model, grads)
    less = ExactLess(grads, {"all": [n for n, _ in trained_parameters(model)]})
    grid, targets = None, {}
    start = time.perf_counter()
    for j, e in enumerate(target):
        g, _ = grads.row(e.input_ids, e.trainable)
        less.add_target(g)
        if j % 10 == 0:
            print(f"  target row {j}: {(time.perf_counter() - start) / (j + 1):.2f} s/row", flush=True)
        parts = offline(g)
        grid = grid or settings(parts)
        for s in grid:
            targets.setdefault(s, [])
            targets[s].append(stored(row_of(parts, *s[:3]), s[3]))
    direction = {s: target_direction(np.stack(rows)) for s, rows in targets.items()}
    del targets
    exact, scores, check = np.zeros(len(pool)), {s: np.zeros(len(pool)) for s in grid}, []
    losses = np.zeros(len(pool))
    for i, e in enumerate(pool):
        g, losses[i] = grads.row(e.input_ids, e.trainable)
        exact[i] = less.score_gradient(g)["all"]
        parts = offline(g)
        for s in grid:
            scores[s][i] = float(stored(row_of(parts, *s[:3]), s[3]) @ direction[s])
        if i < args.check_rows:
            check.append({key: value.copy() for key, value in parts.items()})
        if i % 10 == 0:
            print(f"  pool row {i}: {(time.perf_counter() - start) / (i + 1 + len(target)):.2f} s/row", flush=True)
    grads.release()
    if args.target_rows is None:
        save_truth(args, chosen, exact, losses, domains)
    results = {"pool_rows": len(pool), "target_rows": len(target), "rows": {}}
    for s in grid:
        k, vec, rep, dtype = s
        dim = len(row_of(check[0], k, vec, rep))
        results["rows"][label(s)] = {"k": k, "vectors": vec, "reproject": rep, "dtype": dtype, "dim": dim,
                                     "bytes": row_bytes(dim, dtype), **agreement(exact, scores[s])}
    results["checks"] = [product_check(model, spec_of(*c), pool[: args.check_rows],
                                       np.stack([row_of(p, *c) for p in check]), tokenizer.pad_token_id)
                         | {"setting": label((*c, "float32"))}
                         for c in candidates(results)]
    args.out.write_text(json.dumps(results, indent=1))


def save_truth(args, chosen: np.ndarray, exact: np.ndarray, losses: np.ndarray, domains: list) -> None:
    """Exact LESS (every trained parameter) of the scored rows, in the layout `fidelity.py
    --truth-only` writes (one entry per pool row, NaN where not computed) for the proxy benchmarks."""
    full, loss = np.full(len(domains), np.nan), np.full(len(domains), np.nan)
    full[chosen], loss[chosen] = exact, losses
    np.savez(REAL / "fidelity.exact.npz", domain=np.asarray(domains), loss=loss, exact_all=full, scored=chosen)


def candidates(results: dict) -> list[tuple]:
    """The settings timed through the product's sketcher: today's default and the float32 row of
    every (k, vectors, reproject) that reaches Spearman ≥ 0.9 within 64 KB in some dtype."""
    keep = {(16, "exact", 0)}
    for r in results["rows"].values():
        if r["spearman"] >= 0.9 and r["bytes"] <= 65536:
            keep.add((r["k"], r["vectors"], r["reproject"]))
    return sorted(keep, key=str)


def spec_of(k: int, vec, rep: int) -> SketchSpec:
    fields = {"proj_in": k, "proj_out": k, "reproject_dim": rep}
    if vec == "none":
        fields.update(vectors=[], biases=False)
    else:
        fields["vector_dim"] = 0 if vec == "exact" else vec
    return SketchSpec(**fields)


def print_table(r: dict) -> None:
    print(f"{r['pool_rows']} pool rows x {r['target_rows']} target rows; "
          "truth: exact LESS over every trained parameter")
    print("| setting | D | bytes/row | Spearman | top-5 % | meets (≥ 0.9, ≥ 0.7) |")
    print("|---|---|---|---|---|---|")
    rows = sorted(r["rows"].items(), key=lambda kv: (kv[1]["bytes"], -kv[1]["spearman"]))
    for name, x in rows:
        ok = "yes" if x["spearman"] >= 0.9 and x["top5"] >= 0.7 else ""
        print(f"| {name} | {x['dim']:,} | {x['bytes']:,} | {x['spearman']:.3f} | {x['top5']:.2f} | {ok} |")
    best = next((n for n, x in rows if x["spearman"] >= 0.9 and x["top5"] >= 0.7), None)
    print(f"\ncheapest row meeting the bar: {best}")
    if r.get("checks"):
        print("\n| setting (product sketcher) | D | tokens/s | rel. error vs offline |")
        print("|---|---|---|---|")
        for c in r["checks"]:
            print(f"| {c['setting']} | {c['dim']:,} | {c['tokens_per_s']:.0f} | {c['rel_error_vs_offline']:.1e} |")


if __name__ == "__main__":
    main()
