"""HTML building blocks and the page shell (inline CSS and one small inline script).

Everything that may come from data (row text, ids, domains, file names, error details, config
values) passes through `esc`; the page's Content-Security-Policy allows no network and only its
own script (by hash), so even a value that escaped escaping could not run or fetch anything.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
from html import escape
from typing import Iterable

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def esc(value) -> str:
    """Text for an element or an attribute; control characters HTML cannot carry become U+FFFD."""
    return escape(_CONTROL.sub("\ufffd", str(value)), quote=True)


def num(value, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:,.{digits}g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.{digits - 1}e}"
    return esc(value)


def pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def table(head: list[str], rows: Iterable[list[str]], cls: str = "", attrs: str = "") -> str:
    """Cells are HTML already (escape them with esc/num first)."""
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    heads = "".join(f"<th>{esc(h)}</th>" for h in head)
    return f'<table class="{cls}" {attrs}><thead><tr>{heads}</tr></thead><tbody>{body}</tbody></table>'


def kv_table(pairs: list[tuple[str, str]], key: str = "") -> str:
    """Two columns: a label and its (HTML) value; `data-key` on each value cell for tests and scripts."""
    rows = "".join(f'<tr><th scope="row">{esc(k)}</th><td data-key="{esc(key + k)}">{v}</td></tr>' for k, v in pairs)
    return f'<table class="kv"><tbody>{rows}</tbody></table>'


def section(anchor: str, title: str, body: str, note: str = "") -> str:
    extra = f'<p class="note">{note}</p>' if note else ""
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>{extra}{body}</section>'


def missing(text: str) -> str:
    return f'<p class="missing">{esc(text)}</p>'


def png_data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


# One rule per line; a long rule continues after a backslash-newline (not part of the string).
CSS = """
:root { --ink:#1d232b; --muted:#5b6672; --line:#dde2e8; --bg:#f6f7f9; --card:#fff; --accent:#0072B2; --warn:#b3261e; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color:var(--ink); \
background:var(--bg); }
header { background:#17324d; color:#fff; padding:18px 28px 14px; }
header h1 { margin:0 0 4px; font-size:21px; font-weight:600; }
header .sub { color:#c8d6e5; font-size:13px; }
.badge { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12px; font-weight:600; margin-left:8px; \
vertical-align:2px; }
.badge.ok { background:#2e7d32; } .badge.partial { background:#c77700; }
nav { position:sticky; top:0; z-index:2; background:#fff; border-bottom:1px solid var(--line); padding:6px 28px; }
nav a { color:var(--accent); text-decoration:none; margin-right:16px; font-size:13px; }
main { max-width:1220px; margin:0 auto; padding:10px 28px 40px; }
section { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:14px 20px 18px; \
margin:16px 0; }
h2 { font-size:17px; margin:0 0 10px; padding-bottom:6px; border-bottom:1px solid var(--line); }
h3 { font-size:14px; margin:16px 0 6px; color:#2b3a4a; }
table { border-collapse:collapse; margin:4px 0 8px; font-size:13px; }
th, td { border-bottom:1px solid var(--line); padding:4px 10px 4px 0; text-align:left; vertical-align:top; }
thead th { color:var(--muted); font-weight:600; border-bottom:2px solid var(--line); }
td.n, th.n { text-align:right; font-variant-numeric:tabular-nums; }
table.kv th { color:var(--muted); font-weight:500; padding-right:18px; white-space:nowrap; }
table.rows { width:100%; table-layout:fixed; }
table.rows td { font-size:12.5px; }
table.rows th:nth-child(1) { width:52px; } table.rows th:nth-child(2) { width:74px; }
table.rows th:nth-child(3) { width:170px; } table.rows th:nth-child(4) { width:130px; }
table.rows th:nth-child(5) { width:150px; }
table.rows td:nth-child(3), table.rows td:nth-child(4), table.rows td:nth-child(5) { word-break:break-word; \
overflow-wrap:anywhere; }
.text { white-space:pre-wrap; word-break:break-word; font:12px/1.4 ui-monospace, "SFMono-Regular", Menlo, monospace; \
color:#2b2f33; max-height:9.5em; overflow:auto; }
.text .role { font-weight:700; color:#17324d; text-transform:uppercase; font-size:10.5px; letter-spacing:.04em; }
.unavailable { color:var(--muted); font-style:italic; }
code, .mono { font-family:ui-monospace, "SFMono-Regular", Menlo, monospace; font-size:12.5px; }
pre { background:#f3f5f7; border:1px solid var(--line); border-radius:6px; padding:10px 12px; overflow:auto; \
font-size:12.5px; line-height:1.4; }
#summary-text { white-space:pre-wrap; max-height:420px; }
.note { color:var(--muted); margin:0 0 8px; font-size:13px; }
.missing { color:var(--warn); margin:4px 0; }
.banner { border:1px solid #e0a100; background:#fff8e1; border-radius:8px; padding:10px 16px; margin:16px 0; }
.banner ul { margin:4px 0 0 18px; padding:0; }
.verdict { font-weight:600; padding:8px 12px; border-radius:6px; background:#eef4fa; \
border-left:4px solid var(--accent); margin:8px 0; }
.verdict.bad { background:#fdecea; border-left-color:var(--warn); }
.cards { display:flex; flex-wrap:wrap; gap:10px; margin:4px 0 10px; }
.card { border:1px solid var(--line); border-radius:6px; padding:6px 12px; min-width:120px; background:#fafbfc; }
.card .v { font-size:18px; font-weight:600; font-variant-numeric:tabular-nums; }
.card .k { color:var(--muted); font-size:12px; }
.grid { display:flex; flex-wrap:wrap; gap:18px; align-items:flex-start; }
.multiples { display:flex; flex-wrap:wrap; gap:6px 14px; }
.multiples figure { margin:0; } .multiples figcaption { font-size:12px; color:var(--muted); }
svg.chart { max-width:100%; height:auto; display:block; }
button.copy { float:right; margin:-4px 0 4px 8px; font-size:12px; padding:3px 10px; border:1px solid var(--line); \
border-radius:5px; background:#fff; cursor:pointer; }
details summary { cursor:pointer; color:var(--accent); margin:6px 0; }
.side { display:grid; grid-template-columns:repeat(auto-fit, minmax(330px, 1fr)); gap:14px; }
"""

# The page's only script: the summary's copy button. Failures are swallowed (no console noise):
# file:// pages may not be granted the clipboard.
SCRIPT = """
document.getElementById('copy-summary').addEventListener('click', function () {
  var text = document.getElementById('summary-text').textContent;
  var button = this;
  function done(ok) { button.textContent = ok ? 'copied' : 'select and copy'; }
  try {
    navigator.clipboard.writeText(text).then(function () { done(true); }, function () { done(false); });
  } catch (e) { done(false); }
});
"""


def page(title: str, header: str, nav: list[tuple[str, str]], body: str) -> str:
    digest = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
    csp = (f"default-src 'none'; style-src 'unsafe-inline'; img-src data:; script-src 'sha256-{digest}'; "
           "base-uri 'none'; form-action 'none'")
    links = "".join(f'<a href="#{esc(a)}">{esc(t)}</a>' for a, t in nav)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>{header}<nav>{links}</nav>"
            f"<main>{body}</main><script>{SCRIPT}</script></body></html>\n")
