"""Real-model fidelity: the product's LESS scores against exact influence (bs = 1, no projection).

    .venv/bin/python -m bench.real.model && .venv/bin/python -m bench.real.corpus   # once
    .venv/bin/python -m bench.real.fidelity [--pool-rows 600] [--check-rows 24]

Ground truth: exact per-example gradients of every trained parameter (token embedding / tied LM
head aside) for every pool and target row; exact LESS = cosine to the mean unit target gradient,
over all trained parameters ("all") and over the linears the old default sketched ("linears").

Sketch settings are scored from the same exact gradients, projected by the product's own
projection code (Kronecker P_out G P_inᵀ from `projection_matrix`, dense SRHT from
`DenseProjector`): a sketch is a linear map of the per-sample gradient, so this equals what the
sketch stage writes — and the benchmark checks that on `--check-rows` rows by running the product's
sketcher (`make_sketcher`), which also gives each setting's sketch tokens/s.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import REAL
from bench.real.common import agreement, load_inputs, product_check
from iprox_ray.influence.exact import ExactGradients, ExactLess, trained_parameters
from iprox_ray.influence.less import cosine_scores, target_direction
from iprox_ray.models.patterns import linear_dims, select_modules
from iprox_ray.sketch.dense_projection import DenseProjector
from iprox_ray.sketch.projection import projection_matrix
from iprox_ray.sketch.vectors import vector_params
from iprox_ray.spec import SketchSpec
from iprox_ray.spec.patterns import DEFAULT_LINEAR_PATTERNS, DEFAULT_VECTOR_PATTERNS

KRON = (16, 32, 64)
SRHT = (8192, 32768)
VECTOR_DIM = 4096  # the projected vector block variant
VECTOR_MODES = ("none", "exact", f"srht{VECTOR_DIM}")


class OfflineSketches:
    """Every setting's sketch of one exact flat gradient, by the product's projection code."""

    def __init__(self, model, grads: ExactGradients, seed: int = 0):
        linear_modules = select_modules(model, DEFAULT_LINEAR_PATTERNS)
        self.linears = [(n, linear_dims(m)) for n, m in linear_modules]
        vectors = vector_params(model, DEFAULT_VECTOR_PATTERNS, linear_modules, True)
        self.vector_keys = [p.key for p in vectors]
        self.vector_spans = [grads.spans[key] for key in self.vector_keys]
        self.weight_spans = {n: grads.spans[f"{n}.weight"] for n, _ in self.linears}
        self.proj = {k: {n: (projection_matrix(seed, n, "out", k, d_out), projection_matrix(seed, n, "in", k, d_in))
                         for n, (d_out, d_in) in self.linears} for k in KRON}
        self.srht = {d: DenseProjector(seed, d, "srht") for d in SRHT}
        self.vector_projector = DenseProjector(seed, VECTOR_DIM, "srht")

    def __call__(self, flat: torch.Tensor) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        vectors = torch.cat([flat[s] for s in self.vector_spans]).numpy().copy()
        for k in KRON:
            parts = []
            for n, (d_out, d_in) in self.linears:
                p_out, p_in = self.proj[k][n]
                parts.append((p_out @ flat[self.weight_spans[n]].view(d_out, d_in) @ p_in.T).flatten())
            out[f"kron{k}"] = torch.cat(parts).numpy()
        for d, projector in self.srht.items():
            total = torch.zeros(1, d)
            for n, _ in self.linears:
                total += projector.project(n, flat[self.weight_spans[n]].unsqueeze(0))
            out[f"srht{d}"] = total[0].numpy()
        out["vectors:exact"] = vectors
        if vectors.size <= VECTOR_DIM:  # as the product does: a block this small stays exact
            out[f"vectors:srht{VECTOR_DIM}"] = vectors
            return out
        projected = torch.zeros(1, VECTOR_DIM)
        for key, span in zip(self.vector_keys, self.vector_spans):
            projected += self.vector_projector.project(key, flat[span].unsqueeze(0))
        out[f"vectors:srht{VECTOR_DIM}"] = projected[0].numpy()
        return out


def settings() -> dict[str, SketchSpec]:
    """Each sketch setting as the product's spec (vectors exact beside the linears, or left out)."""
    out = {}
    for k in KRON:
        out[f"kron{k}"] = SketchSpec(kind="kronecker", proj_in=k, proj_out=k)
    for d in SRHT:
        out[f"srht{d}"] = SketchSpec(kind="srht", dim=d)
    return out


