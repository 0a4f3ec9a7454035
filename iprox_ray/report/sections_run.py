"""The report's run-wide sections: header, plain-text summary, settings, stage timeline, rows."""

from __future__ import annotations

import json
import time

from iprox_ray.report.gather import ReportData
from iprox_ray.report.html import esc, kv_table, missing, num, section, table
from iprox_ray.report.rows import short_path
from iprox_ray.report.run_files import split_label
from iprox_ray.report.svg import timeline
from iprox_ray.report.text import settings_line, summary_text
from iprox_ray.store.layout import POOL, PROXY_STAGE, WARMUP_STAGE
from iprox_ray.store.sketch_store import DUPLICATE, NONFINITE, NOT_SKETCHED, OK

# The pipeline's order (summary.json sorts its keys); a stage not listed here goes last.
STAGE_ORDER = ["manifest", "preflight", "warmup", "proxy", "fidelity", "embed", "landmarks", "sketch", "dedup",
               "score", "select", "outputs"]


def when(seconds: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds)) if seconds else "–"


def header(data: ReportData) -> str:
    run = data.run
    badge = ('<span class="badge ok">finished</span>' if run.finished
             else '<span class="badge partial">partial</span>')
    return (f"<header><h1>iprox-ray report: {esc(run.name)}{badge}</h1>"
            f'<div class="sub">{esc(run.layout.root)} · config {esc(run.config.get("fingerprint"))} · '
            f"written {esc(when(time.time()))}</div></header>")


def banner(data: ReportData) -> str:
    if data.run.finished:
        return ""
    items = "".join(f"<li>{esc(m)}</li>" for m in data.run.missing)
    return ('<div class="banner" id="missing">'
            "<strong>This run is not finished: the report shows what exists.</strong> "
            f"Missing:<ul>{items}</ul></div>")


def summary_section(data: ReportData) -> str:
    body = ('<button class="copy" id="copy-summary" type="button">copy</button>'
            f'<pre id="summary-text">{esc(summary_text(data))}</pre>')
    return section("summary", "Summary", body, "Plain text: paste it into a ticket.")


def _file_digests(files) -> str:
    """A fingerprinted folder's files as `name sha256-prefix`, one per line."""
    if not isinstance(files, dict) or not all(isinstance(v, dict) for v in files.values()):
        return f"<code>{esc(json.dumps(files, default=str))}</code>"
    return "<br>".join(f"{esc(name)} <code>{esc(str(info.get('sha256', '?'))[:16])}</code> ({num(info.get('size'))} B"
                       + (", sampled" if info.get("sampled") else "") + ")" for name, info in sorted(files.items()))


def _model_rows(run) -> list[tuple[str, str]]:
    spec, stages = run.spec, run.stages
    model = spec.get("model", {})
    rows = [("run name", esc(run.name)), ("run directory", f"<code>{esc(run.layout.root)}</code>"),
            ("config fingerprint", f"<code>{esc(run.config.get('fingerprint'))}</code>"),
            ("model", f"<code>{esc(model.get('path'))}</code> "
                      f"({esc(model.get('init'))}, {esc(model.get('dtype', ''))})")]
    for key, value in sorted((run.config.get("inputs") or {}).items()):
        rows.append((f"{key} files", _file_digests(value)))
    warm = stages.get(WARMUP_STAGE)
    if warm:
        rows.append(("warm-up", f"{num(warm.get('rows'))} rows, {num(warm.get('steps'))} steps, loss "
                                 f"{num(warm.get('first_loss'))} → {num(warm.get('last_loss'))}"))
    proxy = stages.get(PROXY_STAGE)
    method = spec.get("proxy", {}).get("method")
    text = esc(method)
    if proxy and proxy.get("proxy_parameters"):
        text += (f" ρ={esc(proxy.get('rho'))}: {num(proxy['proxy_parameters'])} "
                 f"of {num(proxy.get('target_parameters'))} "
                 f"parameters, built in {num(proxy.get('stage1_seconds'))}s")
    rows.append(("proxy", text))
    pool = run.pool()
    attrs = dict(pool.group.attrs) if pool is not None else {}
    projection = attrs.get("projection") or {}
    rows.append(("sketch", esc(settings_line(spec).split("; ")[2]) + (
        f", {num(attrs.get('sketch_dim'))} columns, projection seed {esc(projection.get('seed'))}, "
        f"optimizer features {esc((attrs.get('features') or {}).get('optimizer'))}" if attrs else "")))
    scoring, selection = spec.get("scoring", {}), spec.get("selection", {})
    rows.append(("method", f"{esc(scoring.get('method'))} (aggregate {esc(scoring.get('aggregate'))})"))
    size = f"k = {num(selection['k'])}" if selection.get("k") else f"fraction {num(selection.get('fraction'))}"
    rows.append(("selection", f"{esc(selection.get('strategy'))}, {size}"))
    cluster = spec.get("cluster", {})
    rows.append(("workers", f"{esc(cluster.get('executor'))}, {esc(cluster.get('actors') or 'auto')} actor(s), "
                            f"{esc(cluster.get('threads_per_actor'))} thread(s) each"))
    return rows


