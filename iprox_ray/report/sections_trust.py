"""The report's trust section: proxy fidelity (proxy vs target vs exact influence, verdict,
scatter), the landmark hold-out of Influence Distillation, non-finite counts."""

from __future__ import annotations

import numpy as np

from iprox_ray.diagnostics.landmark_section import format_landmark_section
from iprox_ray.methods.scorers import holdout_line
from iprox_ray.report.gather import ReportData
from iprox_ray.report.html import esc, kv_table, missing, num, png_data_uri, section, table
from iprox_ray.report.run_files import split_label
from iprox_ray.report.svg import PALETTE, scatter
from iprox_ray.store.sketch_store import NONFINITE


def _ratio(a, b) -> str:
    return f"{a / b:.2f}×" if a and b else "–"


def _scatters(r: dict) -> str:
    """Proxy vs target on every probe row; both sketches vs exact influence on the exact rows."""
    points = r.get("points")
    if not points:
        return ""
    as_array = lambda v: np.array([np.nan if x is None else x for x in v], dtype=np.float64)  # noqa: E731
    target, proxy = as_array(points["target"]), as_array(points["proxy"])
    out = scatter([("probe rows", target, proxy, PALETTE[0])], "influence on the target model (cosine)",
                  "influence on the proxy (cosine)")
    exact = as_array((r.get("exact") or {}).get("scores") or [])
    if len(exact):
        n = len(exact)
        out += scatter([("target sketch", exact, target[:n], PALETTE[0]), ("proxy", exact, proxy[:n], PALETTE[1])],
                       "exact influence (bs = 1, every trained parameter)", "sketched influence (cosine)")
    return out


def fidelity_block(data: ReportData) -> str:
    r = data.run.fidelity
    if r is None:
        method = data.run.spec.get("proxy", {}).get("method")
        why = ("proxy.method = 'none': the run sketches the target model itself" if method == "none"
               else "fidelity.enabled = false (run `iprox-ray fidelity JOB.toml` to check the proxy)")
        return f"<h3>Proxy fidelity</h3><p class=\"note\">No fidelity report: {esc(why)}.</p>"
    p, f, t = r.get("parameters", {}), r.get("forward_flops_per_token", {}), r.get("sketch_tokens_per_s", {})
    verdict = r.get("verdict", "")
    pairs = [
        ("proxy", f"{esc(r['proxy'].get('method'))} ρ={esc(r['proxy'].get('rho'))}"),
        ("probe rows", f"{num(r.get('pool_rows'))} pool × {num(r.get('target_rows'))} target"),
        ("proxy vs target sketch", f"Spearman {num(r.get('spearman'), 3)}, Kendall {num(r.get('kendall'), 3)}, "
                                   f"top-{r.get('top_fraction', 0):.0%} overlap {num(r.get('top_overlap'), 3)} "
                                   f"({num(r.get('top_hits'))}/{num(r.get('top_k'))})"),
    ]
    exact = r.get("exact")
    if exact:
        pairs += [(f"vs exact influence ({exact['rows']} rows)",
                   f"target sketch Spearman {num(exact['target_sketch']['spearman'], 3)} (top overlap "
                   f"{num(exact['target_sketch']['top_overlap'], 2)}); "
                   f"proxy Spearman {num(exact['proxy']['spearman'], 3)} "
                   f"(top overlap {num(exact['proxy']['top_overlap'], 2)})")]
    pairs += [("parameters", f"{num(p.get('proxy'))} / {num(p.get('target'))} "
                             f"({_ratio(p.get('proxy'), p.get('target'))})"),
              ("forward FLOPs per token", _ratio(f.get("proxy"), f.get("target"))),
              ("sketch throughput", f"{num(t.get('proxy'))} vs {num(t.get('target'))} tokens/s "
                                    f"({_ratio(t.get('proxy'), t.get('target'))})"),
              ("proxy build", f"{num(r.get('build_seconds'))} s" if r.get("build_seconds") is not None else "–")]
    charts = _scatters(r)
    if not charts and data.run.layout.fidelity_scatter.exists():  # a report written before it kept its points
        charts = (f'<img alt="fidelity scatter" src="{png_data_uri(data.run.layout.fidelity_scatter.read_bytes())}" '
                  'width="420">')
    chart = charts or missing("no scatter plot")
    if r.get("flop_bound_speedup"):
        measured = (t.get("proxy") or 0) / max(t.get("target") or 0, 1e-9)
        pairs.append(("FLOP-bound sketch speed-up", f"{num(r['flop_bound_speedup'], 2)}x "
                                                    f"(measured {num(measured, 2)}x, "
                                                    f"{measured / r['flop_bound_speedup']:.0%} of it)"))
    choice = (data.run.summary or {}).get("proxy_choice")
    if choice:
        used = "the proxy" if choice.get("uses_proxy") else "the target model itself"
        pairs.insert(0, ("proxy.method = auto", f"sketched with {used}"))
    bad = "does not pay" in verdict
    return (f"<h3>Proxy fidelity</h3><div class=\"verdict{' bad' if bad else ''}\" id=\"verdict\">{esc(verdict)}</div>"
            f'{kv_table(pairs, "fidelity.")}<div class="grid">{chart}</div>')


def landmark_block(data: ReportData) -> str:
    lines = []
    for t in data.run.targets:
        s = t.summary or {}
        if s.get("landmark_holdout"):
            lines.append((f"target {t.name}: the run's landmarks", esc(holdout_line(s["landmark_holdout"]))))
        fid = s.get("landmark_fidelity")
        if fid:
            lines.append((f"target {t.name}: propagation vs exact", esc(
                f"{fid['rows']} held-out rows, {fid['landmarks']} landmarks: "
                f"pearson {fid['propagated']['pearson']:.3f}, "
                f"spearman {fid['propagated']['spearman']:.3f}; random-embedding control "
                f"{fid['random_embedding_control']['pearson']:.3f}")))
    section_ = data.run.landmark_fidelity
    if section_:
        lines.append(("fidelity probe rows", esc(format_landmark_section(section_).strip())))
    if not lines:
        method = data.run.spec.get("scoring", {}).get("method")
        note = ("Not computed yet" if method == "influence-distillation"
                else "Not applicable: only Influence Distillation propagates scores from landmarks "
                     f"(this run: {method})")
        return f"<h3>Landmark hold-out</h3><p class=\"note\">{esc(note)}.</p>"
    return "<h3>Landmark hold-out (Influence Distillation)</h3>" + kv_table(lines, "landmarks.")


def nonfinite_block(data: ReportData) -> str:
    rows = []
    for split, status in data.split_status.items():
        rows.append([esc(split_label(split)), "rows whose loss is NaN/inf under the model (never selected)",
                     f'<span class="n" data-key="nonfinite.{esc(split)}">{num(int(status[NONFINITE]))}</span>'])
    if data.pool is not None:
        for name, score in data.pool.targets.items():
            rows.append([esc(f"scores/{name}"), "valid pool rows with a non-finite score (never selected)",
                         f'<span class="n">{num(score.non_finite)}</span>'])
    return "<h3>Non-finite values</h3>" + (table(["where", "what", "rows"], rows) if rows else missing("no store yet"))


def trust_section(data: ReportData) -> str:
    return section("trust", "Trust: fidelity, landmarks, non-finite values",
                   fidelity_block(data) + landmark_block(data) + nonfinite_block(data))