def with_vectors(sketch: dict[str, np.ndarray], name: str, mode: str) -> np.ndarray:
    return sketch[name] if mode == "none" else np.concatenate([sketch[name], sketch[f"vectors:{mode}"]])


def spec_for(spec: SketchSpec, mode: str) -> SketchSpec:
    if mode == "none":
        return spec.model_copy(update={"vectors": [], "biases": False})
    return spec.model_copy(update={"vector_dim": 0 if mode == "exact" else VECTOR_DIM})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=REAL / "SmolLM2-135M-Instruct-hf")
    ap.add_argument("--corpus", type=Path, default=REAL / "corpus")
    ap.add_argument("--pool-rows", type=int, default=600)
    ap.add_argument("--check-rows", type=int, default=24, help="rows run through the product's sketcher per setting")
    ap.add_argument("--out", type=Path, default=REAL / "fidelity.json")
    ap.add_argument("--truth-only", action="store_true",
                    help="only the exact scores (and SRHT 32768 + exact-norm sketches) per row, saved to the .npz")
    args = ap.parse_args()
    if args.truth_only:
        return truth_only(args)
    tokenizer, pool, domains, target, model, grads = load_inputs(args)
    offline = OfflineSketches(model, grads)
    names = [n for n, _ in trained_parameters(model)]
    less = ExactLess(grads, {"all": names, "linears": [f"{n}.weight" for n, _ in offline.linears]})
    print(f"trained parameters {grads.size:,}; linears {sum(s.stop - s.start for s in less.spans['linears']):,}")

    start = time.perf_counter()
    target_sketches = []
    for e in target:
        g, _ = grads.row(e.input_ids, e.trainable)
        less.add_target(g)
        target_sketches.append(offline(g))
    target_seconds = time.perf_counter() - start
    variants = [(name, mode) for name in settings() for mode in VECTOR_MODES]
    sketch_direction = {(n, v): target_direction(np.stack([with_vectors(t, n, v) for t in target_sketches]))
                        for n, v in variants}
    exact = {k: np.zeros(len(pool)) for k in less.spans}
    scores = {nv: np.zeros(len(pool)) for nv in variants}
    losses = np.zeros(len(pool))
    check_rows = []
    start = time.perf_counter()
    for i, e in enumerate(pool):
        g, losses[i] = grads.row(e.input_ids, e.trainable)
        for k, value in less.score_gradient(g).items():
            exact[k][i] = value
        sk = offline(g)
        for nv in variants:
            scores[nv][i] = cosine_scores(with_vectors(sk, *nv)[None], sketch_direction[nv])[0]
        if i < args.check_rows:
            check_rows.append(sk)
        if i % 50 == 0:
            print(f"  pool row {i}: {(time.perf_counter() - start) / (i + 1):.2f} s/row", flush=True)
    pool_seconds = time.perf_counter() - start

    results = {"pool_rows": len(pool), "target_rows": len(target), "exact_seconds_per_row": pool_seconds / len(pool),
               "target_seconds": target_seconds, "exact_all_vs_linears": agreement(exact["all"], exact["linears"]),
               "settings": {}}
    grads.release()
    for name, spec in settings().items():
        for vec in VECTOR_MODES:
            label = name if vec == "none" else f"{name}+vectors:{vec}"
            check = None
            if vec == "exact" or name == "kron16":  # every setting's cost, and all three for kron16
                want = np.stack([with_vectors(r, name, vec) for r in check_rows])
                check = product_check(model, spec_for(spec, vec), pool[: args.check_rows], want, tokenizer.pad_token_id)
                print(json.dumps({label: check}), flush=True)
            results["settings"][label] = {
                "dim": int(with_vectors(check_rows[0], name, vec).size),
                "vs_all": agreement(exact["all"], scores[(name, vec)]),
                "vs_linears": agreement(exact["linears"], scores[(name, vec)]),
                "product_check": check,
            }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    # The ground truth, row by row, for other benchmarks (proxies) to score against.
    np.savez(args.out.with_suffix(".exact.npz"), domain=np.asarray(domains), loss=losses,
             **{f"exact_{k}": v for k, v in exact.items()})
    print_table(results)


