"""The report's per-target sections: score histograms per domain, domain shares, example rows,
and several targets side by side with their overlap."""

from __future__ import annotations

import numpy as np

from iprox_ray.report.gather import ExampleRow, ReportData, TargetView
from iprox_ray.report.html import esc, missing, num, pct, section, table
from iprox_ray.report.rows import short_path
from iprox_ray.report.run_files import TargetFiles
from iprox_ray.report.stats import ScoreStats
from iprox_ray.report.svg import PALETTE, colour, histogram, share_bars
from iprox_ray.store.layout import MAIN_TARGET

SHOWN_DOMAINS = 7  # histogram layers; the rest are drawn as one "(other domains)" layer


def anchor(name: str) -> str:
    return f"target-{name}"


def _rows_table(rows: list[ExampleRow], cls: str) -> str:
    body = []
    for r in rows:
        text = ('<div class="text">' + "\n".join(f'<span class="role">{esc(role)}</span> {esc(content)}'
                                                 for role, content in r.text) + "</div>" if r.text is not None
                else f'<span class="unavailable">text unavailable: {esc(r.note)}</span>')
        where = f'<span title="{esc(r.source_file)}">{esc(short_path(r.source_file))}</span><br>row {num(r.source_row)}'
        body.append([num(r.rank) if r.rank is not None else "–", f'<span class="mono">{r.score:.5g}</span>',
                     f'<code data-sample-id="{esc(r.sample_id)}">{esc(r.sample_id)}</code>', esc(r.domain or "(none)"),
                     where, text])
    return table(["rank", "score", "id", "domain", "source", "conversation (first characters)"], body, f"rows {cls}")


def _layers(score: ScoreStats, domains: list[str]) -> list[tuple[str, np.ndarray, str]]:
    counts = score.by_domain
    order = np.argsort(-counts.sum(axis=1), kind="stable")
    shown = [int(i) for i in order[:SHOWN_DOMAINS] if counts[i].sum()]
    layers = [(domains[i], counts[i], colour(n)) for n, i in enumerate(shown)]
    rest = [int(i) for i in order[SHOWN_DOMAINS:] if counts[i].sum()]
    if rest:
        layers.append(("(other domains)", counts[rest].sum(axis=0), PALETTE[-1]))
    return layers


def _histograms(data: ReportData, t: TargetFiles, view: TargetView) -> str:
    score = data.pool.targets.get(t.name) if data.pool is not None else None
    if score is None or score.edges is None:
        return missing("no scores to plot yet" if t.scores is None else "every score is non-finite")
    cutoff = (t.select_info or {}).get("cutoff")
    layers = _layers(score, data.pool.domains)
    outline = (f"selected ({num(view.selection.rows)})", score.selected) if view.selection is not None else None
    xlabel = f"score ({t.score_attrs.get('method', '')}, {t.score_attrs.get('aggregate', '')})"
    out = [histogram(score.edges, layers, outline=outline, cutoff=cutoff, xlabel=xlabel, width=960, height=280)]
    small = []
    for label, counts, fill in layers:
        index = data.pool.domains.index(label) if label in data.pool.domains else None
        chosen = view.selection.domains.get(label, 0) if view.selection is not None and index is not None else None
        caption = (f"{esc(label)}: {num(int(counts.sum()))} rows"
                   + (f", {num(chosen)} selected" if chosen is not None else ""))
        chart = histogram(score.edges, [(label, counts, fill)], cutoff=cutoff, width=300, height=150,
                          xlabel="score", ylabel="rows", show_legend=False)
        small.append(f"<figure>{chart}<figcaption>{caption}</figcaption></figure>")
    out.append('<h3>Per domain</h3><div class="multiples">' + "".join(small) + "</div>")
    return "".join(out)


def _shares(data: ReportData, view: TargetView) -> str:
    if data.pool is None or view.selection is None:
        return ""
    total = max(1, int(data.pool.domain_rows.sum()))
    pool = {d: int(n) / total for d, n in zip(data.pool.domains, data.pool.domain_rows.tolist())}
    chosen = {d: n / max(1, view.selection.rows) for d, n in view.selection.domains.items()}
    labels = sorted(set(pool) | set(chosen), key=lambda d: (-chosen.get(d, 0), -pool.get(d, 0), d))
    rows = [(d, pool.get(d, 0.0), chosen.get(d, 0.0)) for d in labels]
    listing = table(["domain", "pool", "selection"],
                    [[esc(d), f'<span class="n">{pct(a)}</span>', f'<span class="n">{pct(b)}</span>']
                     for d, a, b in rows],
                    "shares", attrs=f'data-target="{esc(view.name)}"')
    return f'<h3>Domain share, pool vs selection</h3><div class="grid">{share_bars(rows)}{listing}</div>'


