"""Stage: outputs. Quarantine roll-up, score plot, per-domain shares, the run summary."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from iprox_ray.corpus.shard_reader import QUARANTINE_SCHEMA
from iprox_ray.diagnostics.proxy_verdict import decision_line
from iprox_ray.execution.context import RunContext
from iprox_ray.methods.scorers import holdout_line
from iprox_ray.stages.preflight import reason_counts
from iprox_ray.store.atomic import atomic_parquet_writer, atomic_write_json, read_json
from iprox_ray.store.batched_reads import rows_with_status, shard_batches
from iprox_ray.store.digest import read_checked
from iprox_ray.store.layout import PROXY_CHOICE_STAGE
from iprox_ray.store.sketch_store import CANDIDATES, NONFINITE, SplitStore, open_root

QUARANTINE_GROUP_ROWS = 1 << 16  # records per row group of quarantine.parquet


def merge_quarantine(ctx: RunContext) -> Counter:
    """quarantine.parquet from every split's quarantine files, one file at a time; returns the
    quarantined rows per (split, reason), counted by Arrow (no Python object per record)."""
    folder = ctx.layout.quarantine_root
    counts: Counter = Counter()
    pending: list[pa.Table] = []
    rows = 0
    with atomic_parquet_writer(ctx.layout.quarantine_all, QUARANTINE_SCHEMA) as writer:
        for path in sorted(folder.rglob("*.parquet")) if folder.exists() else []:
            pending.append(pq.read_table(path).cast(QUARANTINE_SCHEMA))
            rows += pending[-1].num_rows
            if rows >= QUARANTINE_GROUP_ROWS:
                _write_counted(writer, pending, counts)
                rows = 0
        _write_counted(writer, pending, counts)
    return counts


def _write_counted(writer, pending: list[pa.Table], counts: Counter) -> None:
    """One row group of the pending shard files' records (a row group per shard file would grow
    the file's footer, held in memory until it closes, with the pool's shard count); counts them."""
    if not pending:
        return
    table = pa.concat_tables(pending)
    pending.clear()
    writer.write_table(table)
    pairs = table.group_by(["split", "reason"]).aggregate([([], "count_all")])
    counts.update(dict(zip(zip(pairs.column("split").to_pylist(), pairs.column("reason").to_pylist()),
                           pairs.column("count_all").to_pylist())))


def domain_shares_from_counts(counts: Counter | dict[str, int]) -> dict[str, float]:
    """Share of each domain label (sorted), from row counts."""
    total = sum(counts.values()) or 1
    return {k: counts[k] / total for k in sorted(counts) if counts[k]}


def domain_shares(labels: list[str] | np.ndarray) -> dict[str, float]:
    return domain_shares_from_counts(Counter(str(x) or "(none)" for x in labels))


def column_domain_shares(column) -> dict[str, float]:
    """domain_shares of an Arrow text column, counted by Arrow."""
    counts: Counter = Counter()
    for label, n in reason_counts(column).items():
        counts[str(label or "") or "(none)"] += n
    return domain_shares_from_counts(counts)


def pool_domain_counts(pool: SplitStore) -> Counter:
    """Candidate pool rows per domain label ("(none)" for an empty one), counted a batch of whole
    shards at a time: memory is one batch plus one entry per distinct domain."""
    counts: Counter = Counter()
    for span in shard_batches(pool):
        ok = np.isin(pool.read("written", span), CANDIDATES)
        if ok.any():
            labels, n = np.unique(pool.read("domain", span)[ok], return_counts=True)
            for label, count in zip(labels.tolist(), n.tolist()):
                counts[str(label) or "(none)"] += count
    return counts


def score_histogram(ctx: RunContext, scores_name: str, cutoff: float | None, out: Path, bins: int = 80,
                    selection: pa.Table | None = None) -> None:
    """Pool score distribution (selected rows overlaid, the cut-off marked); with non-uniform
    weights a second panel shows each selected row's weight against its score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arr = open_root(ctx.layout.store)[scores_name]
    S = arr.chunks[0]
    lo, hi = np.inf, -np.inf
    for start in range(0, arr.shape[0], S):  # pass 1: range; pass 2: counts (memory O(chunk))
        v = read_checked(arr, slice(start, start + S))
        v = v[np.isfinite(v)]
        if v.size:
            lo, hi = min(lo, float(v.min())), max(hi, float(v.max()))
    if not np.isfinite(lo):
        return
    edges = np.linspace(lo, hi if hi > lo else lo + 1e-6, bins + 1)
    counts = np.zeros(bins, dtype=np.int64)
    for start in range(0, arr.shape[0], S):
        v = read_checked(arr, slice(start, start + S))
        counts += np.histogram(v[np.isfinite(v)], bins=edges)[0]
    weights = selection.column("weight").to_numpy() if selection is not None and selection.num_rows else None
    weighted = weights is not None and np.ptp(weights) > 1e-12 * max(1.0, float(np.abs(weights).max()))
    fig, axes = plt.subplots(1, 2 if weighted else 1, figsize=(12 if weighted else 7, 3.5), squeeze=False)
    ax = axes[0, 0]
    ax.stairs(counts, edges, fill=True, alpha=0.6, label="pool")
    if selection is not None and selection.num_rows:
        chosen = selection.column("score").to_numpy()
        ax.stairs(np.histogram(chosen[np.isfinite(chosen)], bins=edges)[0], edges, fill=True, alpha=0.6,
                  color="darkorange", label=f"selected ({selection.num_rows})")
    if cutoff is not None:
        ax.axvline(cutoff, color="crimson", linestyle="--", label=f"selection cut-off {cutoff:.4f}")
    ax.legend()
    ax.set_xlabel(f"score ({arr.attrs.get('method', '')})")
    ax.set_ylabel("pool rows")
    ax.set_title("Score distribution")
    if weighted:
        wx = axes[0, 1]
        wx.scatter(selection.column("score").to_numpy(), weights, s=6)
        wx.set_xlabel("score")
        wx.set_ylabel("weight (λ-bisection, sums to N)")
        wx.set_title(f"Weights of the {selection.num_rows} selected rows")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def build_summary(ctx: RunContext, target_name: str, selection_info: dict, manifests: dict,
                  out: Path | None = None, extra: dict | None = None) -> dict:
    reasons = merge_quarantine(ctx)
    pool = SplitStore.open(ctx.layout.store, "pool")
    selection = pq.read_table(selection_info["selection"], columns=["domain"])
    summary = {
        "run_dir": str(ctx.layout.root),
        "config_fingerprint": ctx.job.fingerprint(),
        "rows_read": {split: m.n_rows for split, m in manifests.items()},
        "rows_quarantined": {split: sum(n for (s, _), n in reasons.items() if s == split) for split in manifests},
        "quarantine_reasons": {f"{s}:{r}": n for (s, r), n in sorted(reasons.items())},
        "rows_nonfinite": {split: rows_with_status(SplitStore.open(ctx.layout.store, split), NONFINITE)
                           for split in manifests},
        "valid_pool_rows": selection_info["valid_rows"],
        "selected": selection.num_rows,
        "non_finite_scores": selection_info["non_finite_scores"],
        "target": target_name,
        "method": ctx.job.scoring.method,
        "strategy": selection_info.get("strategy", "topk"),
        "domain_share_pool": domain_shares_from_counts(pool_domain_counts(pool)),
        "domain_share_selection": column_domain_shares(selection.column("domain")),
        "stage_seconds": {k: round(v, 2) for k, v in ctx.timings.items()},
        "selection": selection_info["selection"],
        **proxy_choice(ctx),
        **(extra or {}),
    }
    atomic_write_json(out or ctx.layout.summary, summary)
    return summary