def truth_only(args) -> None:
    """Exact LESS scores per pool row, plus each row's near-exact sketch (SRHT 32768 + exact norms,
    Spearman 0.999 vs exact) so later benchmarks can compare gradients without recomputing them."""
    _, pool, domains, target, model, grads = load_inputs(args)
    linears = select_modules(model, DEFAULT_LINEAR_PATTERNS)
    vector_keys = [p.key for p in vector_params(model, DEFAULT_VECTOR_PATTERNS, linears, True)]
    weight_spans = {n: grads.spans[f"{n}.weight"] for n, _ in linears}
    projector = DenseProjector(0, SRHT[-1], "srht")

    def near_exact(flat: torch.Tensor) -> np.ndarray:
        total = torch.zeros(1, SRHT[-1])
        for n, span in weight_spans.items():
            total += projector.project(n, flat[span].unsqueeze(0))
        return np.concatenate([total[0].numpy(), torch.cat([flat[grads.spans[k]] for k in vector_keys]).numpy()])

    names = [n for n, _ in trained_parameters(model)]
    less = ExactLess(grads, {"all": names, "linears": [f"{n}.weight" for n in weight_spans]})
    target_sketch = []
    for e in target:
        g, _ = grads.row(e.input_ids, e.trainable)
        less.add_target(g)
        target_sketch.append(near_exact(g))
    exact = {k: np.zeros(len(pool)) for k in less.spans}
    losses, pool_sketch = np.zeros(len(pool)), []
    start = time.perf_counter()
    for i, e in enumerate(pool):
        g, losses[i] = grads.row(e.input_ids, e.trainable)
        for k, value in less.score_gradient(g).items():
            exact[k][i] = value
        pool_sketch.append(near_exact(g).astype(np.float32))
        if i % 50 == 0:
            print(f"  pool row {i}: {(time.perf_counter() - start) / (i + 1):.2f} s/row", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out.with_suffix(".exact.npz"), domain=np.asarray(domains), loss=losses,
             near_exact_pool=np.stack(pool_sketch), near_exact_target=np.stack(target_sketch).astype(np.float32),
             **{f"exact_{k}": v for k, v in exact.items()})
    print(f"wrote {args.out.with_suffix('.exact.npz')} ({len(pool)} rows, "
          f"{(time.perf_counter() - start) / len(pool):.2f} s/row)")


def print_table(r: dict) -> None:
    print(f"\n{r['pool_rows']} pool rows x {r['target_rows']} target rows; exact all vs linears: "
          f"Spearman {r['exact_all_vs_linears']['spearman']:.3f}")
    print("| setting | D | vs exact (all): Spearman / Kendall / top-5 % | vs exact (linears) | sketch tokens/s |")
    print("|---|---|---|---|---|")
    for label, s in r["settings"].items():
        a, b, c = s["vs_all"], s["vs_linears"], s["product_check"]
        tps = f"{c['tokens_per_s']:.0f} (check err {c['rel_error_vs_offline']:.1e})" if c else "not run"
        print(f"| {label} | {s['dim']:,} | {a['spearman']:.3f} / {a['kendall']:.3f} / {a['top5']:.2f} | "
              f"{b['spearman']:.3f} / {b['kendall']:.3f} / {b['top5']:.2f} | {tps} |")


if __name__ == "__main__":
    main()
