"""Influence Distillation on the real model: how well landmark propagation tracks exact scores.

    .venv/bin/python -m bench.real.fidelity --truth-only     # exact influence + near-exact sketches
    .venv/bin/python -m bench.real.id_embed                   # JVP tangents, every depth / readout
    .venv/bin/python -m bench.real.id [--sweep all] [--seeds 5]

ID's own exact first-order score of a row (Q2's reference) is p = ⟨unit g̃(z), mean_j unit g̃(z'_j)⟩
with g̃ the near-exact sketch of the truth run (SRHT 32768 of every linear + exact norm
gradients; the product's `sketch.kind = "srht"`, dim 32768, writes the same). Everything after
the tangents is the product's code: its JVP projection matrix, `landmarks.choose`, `krr.fit` /
`predict`. Each setting is averaged over `--seeds` landmark draws (and tangent projections).
Reported per setting: Spearman of the propagated scores against p and against exact influence
(held-out rows: not landmarks), share of p's top 5 % recovered, the target domain's share of the
selected top 5 %, and the embedding's 10-nearest-neighbour overlap with the gradients' own.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from bench.common import REAL
from iprox_ray.influence import krr, landmarks
from iprox_ray.influence.agreement import spearman, top_overlap
from iprox_ray.influence.less import unit_rows
from iprox_ray.sketch.projection import projection_matrix

OUT = REAL / "id"
TARGET_DOMAIN = "python_docs"


@dataclass(frozen=True)
class Setting:
    depth: int = 4
    readout: str = "last"
    tangents: int = 2
    normalize: str = "none"  # none | tangent (each tangent's output unit L2) | row
    dim: int = 4096
    fraction: float = 0.10
    choice: str = "uniform"
    kernel: str = "rbf"
    bandwidth: float = 1.0
    ridge: float = 0.01
    center: int = 0

    def label(self, base: "Setting") -> str:
        diff = [f"{k}={v}" for k, v in self.__dict__.items() if getattr(base, k) != v]
        return ", ".join(diff) or "official defaults"


class Bench:
    def __init__(self, truth: dict, tangents: dict, features: dict | None = None):
        """features: {pool, target} sketch rows for p (default: the truth run's near-exact ones)."""
        self.domain = truth["domain"]
        self.exact = truth["exact_all"]
        features = features or {"pool": truth["near_exact_pool"], "target": truth["near_exact_target"]}
        units = unit_rows(features["pool"])
        direction = unit_rows(features["target"]).mean(0)
        self.p = units @ direction  # ID's own exact first-order score
        self.units = units
        self.tangents = tangents
        self.n = len(self.p)
        self.top = max(1, round(0.05 * self.n))
        self.grad_nn = neighbours(units @ units.T)

    def embeddings(self, s: Setting, seed: int) -> np.ndarray:
        t = self.tangents[f"d{s.depth}:{s.readout}"][:, : s.tangents].astype(np.float64)
        if s.normalize == "tangent":
            t = t / np.linalg.norm(t, axis=2, keepdims=True)
        flat = t.reshape(self.n, -1)
        if s.normalize == "row":
            flat = flat / np.linalg.norm(flat, axis=1, keepdims=True)
        proj = projection_matrix(seed, "jvp-embedding", "out", s.dim, flat.shape[1]).numpy().astype(np.float64)
        return (flat @ proj.T).astype(np.float32)

    def propagate(self, s: Setting, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(propagated scores of every row, landmark rows, embeddings) for one seed."""
        emb = self.embeddings(s, seed)
        count = max(2, round(s.fraction * self.n))
        chosen = landmarks.choose(s.choice, np.arange(self.n), count, seed, 65536, lambda r: emb[r])
        model = krr.fit(emb[chosen], self.p[chosen], s.kernel, s.ridge, 1000, seed, s.bandwidth, bool(s.center))
        return model.predict(emb)[:, 0].astype(np.float64), chosen, emb

    def run(self, s: Setting, seed: int) -> dict:
        pred, chosen, emb = self.propagate(s, seed)
        held = np.setdiff1d(np.arange(self.n), chosen)
        top = np.argsort(-pred, kind="stable")[: self.top]
        return {"q2": spearman(self.p[held], pred[held]), "vs_exact": spearman(self.exact[held], pred[held]),
                "top5_of_p": top_overlap(self.p, pred, 0.05)[0],
                "top5_of_exact": top_overlap(self.exact, pred, 0.05)[0],
                "domain": float(np.mean(self.domain[top] == TARGET_DOMAIN)),
                "nn10": nn_overlap(self.grad_nn, neighbours(unit_rows(emb) @ unit_rows(emb).T))}

    def summary(self, s: Setting, seeds: int) -> dict:
        runs = [self.run(s, seed) for seed in range(seeds)]
        return {k: (float(np.mean([r[k] for r in runs])), float(np.std([r[k] for r in runs]))) for k in runs[0]}

    def reference(self) -> dict:
        """p itself as the scores (what LESS on the same sketch selects), and a random embedding."""
        top = np.argsort(-self.p, kind="stable")[: self.top]
        return {"p_vs_exact": spearman(self.exact, self.p), "p_top5_of_exact": top_overlap(self.exact, self.p, 0.05)[0],
                "p_domain": float(np.mean(self.domain[top] == TARGET_DOMAIN)), "grad_nn_domain_purity": purity(
                    self.grad_nn, self.domain)}


def selections(bench: Bench, named: dict[str, Setting], less: np.ndarray | None) -> dict[str, list[int]]:
    """Top-5 % row lists: exact influence, ID's exact p, LESS on the default sketch, random, and
    each named ID setting (landmark seed 0) -- for id_finetune.py."""
    def top(x):
        return np.lexsort((np.arange(len(x)), -x))[: bench.top].tolist()
    out = {"exact influence": top(bench.exact)}
    if less is not None:
        out["LESS (default sketch)"] = top(less)
    if less is None or not np.allclose(less, bench.p):  # p is LESS's score when both use one sketch
        out["ID exact p"] = top(bench.p)
    for seed in range(3):
        out[f"random {seed}"] = np.sort(np.random.default_rng(seed).choice(bench.n, bench.top, replace=False)).tolist()
    for name, s in named.items():
        out[name] = top(bench.propagate(s, 0)[0])
    return out


def less_default() -> np.ndarray | None:
    path = OUT / "sketch-default.npz"
    if not path.exists():
        return None
    f = np.load(path)
    return unit_rows(f["pool"]) @ unit_rows(f["target"]).mean(0)


def neighbours(sim: np.ndarray, k: int = 10) -> np.ndarray:
    sim = sim.copy()
    np.fill_diagonal(sim, -np.inf)
    return np.argsort(-sim, axis=1, kind="stable")[:, :k]


def nn_overlap(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([len(np.intersect1d(x, y)) / a.shape[1] for x, y in zip(a, b)]))


def purity(nn: np.ndarray, domain: np.ndarray) -> float:
    return float(np.mean(domain[nn] == domain[:, None]))


def sweeps(base: Setting, depths: list[int], max_tangents: int) -> dict[str, list[Setting]]:
    return {
        "readout": [replace(base, readout=r, normalize=n) for r in ("last", "last+norm", "mean", "mean+norm")
                    for n in ("none", "tangent")],
        "depth": [replace(base, depth=d) for d in depths],
        "tangents": [replace(base, tangents=t) for t in range(1, max_tangents + 1)],
        "landmarks": [replace(base, fraction=f, choice=c) for f in (0.02, 0.05, 0.10, 0.20)
                      for c in ("uniform", "kmeans++", "farthest-point")],
        "kernel": [replace(base, kernel="linear")] + [replace(base, bandwidth=b) for b in (0.25, 0.5, 1.0, 2.0, 4.0)],
        "ridge": [replace(base, ridge=r) for r in (1e-4, 1e-3, 1e-2, 1e-1, 1.0)],
        "center": [replace(base, center=c) for c in (0, 1)],
    }


def parse_setting(text: str) -> Setting:
    """`depth=8,readout=mean+norm` -> Setting (the base every sweep varies)."""
    fields = {}
    for part in filter(None, text.split(",")):
        k, v = part.split("=")
        default = getattr(Setting(), k)
        fields[k] = type(default)(v)
    return Setting(**fields)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tangents-file", type=Path, default=OUT / "tangents-T2-s0.npz")
    ap.add_argument("--base", default="", help="the setting each sweep varies, e.g. depth=8,readout=mean+norm")
    ap.add_argument("--sweep", default="all")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--features", choices=["near-exact", "default"], default="near-exact",
                    help="p from the truth run's near-exact sketches, or from the product's default sketch "
                         "(id_sketch.py)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--selections", action="store_true", help="write selections.json (named settings) and stop")
    args = ap.parse_args()
    truth = dict(np.load(REAL / "fidelity.exact.npz"))
    tangents = dict(np.load(args.tangents_file))
    features = dict(np.load(OUT / "sketch-default.npz")) if args.features == "default" else None
    bench = Bench(truth, tangents, features)
    ref = bench.reference()
    less = less_default()
    if less is not None:
        top = np.lexsort((np.arange(bench.n), -less))[: bench.top]
        ref.update(less_default_vs_exact=spearman(bench.exact, less), less_default_vs_p=spearman(bench.p, less),
                   less_default_top5_of_exact=top_overlap(bench.exact, less, 0.05)[0],
                   less_default_domain=float(np.mean(bench.domain[top] == TARGET_DOMAIN)))
    print(json.dumps(ref))
    if args.selections:
        named = {"ID official defaults": Setting(), "ID new defaults": parse_setting(args.base)}
        (OUT / "selections.json").write_text(json.dumps(selections(bench, named, less), indent=1))
        return
    base = parse_setting(args.base)
    depths = [int(d) for d in tangents["depths"]]
    chosen = sweeps(base, depths, tangents[f"d{depths[0]}:last"].shape[1])
    names = list(chosen) if args.sweep == "all" else args.sweep.split(",")
    args.out = args.out or OUT / f"results-{args.features}.json"
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    print("| sweep | setting | Q2 Spearman vs ID exact | vs exact influence | top-5 % of p | top-5 % of exact "
          "| target domain in top 5 % | 10-NN overlap |")
    print("|---|---|---|---|---|---|---|---|")
    for name in names:
        for s in chosen[name]:
            r = bench.summary(s, args.seeds)
            results[json.dumps(s.__dict__, sort_keys=True)] = r
            cells = " | ".join(f"{r[k][0]:.3f} ± {r[k][1]:.3f}" for k in r)
            print(f"| {name} | {s.label(Setting())} | {cells} |", flush=True)
    args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