def run_section(data: ReportData) -> str:
    run = data.run
    config = json.dumps(run.spec, indent=2, sort_keys=True, default=str)
    body = (kv_table(_model_rows(run), "run.") +
            f"<details><summary>resolved job config (config.json)</summary><pre>{esc(config)}</pre></details>")
    return section("run", "Run settings", body)


def stage_section(data: ReportData) -> str:
    run = data.run
    body = []
    seconds = (run.summary or {}).get("stage_seconds") or {}
    if seconds:
        order = sorted(seconds, key=lambda s: (STAGE_ORDER.index(s) if s in STAGE_ORDER else len(STAGE_ORDER), s))
        bars, start = [], 0.0
        for name in order:
            bars.append((name, start, float(seconds[name])))
            start += float(seconds[name])
        body.append(timeline(bars))
        body.append(f'<p class="note">{num(start)} s in all, in the run\'s last invocation (a resumed run counts only '
                    "what it did itself).</p>")
    else:
        body.append(missing("no stage times yet: the run has not written its summary"))
    markers = sorted(run.stages.items(), key=lambda kv: kv[1].get("finished_at", 0))
    body.append("<details><summary>stage markers (stages/*.json)</summary>" + table(
        ["stage", "finished at"], [[esc(name), esc(when(info.get("finished_at")))] for name, info in markers])
        + "</details>")
    splits = run.status.get("splits", {})
    if splits:
        body.append("<h3>Sharded passes</h3>" + table(
            ["split", "shards done", "rows done", "failed", "workers"],
            [[esc(split_label(s)), f"{num(v['done'])} / {num(v['shards'])}", num(v["rows_done"]), num(len(v["failed"])),
              esc(", ".join(v["workers"]) or "local")] for s, v in splits.items()]))
    return section("stages", "Stage timeline", "".join(body))


def rows_section(data: ReportData) -> str:
    q = data.quarantine
    splits = list(dict.fromkeys([POOL, *(t.split for t in data.run.targets)]))
    head = ["split", "rows read", "usable", "quarantined", "duplicate ids", "non-finite", "not sketched"]
    lines = []
    for split in splits:
        status = data.split_status.get(split)
        count = (lambda code: num(int(status[code]))) if status is not None else (lambda code: "–")  # noqa: E731
        usable = num(int(status[OK] + status[NOT_SKETCHED])) if status is not None else "–"
        lines.append([esc(split_label(split)), num(data.rows_read.get(split)), usable,
                      f'<span data-key="quarantined.{esc(split)}">{num(q.total(split))}</span>', count(DUPLICATE),
                      count(NONFINITE), count(NOT_SKETCHED)])
    body = [table(head, lines, attrs='id="rows-table"'),
            '<p class="note">Rows read: the frozen manifests. Usable, duplicate ids, non-finite, not sketched (valid '
            "rows the method needs no sketch of): the store's row status. Quarantined: the quarantine records, every "
            "reason (duplicate ids included).</p>"]
    if q.counts:
        reasons = []
        for (split, reason), n in sorted(q.counts.items(), key=lambda kv: (-kv[1], kv[0])):
            examples = "<br>".join(
                f"<code>{esc(r['sample_id'] or '–')}</code> {esc(short_path(r['file']))}:{num(r['row'])} "
                f"<span class=\"unavailable\">{esc(r['detail'] or '')}</span>"
                for r in q.examples.get((split, reason), []))
            reasons.append([esc(split_label(split)), f"<code>{esc(reason)}</code>", f'<span class="n">{num(n)}</span>',
                            examples])
        body.append("<h3>Quarantine reasons</h3>" + table(["split", "reason", "rows", "examples"], reasons,
                                                          attrs='id="quarantine-table"'))
    else:
        body.append('<p class="note">No row was quarantined.</p>')
    return section("rows", "Rows read, quarantined, duplicates", "".join(body))
