"""The report's plain-text summary: what a user pastes into a ticket."""

from __future__ import annotations

from iprox_ray.execution.run_status import format_status
from iprox_ray.report.gather import ReportData
from iprox_ray.sketch.kinds import describe_settings
from iprox_ray.stages.report import format_summary
from iprox_ray.store.layout import MAIN_TARGET


def settings_line(spec: dict) -> str:
    model, proxy, sketch = spec.get("model", {}), spec.get("proxy", {}), spec.get("sketch", {})
    scoring, selection = spec.get("scoring", {}), spec.get("selection", {})
    rho = f" rho={proxy.get('rho')}" if proxy.get("method", "none") != "none" else ""
    size = f"k={selection['k']}" if selection.get("k") else f"fraction {selection.get('fraction')}"
    return (f"model {model.get('path')} ({model.get('init', '?')}); proxy {proxy.get('method', '?')}{rho}; "
            f"sketch {describe_settings(sketch)}; method {scoring.get('method', '?')}; "
            f"selection {selection.get('strategy', 'topk')}, {size}")


def overlap_lines(data: ReportData) -> list[str]:
    views = [v for v in data.targets.values() if v.selection is not None]
    out = []
    for i, a in enumerate(views):
        for b in views[i + 1:]:
            both = a.selection.bitmap.overlap(b.selection.bitmap)
            out.append(f"  overlap {a.name} / {b.name}: {both} rows "
                       f"({both / max(1, min(a.selection.rows, b.selection.rows)):.0%} "
                       "of the smaller selection)")
    return out


def summary_text(data: ReportData) -> str:
    run = data.run
    state = "finished" if run.finished else f"PARTIAL ({len(run.missing)} thing(s) missing)"
    lines = [f"iprox-ray run {run.name!r}: {state}", f"config fingerprint {run.config.get('fingerprint')}",
             settings_line(run.spec)]
    if run.summary:
        lines.append(format_summary(run.summary))
    else:
        lines.append(format_status(run.status))
    for t in run.targets:
        if t.name != MAIN_TARGET and t.summary:
            lines.append(f"  target {t.name}: selected {t.summary['selected']} of {t.summary['valid_pool_rows']} "
                         f"valid pool rows ({t.summary.get('method')}, {t.summary.get('strategy')}) "
                         f"-> {t.summary['selection']}")
    lines += overlap_lines(data)
    if run.fidelity and run.fidelity.get("verdict"):
        lines.append(f"  fidelity: {run.fidelity['verdict']}")
    for item in run.missing:
        lines.append(f"  missing: {item}")
    return "\n".join(lines)