def proxy_choice(ctx: RunContext) -> dict:
    """proxy.method = 'auto': which model sketched and why (the proxy-choice stage record)."""
    path = ctx.layout.stage_done(PROXY_CHOICE_STAGE)
    if not path.exists():
        return {}
    record = read_json(path)
    return {"proxy_choice": {k: v for k, v in record.items() if k not in ("stage", "finished_at", "outputs")}}


def format_summary(summary: dict) -> str:
    lines = [f"run: {summary['run_dir']}"]
    for split, n in summary["rows_read"].items():
        bad = summary.get("rows_nonfinite", {}).get(split)
        nonfinite = f", {bad} non-finite under the model (never selected)" if bad else ""
        lines.append(f"  {split}: {n} rows read, {summary['rows_quarantined'][split]} quarantined{nonfinite}")
    for key, n in summary["quarantine_reasons"].items():
        lines.append(f"    {key}: {n}")
    lines.append(f"  selected {summary['selected']} of {summary['valid_pool_rows']} valid pool rows"
                 f" ({summary.get('method', '?')}, {summary.get('strategy', 'topk')}) -> {summary['selection']}")
    if summary["non_finite_scores"]:
        lines.append(f"  {summary['non_finite_scores']} valid pool rows had a non-finite score (never selected)")
    lines.append("  domain share     pool  selection")
    pool, sel = summary["domain_share_pool"], summary["domain_share_selection"]
    for domain in sorted(set(pool) | set(sel)):
        lines.append(f"    {domain:<14}{pool.get(domain, 0):6.1%}  {sel.get(domain, 0):8.1%}")
    if summary.get("landmark_holdout"):
        lines.append("  " + holdout_line(summary["landmark_holdout"]))
    fid = summary.get("landmark_fidelity")
    if fid:
        lines.append("  landmark propagation vs exact scores "
                     f"({fid['rows']} held-out rows, {fid['landmarks']} landmarks): "
                     f"pearson {fid['propagated']['pearson']:.3f}, spearman {fid['propagated']['spearman']:.3f}; "
                     f"random-embedding control {fid['random_embedding_control']['pearson']:.3f}")
    if summary.get("proxy_choice"):
        lines.append("  " + decision_line(summary["proxy_choice"]))
    budget = summary.get("sketch_token_budget")
    if budget and budget.get("tokens"):
        lines.append(f"  sketch token budget: {budget['tokens']}" + (" (auto)" if budget.get("auto") else ""))
    lines.append("  stage seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in summary["stage_seconds"].items()))
    return "\n".join(lines)