def target_section(data: ReportData, t: TargetFiles) -> str:
    view = data.targets[t.name]
    info = t.select_info or {}
    score = data.pool.targets.get(t.name) if data.pool is not None else None
    cards = [("selected", num(view.selection.rows) if view.selection else "–", "selected"),
             ("valid pool rows", num(info.get("valid_rows")), "valid"),
             ("strategy", esc(info.get("strategy", "–")), "strategy"),
             ("cut-off score", num(info.get("cutoff")), "cutoff"),
             ("non-finite scores", num(score.non_finite) if score else "–", "nonfinite"),
             ("target examples", num(t.score_attrs.get("target_examples")), "examples")]
    body = ['<div class="cards">' + "".join(
        f'<div class="card"><div class="v" data-key="{esc(t.name)}.{key}">{v}</div><div class="k">{esc(k)}</div></div>'
        for k, v, key in cards) + "</div>"]
    if t.selection is not None:
        body.append(f'<p class="note">Selection: <code>{esc(t.selection)}</code></p>')
    seconds = (t.summary or {}).get("stage_seconds") if t.name != MAIN_TARGET else None
    if seconds:  # a target added by `iprox-ray score`: its own pass
        body.append('<p class="note">Added by <code>iprox-ray score</code>: ' + esc(", ".join(
            f"{k} {v:.1f}s" for k, v in seconds.items())) + "</p>")
    body.append(_histograms(data, t, view))
    body.append(_shares(data, view))
    if view.selection is None:
        body.append(missing("no selection yet: no example rows to show"))
    else:
        n = len(view.top)
        body.append(f"<h3>Top {n} selected rows</h3>" + _rows_table(view.top, "top"))
        if view.bottom:
            body.append(f"<h3>Bottom {len(view.bottom)} selected rows (just above the cut)</h3>"
                        + _rows_table(view.bottom, "bottom"))
        if view.below:
            body.append(f"<h3>Best {len(view.below)} rows just below the cut (not selected)</h3>"
                        + _rows_table(view.below, "below"))
        else:
            body.append('<p class="note">No valid row was left out of the selection.</p>')
    title = "Target: main (the job's own target set)" if t.name == MAIN_TARGET else f"Target: {t.name}"
    return section(anchor(t.name), title, "".join(body))


def compare_section(data: ReportData) -> str:
    views = [data.targets[t.name] for t in data.run.targets]
    head = ["target", "method", "strategy", "selected", "cut-off", "top domain of the selection"]
    rows = []
    for t, v in zip(data.run.targets, views):
        top = v.selection.domains.most_common(1) if v.selection is not None else []
        share = f"{esc(top[0][0])} ({pct(top[0][1] / max(1, v.selection.rows))})" if top else "–"
        rows.append([f'<a href="#{esc(anchor(t.name))}">{esc(t.name)}</a>', esc(t.score_attrs.get("method", "–")),
                     esc((t.select_info or {}).get("strategy", "–")), num(v.selection.rows) if v.selection else "–",
                     num((t.select_info or {}).get("cutoff")), share])
    body = [table(head, rows)]
    chosen = [v for v in views if v.selection is not None]
    if chosen and data.pool is not None:
        total = max(1, int(data.pool.domain_rows.sum()))
        shares = [[esc(d), f'<span class="n">{pct(int(n) / total)}</span>',
                   *(f'<span class="n">{pct(v.selection.domains.get(d, 0) / max(1, v.selection.rows))}</span>'
                     for v in chosen)]
                  for d, n in zip(data.pool.domains, data.pool.domain_rows.tolist())]
        body.append("<h3>Domain share of each selection</h3>"
                    + table(["domain", "pool", *[v.name for v in chosen]], shares))
    if len(chosen) > 1:
        matrix = []
        for a in chosen:
            cells = [f"<strong>{esc(a.name)}</strong>"]
            for b in chosen:
                both = a.selection.bitmap.overlap(b.selection.bitmap)
                share = both / max(1, min(a.selection.rows, b.selection.rows))
                cells.append(f'<span class="n" data-overlap="{esc(a.name)}|{esc(b.name)}">'
                             f"{num(both)} ({pct(share)})</span>")
            matrix.append(cells)
        body.append("<h3>Overlap: selected rows in both (share of the smaller selection)</h3>"
                    + table(["", *[v.name for v in chosen]], matrix, attrs='id="overlap-table"'))
    else:
        body.append('<p class="note">One target so far: '
                    "<code>iprox-ray score RUN_DIR --target FILE</code> adds another "
                    "against the same pool, and this section compares them.</p>")
    return section("compare", "Targets side by side", "".join(body))
