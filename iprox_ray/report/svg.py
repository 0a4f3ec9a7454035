"""Inline SVG charts for the report: histograms, share bars, a stage timeline, a scatter.

Plain strings, no plotting library: the report must open from disk with nothing else. Every label
that may come from the data (domain names, stage names) goes through `esc`.
"""

from __future__ import annotations

import math

import numpy as np

from iprox_ray.report.html import esc

# Okabe-Ito, colour-blind safe; the last entry is for "(other)".
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#999999"]
SELECTED = "#D55E00"
FONT = 'font-family="system-ui, sans-serif" font-size="11"'


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def fmt_tick(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e4 or abs(v) < 1e-3:
        return f"{v:.1e}"
    return f"{v:.4g}"


class Frame:
    """A plot area inside an SVG of (width, height) with margins, mapping data to pixels."""

    def __init__(self, width: int, height: int, x: tuple[float, float], y: tuple[float, float],
                 left: int = 52, right: int = 12, top: int = 12, bottom: int = 34):
        self.w, self.h = width, height
        self.x0, self.x1 = left, width - right
        self.y0, self.y1 = height - bottom, top  # y0 is the bottom edge
        self.xlo, self.xhi = x if x[1] > x[0] else (x[0], x[0] + 1.0)
        self.ylo, self.yhi = y if y[1] > y[0] else (y[0], y[0] + 1.0)

    def px(self, v: float) -> float:
        return self.x0 + (v - self.xlo) / (self.xhi - self.xlo) * (self.x1 - self.x0)

    def py(self, v: float) -> float:
        return self.y0 - (v - self.ylo) / (self.yhi - self.ylo) * (self.y0 - self.y1)

    def axes(self, xlabel: str, ylabel: str, xticks: bool = True) -> list[str]:
        out = [f'<line x1="{self.x0}" y1="{self.y0}" x2="{self.x1}" y2="{self.y0}" stroke="#555"/>',
               f'<line x1="{self.x0}" y1="{self.y0}" x2="{self.x0}" y2="{self.y1}" stroke="#555"/>']
        for t in nice_ticks(self.ylo, self.yhi, 4):
            y = self.py(t)
            out.append(f'<line x1="{self.x0}" y1="{y:.1f}" x2="{self.x1}" y2="{y:.1f}" stroke="#e4e4e4"/>'
                       f'<text x="{self.x0 - 4}" y="{y + 3.5:.1f}" text-anchor="end" fill="#444">{fmt_tick(t)}</text>')
        if xticks:
            for t in nice_ticks(self.xlo, self.xhi, 6):
                x = self.px(t)
                out.append(f'<line x1="{x:.1f}" y1="{self.y0}" x2="{x:.1f}" y2="{self.y0 + 4}" stroke="#555"/>'
                           f'<text x="{x:.1f}" y="{self.y0 + 15}" text-anchor="middle" fill="#444">'
                           f"{fmt_tick(t)}</text>")
        out.append(f'<text x="{(self.x0 + self.x1) / 2:.1f}" y="{self.h - 4}" text-anchor="middle" fill="#222">'
                   f'{esc(xlabel)}</text>')
        out.append(f'<text transform="translate(12 {(self.y0 + self.y1) / 2:.1f}) rotate(-90)" text-anchor="middle" '
                   f'fill="#222">{esc(ylabel)}</text>')
        return out


def _svg(width: int, height: int, body: list[str], label: str) -> str:
    return (f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
            f'aria-label="{esc(label)}" xmlns="http://www.w3.org/2000/svg" {FONT}>' + "".join(body) + "</svg>")


def legend(items: list[tuple[str, str]], x: float, y: float, dash: set[str] = frozenset()) -> list[str]:
    """Swatches in one row from (x, y); returns the SVG pieces."""
    out = []
    for label, fill in items:
        if label in dash:
            out.append(f'<line x1="{x:.1f}" y1="{y - 4}" x2="{x + 12:.1f}" y2="{y - 4}" stroke="{fill}" '
                       'stroke-width="2" stroke-dasharray="4 2"/>')
        else:
            out.append(f'<rect x="{x:.1f}" y="{y - 9}" width="12" height="10" fill="{fill}"/>')
        out.append(f'<text x="{x + 16:.1f}" y="{y}" fill="#222">{esc(label)}</text>')
        x += 26 + 6.2 * len(label)
    return out


def histogram(edges: np.ndarray, layers: list[tuple[str, np.ndarray, str]], *,
              outline: tuple[str, np.ndarray] | None = None, cutoff: float | None = None, width: int = 760,
              height: int = 260, xlabel: str = "score", ylabel: str = "pool rows", show_legend: bool = True) -> str:
    """Stacked bars (one layer per domain), an optional outline (the selected rows) and a dashed
    cut-off line."""
    stack = np.zeros(len(edges) - 1)
    top = np.sum([c for _, c, _ in layers], axis=0) if layers else stack
    ymax = float(max(top.max(initial=0), outline[1].max(initial=0) if outline else 0)) or 1.0
    f = Frame(width, height, (float(edges[0]), float(edges[-1])), (0.0, ymax * 1.08),
              top=26 if show_legend else 12)
    body = f.axes(xlabel, ylabel)
    for label, counts, fill in layers:
        for i, n in enumerate(counts.tolist()):
            if n:
                xa, xb = f.px(edges[i]), f.px(edges[i + 1])
                ya, yb = f.py(stack[i] + n), f.py(stack[i])
                body.append(f'<rect x="{xa:.1f}" y="{ya:.1f}" width="{max(xb - xa - 0.4, 0.6):.1f}" '
                            f'height="{max(yb - ya, 0.5):.1f}" fill="{fill}"><title>{esc(label)}: {n:,} rows in '
                            f'[{fmt_tick(edges[i])}, {fmt_tick(edges[i + 1])})</title></rect>')
        stack = stack + counts
    if outline is not None:
        points = []
        for i, n in enumerate(outline[1].tolist()):
            points += [f"{f.px(edges[i]):.1f},{f.py(n):.1f}", f"{f.px(edges[i + 1]):.1f},{f.py(n):.1f}"]
        body.append(f'<polyline points="{" ".join(points)}" fill="none" stroke="#111" stroke-width="1.3"/>')
    if cutoff is not None and math.isfinite(cutoff):
        x = f.px(cutoff)
        body.append(f'<line x1="{x:.1f}" y1="{f.y0}" x2="{x:.1f}" y2="{f.y1 - 4}" stroke="#C00" stroke-width="1.5" '
                    f'stroke-dasharray="5 3"><title>selection cut-off {cutoff:.6g}</title></line>')
    if show_legend:
        items = [(label, fill) for label, _, fill in layers]
        if outline is not None:
            items.append((outline[0], "#111"))
        if cutoff is not None:
            items.append(("cut-off", "#C00"))
        body += legend(items, f.x0, 14, dash={"cut-off", outline[0] if outline else ""})
    return _svg(width, height, body, f"histogram of {xlabel}")


def share_bars(rows: list[tuple[str, float, float]], width: int = 560,
               labels: tuple[str, str] = ("pool", "selection")) -> str:
    """Two horizontal bars per label (its share of the pool and of the selection)."""
    bar, gap, left = 11, 10, 150
    height = 30 + len(rows) * (2 * bar + gap)
    hi = max([max(a, b) for _, a, b in rows] + [1e-9])
    scale = (width - left - 60) / hi
    body = legend([(labels[0], "#9aa7b4"), (labels[1], SELECTED)], left, 14)
    y = 26
    for label, pool, chosen in rows:
        short = label if len(label) <= 22 else label[:21] + "…"
        body.append(f'<text x="{left - 6}" y="{y + bar + 3}" text-anchor="end" fill="#222">{esc(short)}'
                    f'<title>{esc(label)}</title></text>')
        for value, fill, dy in ((pool, "#9aa7b4", 0), (chosen, SELECTED, bar)):
            body.append(f'<rect x="{left}" y="{y + dy}" width="{max(value * scale, 0.5):.1f}" height="{bar - 1}" '
                        f'fill="{fill}"/><text x="{left + value * scale + 4:.1f}" y="{y + dy + bar - 2}" '
                        f'fill="#333">{value:.1%}</text>')
        y += 2 * bar + gap
    return _svg(width, height, body, "domain share, pool vs selection")


def timeline(stages: list[tuple[str, float, float]], width: int = 760) -> str:
    """A Gantt row per stage: (name, start second, duration)."""
    row, left = 20, 110
    end = max([s + d for _, s, d in stages] + [1e-9])
    height = 40 + row * len(stages)
    f = Frame(width, height, (0.0, end), (0.0, 1.0), left=left, right=70, top=8, bottom=30)
    body = [f'<line x1="{f.x0}" y1="{f.y0}" x2="{f.x1}" y2="{f.y0}" stroke="#555"/>']
    for t in nice_ticks(0.0, end, 8):
        x = f.px(t)
        body.append(f'<line x1="{x:.1f}" y1="{f.y1}" x2="{x:.1f}" y2="{f.y0 + 4}" stroke="#e4e4e4"/>'
                    f'<text x="{x:.1f}" y="{f.y0 + 15}" text-anchor="middle" fill="#444">{fmt_tick(t)}</text>')
    body.append(f'<text x="{(f.x0 + f.x1) / 2:.1f}" y="{height - 4}" text-anchor="middle">'
                "seconds since the start</text>")
    for i, (name, start, seconds) in enumerate(stages):
        y = f.y1 + i * row
        xa, xb = f.px(start), f.px(start + seconds)
        body.append(f'<text x="{left - 6}" y="{y + 13}" text-anchor="end" fill="#222">{esc(name)}</text>'
                    f'<rect x="{xa:.1f}" y="{y + 3}" width="{max(xb - xa, 1.5):.1f}" height="{row - 6}" '
                    f'fill="{colour(i)}"><title>{esc(name)}: {seconds:.1f}s</title></rect>'
                    f'<text x="{xb + 4:.1f}" y="{y + 13}" fill="#333">{seconds:.1f}s</text>')
    return _svg(width, height, body, "stage timeline")


def scatter(series: list[tuple[str, np.ndarray, np.ndarray, str]], xlabel: str, ylabel: str, size: int = 340) -> str:
    """Points of one or more (label, x, y, colour) series on shared axes, with y = x dotted when
    the ranges meet (agreement lies on it only when both sides share a scale)."""
    kept = []
    for label, x, y, fill in series:
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        ok = np.isfinite(x) & np.isfinite(y)
        if ok.any():
            kept.append((label, x[ok], y[ok], fill))
    if not kept:
        return ""
    xs, ys = np.concatenate([k[1] for k in kept]), np.concatenate([k[2] for k in kept])
    pad = lambda lo, hi: (lo - 0.05 * (hi - lo or 1), hi + 0.05 * (hi - lo or 1))  # noqa: E731
    f = Frame(size + 40, size, pad(float(xs.min()), float(xs.max())), pad(float(ys.min()), float(ys.max())), left=60,
              top=26 if len(kept) > 1 else 12)
    body = f.axes(xlabel, ylabel)
    lo, hi = max(f.xlo, f.ylo), min(f.xhi, f.yhi)
    if hi > lo:
        body.append(f'<line x1="{f.px(lo):.1f}" y1="{f.py(lo):.1f}" x2="{f.px(hi):.1f}" y2="{f.py(hi):.1f}" '
                    'stroke="#999" stroke-dasharray="2 3"/>')
    for label, x, y, fill in kept:
        body += [f'<circle cx="{f.px(a):.1f}" cy="{f.py(b):.1f}" r="2.4" fill="{fill}" fill-opacity="0.6"/>'
                 for a, b in zip(x.tolist(), y.tolist())]
    if len(kept) > 1:
        body += legend([(label, fill) for label, _, _, fill in kept], f.x0, 14)
    return _svg(size + 40, size, body, f"{ylabel} against {xlabel}")
